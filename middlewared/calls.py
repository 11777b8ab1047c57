"""The one call path: resolve the method, check the caller may call it, bind and validate
its params, redact its secrets, then call it or submit its job. WebSocket calls, batches,
``core.bulk``, downloads, uploads and the calls plugins make all come through here, and
these checks happen nowhere else."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from middlewared.auth.credentials import Credentials
from middlewared.context import CallContext
from middlewared.errors import (
    Busy,
    MethodNotFound,
    NotAuthenticated,
    PermissionDenied,
    ValidationErrors,
)
from middlewared.jobs.limits import WorkerTable
from middlewared.jobs.pipes import Pipes
from middlewared.registry import Access, MethodSpec
from middlewared.rpc.schema import ParamsBinder

if TYPE_CHECKING:
    from middlewared.context import ServerApi, SessionApi
    from middlewared.jobs.engine import ExtraOps, JobEngine
    from middlewared.jobs.job import Job

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mounted:
    """A method ready to be called: its spec and its compiled params binder."""

    spec: MethodSpec
    binder: ParamsBinder


class Methods:
    """The mounted methods by name; mounting the same name twice is refused."""

    def __init__(self) -> None:
        self._methods: dict[str, Mounted] = {}

    def mount(self, spec: MethodSpec, trusted: bool = False) -> None:
        if spec.name in self._methods:
            raise ValueError(f"method {spec.name} is already mounted")
        if trusted != spec.trusted:
            spec = replace(spec, trusted=trusted)
        self._methods[spec.name] = Mounted(spec, ParamsBinder(spec.params))

    def get(self, name: str) -> Mounted | None:
        return self._methods.get(name)

    def lookup(self, name: str) -> MethodSpec | None:
        m = self._methods.get(name)
        return None if m is None else m.spec

    def __iter__(self) -> Iterator[Mounted]:
        return iter(self._methods.values())

    def __len__(self) -> int:
        return len(self._methods)

    def open_to_all(self, name: str) -> bool:
        """Whether every logged-in identity may call ``name`` (its jobs need no grant)."""
        m = self._methods.get(name)
        return m is not None and m.spec.access in (Access.PUBLIC, Access.SELF)


class JobQuota:
    """Live jobs one connection may hold (``legacy_jobs`` calls return at once, so nothing
    else bounds them): taken at submission, given back when the job ends."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.live = 0

    def take(self) -> None:
        if self.live >= self.limit:
            raise Busy(
                f"This connection already has {self.live} jobs that have not ended "
                f"(the limit is {self.limit})",
                errno.EBUSY,
            )
        self.live += 1

    def give_back(self, *_: Any) -> None:
        self.live -= 1


class Calls:
    def __init__(
        self, app: ServerApi, methods: Methods, engine: JobEngine, max_live_jobs_per_user: int
    ) -> None:
        self.app = app
        self.methods = methods
        self.engine = engine
        self.max_live_jobs_per_user = max_live_jobs_per_user
        # Worker limits per job method (set by the app once its settings exist).
        self.workers: WorkerTable | None = None

    def check(self, name: str, creds: Credentials | None, private: bool = False) -> Mounted:
        """The method, if ``creds`` may call it now; else the error TrueNAS clients expect."""
        mounted = self.methods.get(name)
        if mounted is None or (mounted.spec.access is Access.PRIVATE and not private):
            if creds is None:
                # Do not reveal which methods exist before login.
                raise NotAuthenticated()
            raise MethodNotFound(name)
        access = mounted.spec.access
        if access is Access.PUBLIC:
            return mounted
        if creds is None:
            raise NotAuthenticated()
        if access is Access.SELF:
            return mounted
        if access in (Access.ADMIN, Access.PRIVATE) and not creds.admin:
            raise PermissionDenied(f"{name} is for administrators only")
        if not creds.allows(name):
            raise PermissionDenied(f"Not permitted to call {name}")
        return mounted

    async def call(
        self,
        name: str,
        params: Any,
        creds: Credentials | None,
        *,
        session: SessionApi | None = None,
        message_id: Any = None,
        legacy_jobs: bool = False,
        private: bool = False,
        origin: str = "call",
        quota: JobQuota | None = None,
        return_job: bool = False,
        extra_ops: ExtraOps | None = None,
        lock_key: str | None = None,
    ) -> Any:
        """Call ``name``: a plain method's result, or (for a job) the job's result once it
        ended (its id at once with ``legacy_jobs``; the Job itself with ``return_job``)."""
        mounted = self.check(name, creds, private)
        args = mounted.binder.bind(params)
        spec = mounted.spec
        if spec.job is None:
            return await spec.func(CallContext(self.app, creds, session, message_id, spec), *args)
        assert creds is not None
        job = await self._submit(
            mounted, args, creds, message_id, None, origin, quota, extra_ops, lock_key
        )
        if return_job:
            return job
        if legacy_jobs:
            return job.id
        return await job.wait()

    async def start(
        self,
        name: str,
        params: Any,
        creds: Credentials,
        *,
        pipes: Pipes,
        origin: str,
        message_id: Any = None,
        quota: JobQuota | None = None,
    ) -> Job:
        """Submit the job of ``name`` with pipes (an upload's input, a download's output);
        returns it once it is durably recorded. Refused unless the method is a job that
        takes those pipes."""
        mounted = self.check(name, creds)
        spec = mounted.spec
        wanted = pipes.opened
        if spec.job is None or not wanted <= spec.job.pipes:
            what = "does not take an upload" if "input" in wanted else "produces no download"
            raise ValidationErrors([("method", f"{name} {what}", errno.EINVAL)])
        args = mounted.binder.bind(params)
        return await self._submit(mounted, args, creds, message_id, pipes, origin, quota)

    async def _submit(
        self,
        mounted: Mounted,
        args: list[Any],
        creds: Credentials,
        message_id: Any,
        pipes: Pipes | None,
        origin: str,
        quota: JobQuota | None,
        extra_ops: ExtraOps | None = None,
        lock_key: str | None = None,
    ) -> Job:
        spec = mounted.spec
        limit = self.max_live_jobs_per_user
        if creds.user_id is not None and self.engine.live_count(creds.user_id) >= limit:
            raise Busy(f"{creds.username} already has {limit} jobs that have not ended")
        if self.workers is not None:
            spec = self.workers.prepare(spec, creds.user_id)
        if quota is not None:
            quota.take()
        try:
            job = await self.engine.submit(
                spec,
                args,
                mounted.binder.redact(args),
                creds,
                message_id,
                pipes,
                origin,
                extra_ops,
                lock_key,
            )
        except BaseException:
            if quota is not None:
                quota.give_back()
            raise
        if quota is not None:
            if job.ended:
                quota.give_back()
            else:
                job.on_ended.append(quota.give_back)
        return job
