"""How a plugin declares itself without importing the server: methods (schema, job options,
one access level), settings, HTTP routes, event collections and a lifespan."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from middlewared.routes import Route

Schema = dict[str, Any]
LockSpec = str | Callable[[Sequence[Any]], str | None] | None
DescriptionSpec = str | Callable[[Sequence[Any]], str | None] | None
# ``lifespan(app)``: an async context manager entered at start, left at stop.
Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[None]]

ANY: Schema = {}


class Access(StrEnum):
    """Who may call a method (docs/security.md has the table).

    PUBLIC: anyone, before login too (``core.ping``, ``auth.login``). SELF: every logged-in
    identity whatever its allow-list; such methods act only on the caller's own session and
    on what the caller may see (``auth.me``, ``core.get_jobs``). USER: identities whose
    allow-list grants the method (admins: every method their key grants). ADMIN: as USER,
    and only administrators. PRIVATE: not callable over the wire unless a session asks for
    ``private_methods``, and then by administrators only.
    """

    PUBLIC = "PUBLIC"
    SELF = "SELF"
    USER = "USER"
    ADMIN = "ADMIN"
    PRIVATE = "PRIVATE"


@dataclass(frozen=True)
class Param:
    """One positional (or by-name) parameter of a method."""

    name: str
    schema: Schema = field(default_factory=dict)
    required: bool = True
    default: Any = None
    secret: bool = False
    description: str = ""
    # What job records show of the value, when only parts of it are secret (secret=True
    # hides all of it).
    redact: Callable[[Any], Any] | None = None

    @property
    def hidden(self) -> bool:
        """Whether job records show the value otherwise than as given."""
        return self.secret or self.redact is not None


@dataclass(frozen=True)
class RetryPolicy:
    """How a failed attempt is tried again: back to WAITING after an exponential backoff with
    jitter. Never after a validation error or an abort."""

    max_attempts: int = 3
    # Seconds before the second attempt; doubled for each next one, capped at max_delay.
    base_delay: float = 1.0
    max_delay: float = 300.0
    # +- this fraction of the delay, at random.
    jitter: float = 0.1
    # Errnos that are worth a retry (empty: any failure that is not a validation error).
    errnos: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("RetryPolicy: max_attempts >= 1 and 0 <= base_delay <= max_delay")
        if not 0 <= self.jitter < 1:
            raise ValueError("RetryPolicy: jitter must be in [0, 1)")


@dataclass(frozen=True)
class JobOptions:
    """What makes a method a job, as TrueNAS's ``@job`` documents it."""

    lock: LockSpec = None
    # Jobs allowed to wait behind the running one under the same lock; the
    # next identical call of the same owner is merged into the last waiting job.
    # ``None``: unbounded; ``0``: refuse with EBUSY while one runs.
    lock_queue_size: int | None = 5
    logs: bool = False
    transient: bool = False
    abortable: bool = False
    description: DescriptionSpec = None
    timeout: float | None = None
    max_concurrency: int | None = None
    # Re-queue instead of failing when the server died while it was pending.
    retry_on_restart: bool = False
    # Pipes the job reads/writes: a subset of {"input", "output"}.
    pipes: frozenset[str] = frozenset()
    # The job checks its pipes itself instead of failing when one was not opened.
    check_pipes: bool = True
    retry: RetryPolicy | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A method as mounted on the server: name, schema, options, implementation."""

    name: str
    func: Callable[..., Any]
    params: tuple[Param, ...]
    returns: Schema
    doc: str
    job: JobOptions | None = None
    access: Access = Access.USER
    # Set when mounted from a trusted (built-in) registry: may call as the server itself.
    trusted: bool = False

    @property
    def hidden_params(self) -> frozenset[int]:
        """Params a job's record does not show as given (secret, or partly redacted)."""
        return frozenset(i for i, p in enumerate(self.params) if p.hidden)

    @property
    def namespace(self) -> str:
        return self.name.rpartition(".")[0]


