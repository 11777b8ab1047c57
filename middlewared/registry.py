"""How a plugin declares a service and its methods, without importing the server."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

Schema = dict[str, Any]
LockSpec = str | Callable[[Sequence[Any]], str | None] | None
DescriptionSpec = str | Callable[[Sequence[Any]], str | None] | None

ANY: Schema = {}


@dataclass(frozen=True)
class Param:
    """One positional (or by-name) parameter of a method."""

    name: str
    schema: Schema = field(default_factory=dict)
    required: bool = True
    default: Any = None
    secret: bool = False
    description: str = ""


@dataclass(frozen=True)
class JobOptions:
    """What makes a method a job, as TrueNAS's ``@job`` documents it."""

    lock: LockSpec = None
    # Jobs allowed to wait behind the running one under the same lock; the
    # next call is merged into the last waiting job. ``None``: unbounded;
    # ``0``: refuse with EBUSY while one runs.
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


@dataclass(frozen=True)
class MethodSpec:
    """A method as mounted on the server: name, schema, options, implementation."""

    name: str
    func: Callable[..., Any]
    params: tuple[Param, ...]
    returns: Schema
    doc: str
    job: JobOptions | None = None
    # Callable before login (core.ping, auth.login...).
    public: bool = False
    # Callable by any logged-in user whatever their allow-list (auth.me, core.get_jobs...).
    authenticated: bool = False
    admin_only: bool = False
    private: bool = False

    @property
    def secret_params(self) -> frozenset[int]:
        return frozenset(i for i, p in enumerate(self.params) if p.secret)

    @property
    def namespace(self) -> str:
        return self.name.rpartition(".")[0]


class Registry:
    """The methods one plugin offers under one namespace."""

    def __init__(self, namespace: str, description: str = "") -> None:
        if not namespace or namespace.startswith(".") or namespace.endswith("."):
            raise ValueError(f"bad namespace {namespace!r}")
        self.namespace = namespace
        self.description = description
        self.methods: dict[str, MethodSpec] = {}
        self.startup_hooks: list[Callable[[Any], Any]] = []
        self.shutdown_hooks: list[Callable[[Any], Any]] = []

    def method(
        self,
        *,
        params: Sequence[Param] = (),
        returns: Schema | None = None,
        job: JobOptions | None = None,
        public: bool = False,
        authenticated: bool = False,
        admin_only: bool = False,
        private: bool = False,
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
            self.methods[full] = MethodSpec(
                name=full,
                func=func,
                params=tuple(params),
                returns=ANY if returns is None else returns,
                doc=doc,
                job=job,
                public=public,
                authenticated=authenticated,
                admin_only=admin_only,
                private=private,
            )
            return func

        return decorate

    def on_startup(self, func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Run ``func(app)`` once the server is ready (store open, methods mounted)."""
        self.startup_hooks.append(func)
        return func

    def on_shutdown(self, func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        self.shutdown_hooks.append(func)
        return func
