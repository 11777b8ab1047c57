"""A job: its state machine, its record, and the handle a plugin method is given."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from errno import EINVAL
from typing import Any

from middlewared import jsonc
from middlewared.auth.credentials import Credentials
from middlewared.errors import CallError, MiddlewareError, ValidationErrors, errname
from middlewared.jobs.logs import JobLog
from middlewared.jobs.pipes import Pipes
from middlewared.lograte import RateLimitedLog
from middlewared.registry import JobOptions

log = logging.getLogger(__name__)
_unencodable = RateLimitedLog(log)


class JobState(StrEnum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    ABORTED = "ABORTED"


ENDED = frozenset({JobState.SUCCESS, JobState.FAILED, JobState.ABORTED})
_NEXT: dict[JobState, frozenset[JobState]] = {
    JobState.WAITING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.ABORTED}),
    # Back to WAITING: a failed attempt that will be retried.
    JobState.RUNNING: ENDED | {JobState.WAITING},
}


def now_ms() -> int:
    return int(time.time() * 1000)


def date(ms: int | None) -> dict[str, int] | None:
    return None if ms is None else {"$date": ms}


class InvalidTransition(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A job's record at one transition, built and encoded once: its stored row and the
    event that announces it share it."""

    record: dict[str, Any]  # as admins see it
    encoded: str


