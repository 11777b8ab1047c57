"""The registry plugins declare methods on, and a check of every registry the server mounts."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from middlewared.plugins import CORE_SERVICES
from middlewared.registry import (
    ANY,
    Access,
    JobOptions,
    MethodSpec,
    Param,
    Registry,
    RetryPolicy,
)
from middlewared.routes import HttpRequest, HttpResponse, Route
from middlewared.rpc.schema import ParamsBinder, compile_schema

# What the server mounts, in its order: the core services, then the builtin plugins
# (``plugins/`` is installed as ``middlewared_plugins``).
BUILTIN = importlib.import_module("middlewared_plugins")
MODULES = (
    *(f"middlewared.services.{name}" for name in CORE_SERVICES),
    *(f"middlewared_plugins.{m.name}" for m in pkgutil.iter_modules(BUILTIN.__path__)),
)
SECRET_WORDS = frozenset({"password", "passwd", "passphrase", "token", "key", "secret"})


# -- the registry itself ------------------------------------------------------------------


@pytest.mark.parametrize("namespace", ["", ".pool", "pool.", "."])
def test_bad_namespaces_are_refused(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        Registry(namespace)


def test_a_method_is_declared_with_its_full_name_and_docstring() -> None:
    reg = Registry("pool.dataset", "Datasets")

    @reg.method(params=[Param("name", {"type": "string"})], returns={"type": "boolean"})
    async def create(ctx: Any, name: str) -> bool:
        """Create a dataset.

        More text.
        """
        return True

    spec = reg.methods["pool.dataset.create"]
    assert spec.name == "pool.dataset.create"
    assert spec.namespace == "pool.dataset"
    assert spec.doc == "Create a dataset.\n\nMore text."
    assert spec.func is create
    assert spec.params == (Param("name", {"type": "string"}),)
    assert spec.returns == {"type": "boolean"}
    assert spec.job is None
    # One access level replaced the public/authenticated/admin_only/private flags: by
    # default a method is for those whose allow-list grants it.
    assert spec.access is Access.USER
    assert not spec.trusted  # set only when a built-in registry is mounted


def test_defaults_and_flags() -> None:
    reg = Registry("x")
    options = JobOptions(lock="x", abortable=True)

    @reg.method(job=options, access=Access.ADMIN)
    async def run(ctx: Any, job: Any) -> None:
        """Run."""

    spec = reg.methods["x.run"]
    assert spec.returns == ANY
    assert spec.job is options
    assert spec.access is Access.ADMIN
    assert options.retry is None  # no retries unless asked


@pytest.mark.parametrize("access", list(Access))
def test_every_access_level_can_be_declared(access: Access) -> None:
    reg = Registry("x")

    @reg.method(access=access)
    async def call(ctx: Any) -> None:
        """Call."""

    assert reg.methods["x.call"].access is access


def test_a_public_job_is_refused() -> None:
    reg = Registry("x")

    async def run(ctx: Any, job: Any) -> None:
        """Run."""

    with pytest.raises(ValueError, match="a job cannot be public"):
        reg.method(job=JobOptions(), access=Access.PUBLIC)(run)
    assert reg.methods == {}


@pytest.mark.parametrize(
    "bad",
    [
        {"max_attempts": 0},
        {"base_delay": -1.0},
        {"base_delay": 10.0, "max_delay": 5.0},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
    ids=repr,
)
def test_a_bad_retry_policy_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**bad)


def test_name_overrides_the_function_name() -> None:
    reg = Registry("user")

    @reg.method(name="query")
    async def query_users(ctx: Any) -> None:
        """Query."""

    assert list(reg.methods) == ["user.query"]


def test_hidden_params() -> None:
    reg = Registry("auth")

    @reg.method(params=[Param("user"), Param("password", secret=True), Param("otp", secret=True)])
    async def login(ctx: Any, user: str, password: str, otp: str) -> None:
        """Log in."""

    assert reg.methods["auth.login"].hidden_params == frozenset({1, 2})


def test_a_duplicate_method_is_refused() -> None:
    reg = Registry("x")

    @reg.method()
    async def same(ctx: Any) -> None:
        """First."""

    with pytest.raises(ValueError, match="declared twice"):

        @reg.method(name="same")
        async def other(ctx: Any) -> None:
            """Second."""

    assert reg.methods["x.same"].doc == "First."


@pytest.mark.parametrize(
    "doc",
    [
        None,
        "",
        "   \n  ",
    ],
)
def test_a_method_without_a_docstring_is_refused(doc: str | None) -> None:
    reg = Registry("x")

    async def undocumented(ctx: Any) -> None:
        pass

    undocumented.__doc__ = doc
    with pytest.raises(ValueError, match="no docstring"):
        reg.method()(undocumented)
    assert reg.methods == {}


def test_a_sync_function_is_refused() -> None:
    reg = Registry("x")

    def blocking(ctx: Any) -> None:
        """Would block the event loop."""

    with pytest.raises(ValueError, match="must be async"):
        reg.method()(blocking)
    assert reg.methods == {}


async def test_hooks_become_lifespans_kept_in_order() -> None:
    """on_startup/on_shutdown are now lifespans (``registry.lifespans``), entered in order at
    start and left in the reverse order at stop, as the server's exit stack does."""
    reg = Registry("x")
    ran: list[str] = []
    app = object()

    def first(given: Any) -> None:
        assert given is app
        ran.append("first")

    async def second(given: Any) -> None:
        ran.append("second")

    async def stop(given: Any) -> None:
        ran.append("stop")

    @reg.lifespan
    async def around(given: Any) -> AsyncIterator[None]:
        ran.append("around: start")
        yield
        ran.append("around: stop")

    assert reg.on_startup(first) is first
    reg.on_startup(second)
    assert reg.on_shutdown(stop) is stop
    assert reg.lifespans[0] is around
    assert len(reg.lifespans) == 4
    async with contextlib.AsyncExitStack() as stack:
        for lifespan in reg.lifespans:
            await stack.enter_async_context(lifespan(app))
        assert ran == ["around: start", "first", "second"]
        ran.clear()
    assert ran == ["stop", "around: stop"]


