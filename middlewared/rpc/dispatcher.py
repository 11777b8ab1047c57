"""Dispatch one call: method lookup, authentication, permission, params, then the call."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Any

from middlewared.auth.credentials import Credentials
from middlewared.context import CallContext, ServerApi, SessionApi
from middlewared.errors import (
    CallError,
    MethodNotFound,
    MiddlewareError,
    NotAuthenticated,
    PermissionDenied,
)
from middlewared.jobs.manager import JobManager
from middlewared.registry import MethodSpec
from middlewared.rpc.schema import ParamsBinder, redact

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mounted:
    """A method ready to be called: its spec and its compiled params binder."""

    spec: MethodSpec
    binder: ParamsBinder


class Dispatcher:
    def __init__(self, app: ServerApi, jobs: JobManager) -> None:
        self.app = app
        self.jobs = jobs
        self.methods: dict[str, Mounted] = {}

    def mount(self, spec: MethodSpec) -> None:
        if spec.name in self.methods:
            raise ValueError(f"method {spec.name} is already mounted")
        self.methods[spec.name] = Mounted(spec, ParamsBinder(spec.params))

    def lookup(self, name: str) -> MethodSpec | None:
        m = self.methods.get(name)
        return None if m is None else m.spec

    def resolve(self, name: str, credentials: Credentials | None, private: bool = False) -> Mounted:
        """The method, if this caller may call it; else the error TrueNAS clients expect."""
        mounted = self.methods.get(name)
        if mounted is None or (mounted.spec.private and not private):
            if credentials is None:
                # Do not reveal which methods exist before login.
                raise NotAuthenticated()
            raise MethodNotFound(name)
        spec = mounted.spec
        if spec.public:
            return mounted
        if credentials is None:
            raise NotAuthenticated()
        if spec.admin_only and not credentials.admin:
            raise PermissionDenied(f"{name} is for administrators only")
        if not spec.authenticated and not credentials.allows(name):
            raise PermissionDenied(f"Not permitted to call {name}")
        return mounted

    async def call(
        self,
        name: str,
        params: Any,
        credentials: Credentials | None,
        session: SessionApi | None = None,
        message_id: Any = None,
        legacy_jobs: bool = False,
        private: bool = False,
    ) -> Any:
        mounted = self.resolve(name, credentials, private)
        args = mounted.binder.bind(params)
        spec = mounted.spec
        ctx = CallContext(self.app, credentials, session, message_id)
        if spec.job is None:
            return await spec.func(ctx, *args)
        assert credentials is not None
        job = await self.jobs.submit(spec, args, redact(args, spec.params), credentials, message_id)
        if legacy_jobs:
            return job.id
        return await job.wait()


def error_object(exc: BaseException, name: str, with_trace: bool) -> dict[str, Any]:
    """The JSON-RPC ``error`` for any exception a call raised; unexpected ones are logged."""
    if not isinstance(exc, MiddlewareError):
        log.error("method %s failed unexpectedly", name, exc_info=exc)
        exc_reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        wrapped: MiddlewareError = CallError(exc_reason)
    else:
        wrapped = exc
    trace = None
    if with_trace:
        trace = {
            "class": type(exc).__name__,
            "frames": [],
            "formatted": "".join(traceback.format_exception(exc)),
            "repr": repr(exc),
        }
    return wrapped.to_rpc_error(trace)
