"""The REST facade's routes (``/api/v2.0/``), derived from the mounted methods as TrueNAS's
v2.0 REST derives them from its services; the router and the OpenAPI document share them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote

from middlewared.registry import Access, MethodSpec, Param, Schema

log = logging.getLogger(__name__)

PREFIX = "/api/v2.0"
ID_SCHEMA: Schema = {"type": ["integer", "string"]}

# Methods that act on the caller's connection (log it in or out, subscribe it, set its
# options): a REST request has none, so they are not routed.
CONNECTION_METHODS = frozenset(
    {
        "auth.login",
        "auth.login_ex",
        "auth.login_ex_continue",
        "auth.login_with_api_key",
        "auth.login_with_token",
        "auth.logout",
        "core.set_options",
        "core.subscribe",
        "core.unsubscribe",
    }
)


CRUD = frozenset({"query", "get_instance", "create", "update", "delete", "config"})


class Kind(Enum):
    """How a request becomes the method's params."""

    # The body (and the path's id) are the params.
    PARAMS = "params"
    # The query string is ``[filters, options]``.
    FILTERS = "filters"
    # ``<ns>.query([[field, "=", id]], {"get": true})``: get_instance of a namespace
    # that has a query and no get_instance method.
    LOOKUP = "lookup"


@dataclass(frozen=True, slots=True)
class Operation:
    verb: str
    # Relative to PREFIX, ``{id}`` standing for the path's id: ``/user/id/{id}``.
    path: str
    spec: MethodSpec
    kind: Kind
    # The param the path's id fills (PARAMS), or the field it is looked up by (LOOKUP).
    id_name: str | None = None
    id_schema: Schema | None = None

    @property
    def method(self) -> str:
        return self.spec.name

    @property
    def body_params(self) -> tuple[Param, ...]:
        """The params the request body carries: all but the one the path's id fills."""
        if self.kind is not Kind.PARAMS:
            return ()
        return self.spec.params[1:] if self.id_name is not None else self.spec.params

    @property
    def operation_id(self) -> str:
        words = self.path.replace("{", "").replace("}", "").strip("/").replace("/", "_")
        return f"{self.verb.lower()}_{words}"


def filterable(spec: MethodSpec) -> bool:
    """Takes ``(filters, options)`` as every ``*.query`` does."""
    return [p.name for p in spec.params] == ["filters", "options"]


def routed(spec: MethodSpec) -> bool:
    """Whether the REST facade serves the method: not private, not bound to a connection, not
    a job with pipes (``/_upload`` and ``core.download`` serve those)."""
    if spec.access is Access.PRIVATE or spec.name in CONNECTION_METHODS:
        return False
    return spec.job is None or not spec.job.pipes


def _id_param(methods: dict[str, MethodSpec]) -> Param | None:
    """The param that names one item of the namespace (the first of update or delete)."""
    for short, least in (("get_instance", 1), ("update", 2), ("delete", 1)):
        spec = methods.get(short)
        if spec is not None and len(spec.params) >= least:
            return spec.params[0]
    return None


def _crud(base: str, methods: dict[str, MethodSpec]) -> Iterable[Operation]:
    """TrueNAS's CRUD (and config) routes of one namespace."""
    item = f"{base}/id/{{id}}"
    query, instance = methods.get("query"), methods.get("get_instance")
    ident = _id_param(methods)
    if query is not None and filterable(query):
        yield Operation("GET", base, query, Kind.FILTERS)
    elif (config := methods.get("config")) is not None and not config.params:
        yield Operation("GET", base, config, Kind.PARAMS)
    if instance is not None and instance.params:
        p = instance.params[0]
        yield Operation("GET", item, instance, Kind.PARAMS, p.name, p.schema)
    elif query is not None and filterable(query):
        name, schema = (ident.name, ident.schema) if ident is not None else ("id", ID_SCHEMA)
        yield Operation("GET", item, query, Kind.LOOKUP, name, schema)
    if (create := methods.get("create")) is not None:
        yield Operation("POST", base, create, Kind.PARAMS)
    update = methods.get("update")
    if update is not None and len(update.params) >= 2 and ident is not None:
        p = update.params[0]
        yield Operation("PUT", item, update, Kind.PARAMS, p.name, p.schema)
    elif update is not None and len(update.params) == 1 and "config" in methods:
        yield Operation("PUT", base, update, Kind.PARAMS)
    delete = methods.get("delete")
    if delete is not None and delete.params:
        p = delete.params[0]
        yield Operation("DELETE", item, delete, Kind.PARAMS, p.name, p.schema)
    if ident is not None:
        yield from _item_methods(item, methods, ident)


