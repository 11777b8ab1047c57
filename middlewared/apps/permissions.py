"""cozy's permissions (``{"type", "verbs", "selector", "values"}``) as the methods and
event collections an app's token may use, checked against the installer's own rights.

``type`` names a namespace of methods (``filesystem``; cozy's ``io.cozy.files`` is an
alias of it) or ``jobs`` (cozy's ``io.cozy.jobs``): ``{"type": "jobs", "verbs": ["POST"],
"selector": "worker", "values": ["archive.zip"]}`` may start ``archive.zip``. On a
namespace each verb grants the methods whose short name it matches (``VERB_METHODS``);
GET also grants subscribing to the namespace's event collections; ALL grants every method
of the namespace. Methods are named one by one (never a pattern), so a token can never
reach a method added later."""

from __future__ import annotations

import errno
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from middlewared.apps.manifest import ALIASES
from middlewared.errors import ValidationErrors
from middlewared.registry import Access

VERBS = ("GET", "POST", "PUT", "PATCH", "DELETE", "ALL")
# The short names (fnmatch) each verb grants on a namespace.
VERB_METHODS: dict[str, tuple[str, ...]] = {
    "GET": (
        "query",
        "get",
        "get_*",
        "stat",
        "listdir",
        "list",
        "list_*",
        "config",
        "*_status",
        "*_choices",
        "logs",
        "log",
        "jobs",
    ),
    "POST": ("create", "create_*", "put", "copy", "run", "launch"),
    "PUT": ("update", "update_*"),
    "PATCH": ("update", "update_*"),
    "DELETE": ("delete", "delete_*", "remove", "remove_*"),
    "ALL": ("*",),
}
JOBS = "jobs"
MAX_VALUES = 64


@dataclass(frozen=True)
class Catalog:
    """What the server offers: each method's access level, and the event collections."""

    methods: Mapping[str, Access]
    collections: tuple[str, ...]


def _bad(field: str, message: str, code: int = errno.EINVAL) -> ValidationErrors:
    return ValidationErrors([(field, message, code)])


def translate(
    permissions: Mapping[str, Mapping[str, Any]], catalog: Catalog, where: str = "permissions"
) -> tuple[str, ...]:
    """The methods and collections the permissions grant, sorted; a ValidationErrors
    naming the permission when one is malformed or grants nothing."""
    granted: set[str] = set()
    for key, rule in permissions.items():
        granted |= _rule(rule, catalog, f"{where}.{key}")
    return tuple(sorted(granted))


def _verbs(rule: Mapping[str, Any], where: str) -> list[str]:
    verbs = rule.get("verbs", ["ALL"])  # cozy's default
    if not isinstance(verbs, list) or not verbs or not all(isinstance(v, str) for v in verbs):
        raise _bad(f"{where}.verbs", f"Verbs are a non-empty list of {', '.join(VERBS)}")
    unknown = [v for v in verbs if v not in VERBS]
    if unknown:
        raise _bad(
            f"{where}.verbs", f"Unknown verb {unknown[0]!r}: the verbs are {', '.join(VERBS)}"
        )
    return verbs


def _rule(rule: Mapping[str, Any], catalog: Catalog, where: str) -> set[str]:
    unknown = sorted(set(rule) - {"type", "verbs", "selector", "values", "description"})
    if unknown:
        raise _bad(f"{where}.{unknown[0]}", "Unknown field (type, verbs, selector, values)")
    kind = rule.get("type")
    if not isinstance(kind, str) or not kind:
        raise _bad(f"{where}.type", "A permission's type names a namespace, or jobs")
    kind = ALIASES.get(kind, kind)
    verbs = _verbs(rule, where)
    if kind == JOBS:
        return _jobs(rule, verbs, catalog, where)
    if "selector" in rule or "values" in rule:
        raise _bad(
            f"{where}.selector" if "selector" in rule else f"{where}.values",
            "selector and values narrow a jobs permission only "
            "({'type': 'jobs', 'selector': 'worker', 'values': [methods]})",
        )
    return _namespace(kind, verbs, catalog, where)


# cozy's worker names, as a manifest written for cozy gives them: the method each one is.
COZY_WORKERS = {
    "sendmail": "mail.send",
    "push": "push.send",
    "thumbnail": "image.thumbnail",
    "zip": "archive.zip",
    "unzip": "archive.unzip",
    "log": "log.print",
    "export": "data.export",
}


def _jobs(rule: Mapping[str, Any], verbs: list[str], catalog: Catalog, where: str) -> set[str]:
    if rule.get("selector") != "worker":
        raise _bad(
            f"{where}.selector",
            "A jobs permission names the methods it may start: selector 'worker' and values",
        )
    values = rule.get("values")
    if (
        not isinstance(values, list)
        or not values
        or len(values) > MAX_VALUES
        or not all(isinstance(v, str) for v in values)
    ):
        raise _bad(f"{where}.values", f"values is a list of 1 to {MAX_VALUES} method names")
    if not {"POST", "ALL"} & set(verbs):
        raise _bad(f"{where}.verbs", "A jobs permission starts methods: its verbs include POST")
    methods: set[str] = {COZY_WORKERS.get(str(v), str(v)) for v in values}
    for method in sorted(methods):
        access = catalog.methods.get(method)
        if access is None or access is Access.PRIVATE:
            raise _bad(f"{where}.values", f"No method {method!r}", errno.ENOENT)
    return methods


def _namespace(namespace: str, verbs: list[str], catalog: Catalog, where: str) -> set[str]:
    members = {
        name: access
        for name, access in catalog.methods.items()
        if name.rpartition(".")[0] == namespace and access is not Access.PRIVATE
    }
    if not members:
        raise _bad(f"{where}.type", f"No namespace {namespace!r} (no method in it)", errno.ENOENT)
    patterns = [p for verb in verbs for p in VERB_METHODS[verb]]
    granted = {
        name
        for name in members
        if any(fnmatch.fnmatchcase(name.rpartition(".")[2], p) for p in patterns)
    }
    if "GET" in verbs or "ALL" in verbs:
        granted |= {c for c in catalog.collections if c.rpartition(".")[0] == namespace}
    if not granted:
        raise _bad(f"{where}.verbs", f"{', '.join(verbs)} grants no method of {namespace}")
    return granted


def beyond(granted: tuple[str, ...], allows: Callable[[str], bool]) -> list[str]:
    """What ``granted`` holds that the installer may not use (``allows``: the installer's
    credentials' check, for methods and collections alike)."""
    return [name for name in granted if not allows(name)]