@dataclass(frozen=True)
class SettingsSpec:
    """A plugin's settings: one JSON object per namespace, validated by ``schema``, stored
    in the store (so ``config.save`` carries it) and read with ``ctx.settings``."""

    namespace: str
    schema: Schema
    defaults: dict[str, Any]


@dataclass(frozen=True)
class CollectionSpec:
    """An event source a plugin publishes on (``core.subscribe`` takes its name)."""

    name: str
    description: str
    # Every logged-in identity may subscribe (and sees only what it may read); otherwise
    # the allow-list must grant the collection's name.
    open_to_all: bool = False


class Registry:
    """What one plugin offers under one namespace."""

    def __init__(self, namespace: str, description: str = "", *, trusted: bool = False) -> None:
        if not namespace or namespace.startswith(".") or namespace.endswith("."):
            raise ValueError(f"bad namespace {namespace!r}")
        self.namespace = namespace
        self.description = description
        # Built-in plugins may call other methods as the server itself (``as_server=True``);
        # any other plugin's internal calls carry the credentials of whoever started the work.
        self.trusted = trusted
        self.methods: dict[str, MethodSpec] = {}
        self.lifespans: list[Lifespan] = []
        self.settings: SettingsSpec | None = None
        self.routes: list[Route] = []
        self.collections: list[CollectionSpec] = []

    def method(
        self,
        *,
        params: Sequence[Param] = (),
        returns: Schema | None = None,
        job: JobOptions | None = None,
        access: Access = Access.USER,
        name: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Declare a method; its docstring is its description in ``core.get_methods``."""

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            short = name or func.__name__
            full = f"{self.namespace}.{short}"
            if full in self.methods:
                raise ValueError(f"method {full} declared twice")
            doc = inspect.getdoc(func)
            if not doc or not doc.strip():
                raise ValueError(f"method {full} has no docstring")
            if not inspect.iscoroutinefunction(func):
                raise ValueError(f"method {full} must be async")
            if job is not None and access is Access.PUBLIC:
                raise ValueError(f"method {full}: a job cannot be public (it needs an owner)")
            self.methods[full] = MethodSpec(
                name=full,
                func=func,
                params=tuple(params),
                returns=ANY if returns is None else returns,
                doc=doc,
                job=job,
                access=access,
            )
            return func

        return decorate

    def lifespan(self, func: Callable[[Any], AsyncIterator[None]]) -> Lifespan:
        """Declare ``async def lifespan(app): <start>; yield; <stop>``: entered once the store
        is open and before any job is recovered or any socket opens; left at stop, after the
        jobs ended, in the reverse order of start."""
        manager = contextlib.asynccontextmanager(func)
        self.lifespans.append(manager)
        return manager

    def on_startup(self, func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Run ``func(app)`` at start (a lifespan with nothing to do at stop)."""

        async def lifespan(app: Any) -> AsyncIterator[None]:
            result = func(app)
            if inspect.isawaitable(result):
                await result
            yield

        self.lifespan(lifespan)
        return func

    def on_shutdown(self, func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Run ``func(app)`` at stop."""

        async def lifespan(app: Any) -> AsyncIterator[None]:
            yield
            result = func(app)
            if inspect.isawaitable(result):
                await result

        self.lifespan(lifespan)
        return func

    def declare_settings(self, schema: Schema, defaults: dict[str, Any]) -> None:
        """Settings of this namespace (an object schema and the defaults it starts from)."""
        if self.settings is not None:
            raise ValueError(f"settings of {self.namespace} declared twice")
        self.settings = SettingsSpec(self.namespace, schema, dict(defaults))

    def route(self, route: Route) -> None:
        """Serve an HTTP route (``/hooks/...``, ``/ui/...``) beside the API."""
        self.routes.append(route)

    def collection(self, name: str, description: str, open_to_all: bool = False) -> None:
        """Declare an event source this plugin publishes on."""
        self.collections.append(CollectionSpec(name, description, open_to_all))