def _item_methods(item: str, methods: dict[str, MethodSpec], ident: Param) -> Iterable[Operation]:
    """``POST /<ns>/id/<id>/<method>`` (TrueNAS's item methods) for each other method whose
    first param is the namespace's item id (``trigger.launch``, ``command.run``)."""
    for short, spec in methods.items():
        if short in CRUD or not spec.params:
            continue
        p = spec.params[0]
        if (p.name, p.schema) == (ident.name, ident.schema):
            yield Operation("POST", f"{item}/{short}", spec, Kind.PARAMS, p.name, p.schema)


def _calls(base: str, methods: dict[str, MethodSpec]) -> Iterable[Operation]:
    """``POST /<ns>/<method>`` for every method; GET too when it takes filters or nothing."""
    for short, spec in methods.items():
        path = f"{base}/{short}"
        if filterable(spec):
            yield Operation("GET", path, spec, Kind.FILTERS)
        elif not spec.params:
            yield Operation("GET", path, spec, Kind.PARAMS)
        yield Operation("POST", path, spec, Kind.PARAMS)


def build_operations(specs: Iterable[MethodSpec]) -> list[Operation]:
    """Every route, method calls first: a path two namespaces would both claim goes to the
    method call (the other is logged and dropped)."""
    namespaces: dict[str, dict[str, MethodSpec]] = {}
    for spec in sorted(specs, key=lambda s: s.name):
        if routed(spec):
            namespaces.setdefault(spec.namespace, {})[spec.name.rpartition(".")[2]] = spec
    candidates: list[Operation] = []
    for ns, methods in namespaces.items():
        candidates += _calls("/" + ns.replace(".", "/"), methods)
    for ns, methods in namespaces.items():
        candidates += _crud("/" + ns.replace(".", "/"), methods)
    taken: dict[tuple[str, str], Operation] = {}
    for op in candidates:
        key = (op.verb, op.path)
        if key in taken:
            log.warning("REST %s %s: %s shadowed by %s", *key, op.method, taken[key].method)
            continue
        taken[key] = op
    return list(taken.values())


class NoRoute(Exception):
    """No route has this path; ``allowed`` lists the verbs of the path when it exists."""

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = allowed


class Router:
    """Finds the operation of a verb and a path below PREFIX."""

    def __init__(self, operations: Iterable[Operation]) -> None:
        self.operations = list(operations)
        self._paths: dict[str, dict[str, Operation]] = {}
        for op in self.operations:
            self._paths.setdefault(op.path, {})[op.verb] = op

    def match(self, verb: str, raw_path: str) -> tuple[Operation, str | None]:
        """The operation and the path's (decoded) id; raises NoRoute."""
        segments = [unquote(s) for s in raw_path.strip("/").split("/")]
        # /<ns>/id/<id>, /<ns>/id/<id>/<method>, then the path as it is.
        candidates: list[tuple[list[str], str | None]] = []
        if len(segments) >= 3 and segments[-2] == "id" and segments[-1]:
            candidates.append(([*segments[:-1], "{id}"], segments[-1]))
        if len(segments) >= 4 and segments[-3] == "id" and segments[-2]:
            candidates.append(([*segments[:-2], "{id}", segments[-1]], segments[-2]))
        candidates.append((segments, None))
        for template, ident in candidates:
            verbs = self._paths.get("/" + "/".join(template))
            if verbs is not None:
                op = verbs.get(verb)
                if op is None:
                    raise NoRoute(sorted(verbs))
                return op, ident
        raise NoRoute([])