def test_settings_routes_and_collections_are_declared() -> None:
    reg = Registry("backup")
    schema = {"properties": {"keep": {"type": "integer"}}}
    reg.declare_settings(schema, {"keep": 3})
    assert reg.settings is not None
    assert (reg.settings.namespace, reg.settings.schema, reg.settings.defaults) == (
        "backup",
        schema,
        {"keep": 3},
    )
    with pytest.raises(ValueError, match="declared twice"):
        reg.declare_settings(schema, {})

    async def hook(request: HttpRequest) -> HttpResponse:
        return HttpResponse(json={"ok": True})

    route = Route("POST", "/hooks/backup", hook)
    reg.route(route)
    assert reg.routes == [route]
    reg.collection("backup.runs", "Backup runs", open_to_all=True)
    (collection,) = reg.collections
    assert (collection.name, collection.open_to_all) == ("backup.runs", True)


# -- every real registry ------------------------------------------------------------------


def registries() -> Iterator[Registry]:
    """As the plugin loader finds them (a helper module has none)."""
    for name in MODULES:
        module = importlib.import_module(name)
        found = getattr(module, "registries", None) or [getattr(module, "registry", None)]
        yield from (registry for registry in found if isinstance(registry, Registry))


def all_methods() -> list[MethodSpec]:
    return [spec for registry in registries() for spec in registry.methods.values()]


METHODS = all_methods()


def method_ids(spec: MethodSpec) -> str:
    return spec.name


def methods_with_bugs(bugs: dict[str, str]) -> list[Any]:
    """METHODS as params; those named in ``bugs`` are expected to fail for that reason."""
    return [
        pytest.param(
            spec,
            id=spec.name,
            marks=[pytest.mark.xfail(strict=True, reason=bugs[spec.name])]
            if spec.name in bugs
            else [],
        )
        for spec in METHODS
    ]


def looks_secret(name: str) -> bool:
    words = set(re.split(r"[_\W]+", name.lower()))
    return bool(words & SECRET_WORDS) or name.lower() in {"apikey", "api_key"}


def property_names(schema: Any) -> Iterator[str]:
    """Every property name anywhere in a schema."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                yield from value
            yield from property_names(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from property_names(item)


def test_the_registries_were_found() -> None:
    names = {spec.name for spec in METHODS}
    assert {"core.ping", "auth.login", "user.create", "api_key.create"} <= names
    assert {"rpc.discover", "filesystem.copy"} <= names


def test_no_method_is_declared_twice_across_registries() -> None:
    names = [spec.name for spec in METHODS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("spec", METHODS, ids=method_ids)
def test_every_method_is_documented(spec: MethodSpec) -> None:
    assert spec.doc.strip()
    for param in spec.params:
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", param.name), param.name


@pytest.mark.parametrize(
    "spec",
    methods_with_bugs({}),
)
def test_every_schema_compiles(spec: MethodSpec) -> None:
    for param in spec.params:
        compile_schema(param.schema)
    compile_schema(spec.returns)
    # And the dispatcher can bind its params (no name declared twice).
    ParamsBinder(spec.params)


@pytest.mark.parametrize(
    "spec",
    methods_with_bugs({}),
)
def test_defaults_satisfy_their_schema(spec: MethodSpec) -> None:
    for param in spec.params:
        if not param.required:
            errors = compile_schema(param.schema).validate(param.default, param.name)
            assert errors == [], f"{spec.name}: default of {param.name} is invalid"


@pytest.mark.parametrize("spec", METHODS, ids=method_ids)
def test_required_params_come_first(spec: MethodSpec) -> None:
    flags = [param.required for param in spec.params]
    assert flags == sorted(flags, reverse=True), f"{spec.name}: an optional param before one"


@pytest.mark.parametrize("spec", METHODS, ids=method_ids)
def test_secret_looking_params_are_secret(spec: MethodSpec) -> None:
    for param in spec.params:
        if looks_secret(param.name):
            assert param.secret, f"{spec.name}: param {param.name} must be secret=True"
        hidden = [name for name in property_names(param.schema) if looks_secret(name)]
        if hidden:
            # secret=True hides it all; a redact function hides the parts marked secret.
            redacts = param.secret or param.redact is not None
            assert redacts, f"{spec.name}: param {param.name} carries {hidden}"


@pytest.mark.parametrize("spec", [s for s in METHODS if s.job is not None], ids=method_ids)
def test_job_options_are_sane(spec: MethodSpec) -> None:
    assert spec.job is not None
    assert spec.job.lock_queue_size is None or spec.job.lock_queue_size >= 0
    assert spec.job.max_concurrency is None or spec.job.max_concurrency >= 1
    assert spec.job.timeout is None or spec.job.timeout > 0
    assert spec.job.pipes <= {"input", "output"}


def test_the_secret_check_recognises_secrets() -> None:
    for name in ("password", "api_key", "token", "otp_token", "key", "old_password"):
        assert looks_secret(name), name
    for name in ("username", "keys_count", "monkey", "id", "path"):
        assert not looks_secret(name), name
