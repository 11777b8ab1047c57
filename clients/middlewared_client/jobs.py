"""Job handles: a job call's id, progress and outcome, fed by ``core.get_jobs`` events."""

from __future__ import annotations

import asyncio
import errno as _errno
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from middlewared.errors import MiddlewareError
from middlewared_client.errors import ClientError

log = logging.getLogger(__name__)

WAITING, RUNNING, SUCCESS, FAILED, ABORTED = "WAITING", "RUNNING", "SUCCESS", "FAILED", "ABORTED"
TERMINAL_STATES = frozenset({SUCCESS, FAILED, ABORTED})


@dataclass(frozen=True)
class JobProgress:
    """A job's ``progress`` object."""

    percent: float | None = None
    description: str | None = None
    extra: Any = None

    @classmethod
    def from_record(cls, progress: Any) -> JobProgress:
        if not isinstance(progress, dict):
            return cls()
        percent = progress.get("percent")
        description = progress.get("description")
        return cls(
            percent=percent if isinstance(percent, int | float) else None,
            description=description if isinstance(description, str) else None,
            extra=progress.get("extra"),
        )


ProgressCallback = Callable[[JobProgress], object]


class JobControl(Protocol):
    """What a handle needs from its client."""

    async def abort_job(self, job_id: int) -> None: ...

    async def job_id_for_call(self, call_id: str) -> int | None: ...


class JobHandle:
    """One job method call in flight, or ended; ``result()`` is the call's reply."""

    def __init__(self, call_id: str, method: str, control: JobControl) -> None:
        self.call_id = call_id
        self.method = method
        self._control = control
        self._id: int | None = None
        self._record: dict[str, Any] = {}
        self._progress = JobProgress()
        self._callbacks: list[ProgressCallback] = []
        self._change_callbacks: list[Callable[[dict[str, Any]], None]] = []
        self._id_known = asyncio.Event()
        self._done = asyncio.Event()
        self._result: Any = None
        self._error: MiddlewareError | None = None

    def __repr__(self) -> str:
        return f"<JobHandle {self.method} call={self.call_id} id={self._id} state={self.state}>"

    @property
    def id(self) -> int | None:
        """The job id, once an event named it (``wait_id()`` waits for it)."""
        return self._id

    @property
    def state(self) -> str | None:
        state = self._record.get("state")
        return state if isinstance(state, str) else None

    @property
    def progress(self) -> JobProgress:
        return self._progress

    @property
    def record(self) -> dict[str, Any]:
        """The latest job record seen in events (a copy)."""
        return dict(self._record)

    def done(self) -> bool:
        return self._done.is_set()

    def add_progress_callback(self, callback: ProgressCallback) -> None:
        """Call ``callback(progress)`` on each progress change (in the client's event loop)."""
        self._callbacks.append(callback)

    async def wait_id(self, timeout: float | None = None) -> int:
        """The job id: from its event, or asked of the server if the reply came first."""
        async with asyncio.timeout(timeout):
            if self._id is None:
                await _first(self._id_known, self._done)
            if self._id is not None:
                return self._id
            job_id = await self._control.job_id_for_call(self.call_id)
        if job_id is None:
            if self._error is not None:
                raise self._error
            raise ClientError(f"No job found for call {self.call_id}", _errno.ENOENT)
        self._id = job_id
        return job_id

    async def result(self, timeout: float | None = None) -> Any:
        """The job's result; raises the job's error (or a ``ClientError``) on failure."""
        async with asyncio.timeout(timeout):
            await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    async def abort(self) -> None:
        """Ask the server to abort the job (it must be abortable)."""
        await self._control.abort_job(await self.wait_id())

    # Called by the tracker.

    def _bind(self, job_id: int) -> None:
        self._id = job_id
        self._id_known.set()

    def add_change_callback(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(fields)`` on each change of the job's record (its log excerpt
        growing, its state...), and once more when it ends."""
        self._change_callbacks.append(callback)

    def _apply(self, fields: dict[str, Any]) -> None:
        self._record.update(fields)
        if "progress" in fields:
            self._set_progress(JobProgress.from_record(fields["progress"]))
        self._changed(fields)

    def _changed(self, fields: dict[str, Any]) -> None:
        for callback in list(self._change_callbacks):
            try:
                callback(fields)
            except Exception:
                log.exception("change callback of job %s failed", self._id)

    def _set_progress(self, progress: JobProgress) -> None:
        if progress == self._progress:
            return
        self._progress = progress
        for callback in list(self._callbacks):
            try:
                callback(progress)
            except Exception:
                log.exception("progress callback of job %s failed", self._id)

    def _finish(self, result: Any = None, error: MiddlewareError | None = None) -> None:
        if self._done.is_set():
            return
        self._result, self._error = result, error
        if self.state not in TERMINAL_STATES and not isinstance(error, ClientError):
            if error is None:
                self._record["state"] = SUCCESS
            else:
                aborted = error.errno == _errno.ECANCELED
                self._record["state"] = ABORTED if aborted else FAILED
        if error is None and self._id is not None:
            self._set_progress(JobProgress(100, self._progress.description, self._progress.extra))
        self._done.set()
        self._changed({})


async def _first(*events: asyncio.Event) -> None:
    tasks = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class JobTracker:
    """Matches ``core.get_jobs`` events to the job calls of one client that are in flight."""

    def __init__(self) -> None:
        self._by_call: dict[str, JobHandle] = {}
        self._by_job: dict[int, list[JobHandle]] = {}

    def __len__(self) -> int:
        return len(self._by_call)

    def track(self, handle: JobHandle) -> None:
        self._by_call[handle.call_id] = handle

    def follow(self, handle: JobHandle, job_id: int) -> None:
        """Track a job this client did not start by a call; ``handle.call_id`` is the call
        whose reply settles it (a ``core.job_wait``)."""
        self._by_call[handle.call_id] = handle
        handle._bind(job_id)
        self._by_job.setdefault(job_id, []).append(handle)

    def on_event(self, params: dict[str, Any]) -> None:
        """Feed one ``collection_update`` of ``core.get_jobs``."""
        if params.get("msg") == "removed" or not self._by_call:
            return
        fields = params.get("fields")
        if not isinstance(fields, dict):
            return
        job_id = params.get("id", fields.get("id"))
        if not isinstance(job_id, int):
            return
        message_ids = fields.get("message_ids")
        if isinstance(message_ids, list):
            for call_id in message_ids:
                handle = self._by_call.get(call_id) if isinstance(call_id, str) else None
                if handle is not None and handle.id is None:
                    handle._bind(job_id)
                    self._by_job.setdefault(job_id, []).append(handle)
        for handle in self._by_job.get(job_id, ()):
            handle._apply(fields)

    def finish(
        self, handle: JobHandle, result: Any = None, error: MiddlewareError | None = None
    ) -> None:
        """The call's reply arrived: forget the handle and settle it."""
        self._by_call.pop(handle.call_id, None)
        if handle.id is not None:
            handles = self._by_job.get(handle.id, [])
            if handle in handles:
                handles.remove(handle)
            if not handles:
                self._by_job.pop(handle.id, None)
        handle._finish(result, error)

    def fail_all(self, error: MiddlewareError) -> None:
        for handle in list(self._by_call.values()):
            self.finish(handle, error=error)