class Job:
    """One tracked call. Plugin methods receive it to report progress and write logs."""

    def __init__(
        self,
        id: int,
        method: str,
        options: JobOptions,
        arguments: list[Any],
        shown_arguments: list[Any],
        credentials: Credentials,
        message_id: Any = None,
        lock_key: str | None = None,
        description: str | None = None,
        origin: str = "call",
    ) -> None:
        self.id = id
        self.method = method
        self.options = options
        self.arguments = arguments
        self.shown_arguments = shown_arguments
        # As they were when the job was submitted (its record shows them); the job runs with
        # the credentials its identity has when it runs (``credentials.identity``).
        self.credentials = credentials
        self.owner_id = credentials.user_id
        # As every record of the job shows them (built once: a job takes several snapshots).
        self._credentials_record = credentials.record()
        self.key_id = credentials.api_key_id
        # What started it: "call", "bulk", "upload", "download", "trigger:<id>", "restart".
        self.origin = origin
        self.attempt = 1
        # Counted among its owner's jobs that have not ended (the engine's bound).
        self.counted = False
        # When a retry may start (ms since the epoch), None: at once.
        self.run_after: int | None = None
        self.message_ids: list[Any] = [] if message_id is None else [message_id]
        # Calls being merged into this job while its insert is not yet durable.
        self.pending_merges = 0
        self.lock_key = lock_key
        self.description = description
        self.state = JobState.WAITING
        self.progress: dict[str, Any] = {"percent": None, "description": None, "extra": None}
        self.result: Any = None
        # Set when the result was too large for the record (it is kept in a file).
        self.result_size: int | None = None
        self.error: str | None = None
        self.exception: str | None = None
        self.exc_info: dict[str, Any] | None = None
        self.time_started = now_ms()
        self.time_finished: int | None = None
        self.logs: JobLog | None = None
        self.logs_excerpt: str | None = None
        self.failure: MiddlewareError | None = None
        # Set by the manager: called on every visible change (progress=True when only progress).
        self.on_change: Callable[[Job, bool], None] = lambda job, progress: None
        # Other jobs following this one's progress (core.job_wait), and the job this one
        # follows when it is a core.job_wait (cycles are refused).
        self.watchers: list[Callable[[Job], None]] = []
        self.waiting_for: Job | None = None
        # Called once when the job reaches an ended state (before its end is stored), so
        # that what counts live jobs agrees with what the job shows.
        self.on_ended: list[Callable[[Job], None]] = []
        self.done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.done.add_done_callback(_consume_exception)
        self.persisted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None
        self.pipes = Pipes()

    # -- what plugin methods call -------------------------------------------------------
    def set_progress(
        self, percent: float | None = None, description: str | None = None, extra: Any = None
    ) -> None:
        """Report progress; percent is clamped to 0..100. Cheap: events are coalesced."""
        if percent is not None:
            self.progress["percent"] = min(100.0, max(0.0, float(percent)))
        if description is not None:
            self.progress["description"] = description
        if extra is not None:
            self.progress["extra"] = extra
        self.on_change(self, True)
        for watcher in self.watchers:
            watcher(self)

    def set_description(self, description: str) -> None:
        self.description = description
        self.on_change(self, False)

    def log(self, text: str) -> None:
        """Append a line to the job's log file (jobs declared with ``logs=True``);
        subscribers see the excerpt grow (coalesced, as progress is)."""
        if self.logs is not None:
            self.logs.write(text)
            self.on_change(self, True)

    def log_bytes(self, data: bytes) -> None:
        """Append bytes as they are (a child process's output, already in lines)."""
        if self.logs is not None:
            self.logs.write_bytes(data)
            self.on_change(self, True)

    def log_full(self, size: int) -> bool:
        """Whether output of ``size`` bytes would be dropped (the log was cut): then it is
        counted as dropped, and the caller need not prepare it."""
        return self.logs is None or self.logs.drop_if_full(size)

    async def wait(self) -> Any:
        """The job's result (or its error). Cancelling the waiter leaves the job alone."""
        return await asyncio.shield(self.done)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    # -- state machine ------------------------------------------------------------------
    def transition(self, state: JobState) -> None:
        if state not in _NEXT.get(self.state, frozenset()):
            raise InvalidTransition(f"job {self.id}: {self.state.value} -> {state.value}")
        self.state = state
        if state in ENDED:
            self.time_finished = now_ms()
            if state is JobState.SUCCESS:
                self.progress["percent"] = 100.0

    def set_failure(self, exc: BaseException, aborted: bool = False) -> None:
        self.error = str(exc.reason if isinstance(exc, MiddlewareError) else exc) or repr(exc)
        if isinstance(exc, MiddlewareError):
            self.failure = exc
        self.exception = "".join(traceback.format_exception(exc))
        errno = exc.errno if isinstance(exc, MiddlewareError) else None
        self.exc_info = {
            "type": "VALIDATION" if isinstance(exc, ValidationErrors) else type(exc).__name__,
            "errno": errno,
            "errname": errname(errno) if errno is not None else None,
            "extra": exc.extra if isinstance(exc, MiddlewareError) else None,
            "repr": repr(exc),
        }
        if aborted:
            self.exc_info["type"] = "JobAborted"

    # -- record -------------------------------------------------------------------------
    def record(self, admin: bool = True) -> dict[str, Any]:
        """The job as ``core.get_jobs`` returns it; ``exception`` only for admins."""
        return {
            "id": self.id,
            "method": self.method,
            "arguments": self.shown_arguments,
            "message_ids": list(self.message_ids),
            "description": self.description,
            "abortable": self.options.abortable,
            "transient": self.options.transient,
            "logs_path": self.logs.path_str if self.logs is not None else None,
            "logs_excerpt": self._excerpt(),
            "progress": dict(self.progress),
            "result": None if self.result_size is not None else self.result,
            "result_size": self.result_size,
            "error": self.error,
            "exception": self.exception if admin else None,
            "exc_info": self.exc_info,
            "state": self.state.value,
            "time_started": date(self.time_started),
            "time_finished": date(self.time_finished),
            "credentials": self._credentials_record,
            "origin": self.origin,
            "attempt": self.attempt,
        }

    def _excerpt(self) -> str | None:
        """The final excerpt once the log is closed; until then its tail so far."""
        if self.logs_excerpt is not None or self.logs is None:
            return self.logs_excerpt
        return self.logs.live_excerpt()

    def set_result(self, result: Any) -> None:
        """Keep the method's result; one JSON has no form for fails the job with the reason
        (its end must be stored, sent to subscribers and answered)."""
        try:
            jsonc.dumps(result)
        except jsonc.EncodeError as e:
            raise CallError(f"The result cannot be encoded as JSON: {e}", EINVAL) from None
        self.result = result

    def snapshot(self) -> Snapshot:
        """The record and its JSON. Never raises: a field with no JSON form (a progress extra,
        an error's extra) is stored as null rather than leaving the job unstorable."""
        record = self.record(admin=True)
        try:
            return Snapshot(record, jsonc.dumps(record))
        except jsonc.EncodeError as e:
            _unencodable.warning("job %d: fields with no JSON form stored as null: %s", self.id, e)
        record = {key: _encodable(value) for key, value in record.items()}
        return Snapshot(record, jsonc.dumps(record))


def _encodable(value: Any, depth: int = 1) -> Any:
    """``value``, with what has no JSON form in it replaced by None (``depth`` levels into
    objects, so that a progress record keeps its percent when its extra is the culprit)."""
    try:
        jsonc.dumps(value)
    except jsonc.EncodeError:
        pass
    else:
        return value
    if depth > 0 and isinstance(value, dict):
        fixed = {k: _encodable(v, depth - 1) for k, v in value.items()}
        return _encodable(fixed, 0)
    return None


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    # Nobody may be waiting for a job's outcome: do not warn about it.
    if not fut.cancelled():
        fut.exception()
