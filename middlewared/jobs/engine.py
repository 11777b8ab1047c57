"""The job engine: runs one job through its states (progress, pipes, logs, abort, timeout,
retries), stores every transition and publishes it. The queue decides when a job runs.
No sockets."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

from middlewared import jsonc
from middlewared.auth.credentials import Credentials
from middlewared.errors import CallError, MiddlewareError, ValidationErrors
from middlewared.events.bus import EventBus
from middlewared.jobs.events import COLLECTION, JobEvents
from middlewared.jobs.files import JobFiles
from middlewared.jobs.job import ENDED, Job, JobState, Snapshot, now_ms
from middlewared.jobs.logs import DEFAULT_MAX_LOG_BYTES, JobLog
from middlewared.jobs.pipes import Pipes
from middlewared.jobs.progress import ProgressCoalescer
from middlewared.jobs.queue import JobQueue, LocalQueue
from middlewared.jobs.store import JobStore
from middlewared.jobs.unstored import UnstoredEnds
from middlewared.registry import MethodSpec, RetryPolicy
from middlewared.store.base import Op

log = logging.getLogger(__name__)

__all__ = ["COLLECTION", "JobAborted", "JobEngine"]

Invoke = Callable[[Job], Awaitable[Any]]
# Writes stored with a new job's insert, given its id.
ExtraOps = Callable[[int], Sequence[Op]]

# A result larger than this (encoded) is kept in a file of its own, not in the job's record
# (which every page of core.get_jobs and every event carries).
DEFAULT_MAX_RESULT_BYTES = 1024 * 1024


class JobAborted(CallError):
    default_errno = errno.ECANCELED

    def __init__(self, reason: str = "Job aborted") -> None:
        super().__init__(reason)


def resolve_option(
    spec: Callable[[Sequence[Any]], str | None] | str | None, args: list[Any]
) -> Any:
    """A job option given as a value or as a function of the call's arguments."""
    return spec(args) if callable(spec) else spec


class JobEngine:
    """Runs jobs; publishes every visible change on the bus; persists every transition."""

    def __init__(
        self,
        store: JobStore,
        bus: EventBus,
        files: JobFiles,
        invoke: Invoke,
        queue: JobQueue | None = None,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
        max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
    ) -> None:
        self.store = store
        self.max_log_bytes = max_log_bytes
        self.files = files
        self.invoke = invoke
        self.queue: JobQueue = queue or LocalQueue(store)
        self.max_result_bytes = max_result_bytes
        self.live: dict[int, Job] = {}
        # Jobs that have not ended, by owner (a bound per user is checked at each submit).
        self._unended: dict[int | None, int] = {}
        self.events = JobEvents(bus)
        self._progress = ProgressCoalescer(self._publish_progress)
        self._accepting = True
        self._abort_reason = "Job aborted"
        # Endings of jobs whose task was cancelled before it ran (see _task_done).
        self._unstarted: set[asyncio.Task[None]] = set()
        # Ended jobs whose final state waits for the store to take it.
        self._unstored = UnstoredEnds(store, self._forget)
        # Jobs whose start is stored and published at the end of this loop step (_persist_soon).
        self._starting: dict[int, Job] = {}

    @property
    def bus(self) -> EventBus:
        return self.events.bus

    @bus.setter
    def bus(self, bus: EventBus) -> None:
        self.events.bus = bus

    # -- submitting ---------------------------------------------------------------------
    async def submit(
        self,
        spec: MethodSpec,
        args: list[Any],
        shown_args: list[Any],
        credentials: Credentials,
        message_id: Any = None,
        pipes: Pipes | None = None,
        origin: str = "call",
        extra_ops: ExtraOps | None = None,
        lock_key: str | None = None,
    ) -> Job:
        """Create (or merge into) a job and return it once it is durably recorded.

        ``extra_ops(job_id)`` are the writes stored in the job's insert transaction (a
        trigger's fire); a call with them is never merged into another job. ``lock_key``
        locks a job whose method declares no lock (a trigger's jobs, one at a time).

        A call is merged into a waiting job only when it is the same call (method and
        arguments) of the same user and the lock's queue is full; a call that opens pipes
        always gets a job of its own.
        """
        options = spec.job
        assert options is not None, f"{spec.name} is not a job"
        if not self._accepting:
            raise CallError("The server is shutting down", errno.ESHUTDOWN)
        job = Job(
            id=0,
            method=spec.name,
            options=options,
            arguments=args,
            shown_arguments=shown_args,
            credentials=credentials,
            message_id=message_id,
            lock_key=resolve_option(options.lock, args) or lock_key,
            description=resolve_option(options.description, args),
            origin=origin,
        )
        if pipes is not None:
            job.pipes = pipes
        merge = extra_ops is None
        target = self.queue.merge_target(job, options.lock_queue_size) if merge else None
        if target is not None:
            # Counted at once: calls merging into a job not stored yet see each other, so
            # the bound on merged calls holds.
            target.pending_merges += 1
            try:
                await target.persisted
            finally:
                target.pending_merges -= 1
            if message_id is not None:
                target.message_ids.append(message_id)
                # Merges are not stored one by one: the record carries them at its next
                # transition; subscribers hear of it through the progress coalescer.
                self._progress.touch(target)
            log.info("job %d: call %r merged into it", target.id, message_id)
            return target
        job.id = self.queue.allocate_id()
        self._start(job, extra_ops(job.id) if extra_ops is not None else ())
        await job.persisted
        return job

    def _start(self, job: Job, extra_ops: Sequence[Op] = ()) -> None:
        """Register the job, queue its insert, and start its task (which waits for the insert)."""
        if job.options.transient and extra_ops:
            raise CallError(f"{job.method} is transient: it cannot be started by a trigger")
        if job.options.transient:
            # Not stored, but its id is taken for good all the same.
            self.store.reserve(job.id)
            self._launch(job, None, None)
        else:
            snap = job.snapshot()
            self._launch(job, self.store.insert(job, snap, extra_ops), snap)

    def _launch(self, job: Job, write: asyncio.Future[None] | None, snap: Snapshot | None) -> None:
        """Register the job and start its task; ``write`` stores ``snap``, its first record."""
        self.live[job.id] = job
        self._unended[job.owner_id] = self._unended.get(job.owner_id, 0) + 1
        job.counted = True
        job.on_change = self._on_change
        if job.options.logs:
            job.logs = JobLog(self.files.log(job.id), self.max_log_bytes)
        self.queue.add(job)
        if write is not None and snap is not None:
            # ADDED (the record just stored) goes out the moment the write is durable, before
            # anything else can publish about the job: it is the write's first callback, and
            # the job's own later writes (an abort's, a merge's) resolve after this one.
            write.add_done_callback(partial(self._announce, job, snap))
            _chain(write, job.persisted)
        else:
            job.persisted.set_result(None)
        job.task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        job.task.add_done_callback(partial(self._task_done, job))

    def _announce(self, job: Job, snap: Snapshot, write: asyncio.Future[None]) -> None:
        if not write.cancelled() and write.exception() is None:
            self.events.publish(job, snap, added=True)

    # -- running ------------------------------------------------------------------------
    def _task_done(self, job: Job, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step never runs its coroutine (no except, no
        finally): end such a job here, as _run would have."""
        if job.ended or job.done.done():
            return
        ending = asyncio.get_running_loop().create_task(self._end_unstarted(job))
        self._unstarted.add(ending)
        ending.add_done_callback(self._unstarted.discard)

    async def _end_unstarted(self, job: Job) -> None:
        try:
            await asyncio.shield(job.persisted)
        except MiddlewareError as e:
            self._uncount(job)
            self._forget(job)
            job.done.set_exception(e)
        else:
            await self._end(job, JobState.ABORTED, JobAborted(self._abort_reason))
        finally:
            self.queue.release(job)

    async def _run(self, job: Job) -> None:
        try:
            try:
                await asyncio.shield(job.persisted)
            except MiddlewareError as e:
                self._uncount(job)
                self._forget(job)
                job.done.set_exception(e)
                return
            log.debug("job %d (%s) queued", job.id, job.method)
            while not await self._attempt(job):
                log.info("job %d (%s): attempt %d will run", job.id, job.method, job.attempt)
        except asyncio.CancelledError as e:
            reason = e.args[0] if e.args and isinstance(e.args[0], str) else self._abort_reason
            await self._end(job, JobState.ABORTED, JobAborted(reason))
        except Exception as e:
            await self._end(job, JobState.FAILED, e)
        finally:
            self.queue.release(job)

    async def _attempt(self, job: Job) -> bool:
        """Run one attempt. True when the job ended; False when it went back to WAITING to
        be retried (its lock and slot given up meanwhile)."""
        await self.queue.claim(job)
        job.transition(JobState.RUNNING)
        self._persist_soon(job)
        # Routine transitions at DEBUG: two INFO lines per job cost 10-15 % of job
        # throughput (docs/performance.md); failures are logged at WARNING.
        log.debug("job %d (%s) running", job.id, job.method)
        try:
            _check_pipes(job)
            result = await self._invoke(job)
        except Exception as e:
            policy = job.options.retry
            if policy is None or not _retryable(policy, job, e):
                raise
            self._retry_later(job, policy, e)
            return False
        job.set_result(result)
        await self._end(job, JobState.SUCCESS, None)
        return True

    async def _invoke(self, job: Job) -> Any:
        timeout = job.options.timeout
        if timeout is None:
            return await self.invoke(job)
        try:
            async with asyncio.timeout(timeout):
                return await self.invoke(job)
        except TimeoutError:
            raise CallError(f"Job timed out after {timeout} seconds", errno.ETIMEDOUT) from None

    def _retry_later(self, job: Job, policy: RetryPolicy, exc: Exception) -> None:
        """Back to WAITING with the delay of the next attempt; the lock and slot go meanwhile
        to the next job (it queues again behind the lock's waiters)."""
        delay = min(policy.max_delay, policy.base_delay * 2 ** (job.attempt - 1))
        delay *= 1 + random.uniform(-policy.jitter, policy.jitter)
        job.set_failure(exc)
        job.transition(JobState.WAITING)
        job.attempt += 1
        job.run_after = now_ms() + int(delay * 1000)
        self.queue.release(job)
        self.queue.add(job)
        log.warning(
            "job %d (%s) attempt %d failed (%s); retrying in %.1f s",
            job.id,
            job.method,
            job.attempt - 1,
            job.error,
            delay,
        )
        self._persist_and_publish(job)

    async def _end(self, job: Job, state: JobState, exc: BaseException | None) -> None:
        if job.ended:
            return
        self._starting.pop(job.id, None)  # its end is what gets stored and published
        if exc is not None:
            job.set_failure(exc, aborted=state is JobState.ABORTED)
        elif state is JobState.SUCCESS:
            job.error = job.exception = job.exc_info = None  # a retry that succeeded
        job.transition(state)
        self._progress.forget(job)
        self._uncount(job)
        await _close_pipes(job, state)
        if job.logs is not None:
            job.logs_excerpt = job.logs.close()
        if state is JobState.SUCCESS:
            await self._keep_large_result(job)
        stored = True
        if not job.options.transient:
            snap = job.snapshot()
            try:
                await self.store.update(job, snap)
            except Exception as e:
                log.error("job %d: final state not stored yet, kept in memory: %s", job.id, e)
                stored = False
            self.events.publish(job, snap)
        level = logging.DEBUG if state is JobState.SUCCESS else logging.WARNING
        log.log(
            level,
            "job %d (%s) %s%s",
            job.id,
            job.method,
            state.value,
            f": {job.error}" if job.error else "",
        )
        if state is JobState.SUCCESS:
            job.done.set_result(job.result)
        else:
            job.done.set_exception(job.failure or CallError(job.error or state.value))
        if stored:
            self._forget(job)
        else:
            self._unstored.keep(job)

    async def _keep_large_result(self, job: Job) -> None:
        """A result too large for the record goes to a file of its own (``core.job_wait``
        and ``core.job_download_result`` read it); the record says how large it was."""
        result = job.result
        if result is None or isinstance(result, bool | int | float) or job.options.transient:
            return
        encoded = jsonc.dumpb(result)
        if len(encoded) <= self.max_result_bytes:
            return
        path = self.files.result(job.id)
        await asyncio.to_thread(_write_private, path, encoded)
        job.result_size = len(encoded)

    def _forget(self, job: Job) -> None:
        self.live.pop(job.id, None)

    def _uncount(self, job: Job) -> None:
        """The job ended (or was never recorded): it no longer counts as live, and what
        waited for that hears it (once)."""
        if job.counted:
            job.counted = False
            left = self._unended.pop(job.owner_id, 1) - 1
            if left:
                self._unended[job.owner_id] = left
            for callback in job.on_ended:
                callback(job)

    # -- events -------------------------------------------------------------------------
    def _on_change(self, job: Job, progress_only: bool) -> None:
        if job.ended:
            return
        if progress_only:
            self._progress.touch(job)
        else:
            self._persist_and_publish(job)

    def _persist_soon(self, job: Job) -> None:
        """Store and publish the job at the end of this loop step, unless it ends first.

        A job that ends in the step it started in (one that never waits) is then written and
        announced once, as it ended. Nothing is lost: its start and end would have been
        queued together, and a group commit takes all that is queued when it begins.
        """
        if job.options.transient:
            return
        if not self._starting:
            asyncio.get_running_loop().call_soon(self._persist_started)
        self._starting[job.id] = job

    def _persist_started(self) -> None:
        starting, self._starting = self._starting, {}
        for job in starting.values():
            self._persist_and_publish(job)

    def _persist_and_publish(self, job: Job) -> None:
        """A transition: one record, stored and published (the event need not wait)."""
        self._starting.pop(job.id, None)
        if not job.options.transient:
            snap = job.snapshot()
            self.store.update(job, snap)
            self.events.publish(job, snap)

    def _publish_progress(self, job: Job) -> None:
        """Progress: nothing is stored, and the frame is encoded only if a reader takes it."""
        if not job.options.transient:
            self.events.publish(job, None)

    # -- control ------------------------------------------------------------------------
    def get_live(self, job_id: int) -> Job | None:
        return self.live.get(job_id)

    def abort(self, job: Job) -> None:
        """Abort a waiting job, or a running one that is abortable (the caller checked who
        may)."""
        if job.state is JobState.RUNNING and not job.options.abortable:
            raise CallError(f"Job {job.id} ({job.method}) is not abortable", errno.EINVAL)
        if job.task is not None and not job.ended:
            log.info("job %d (%s) abort requested", job.id, job.method)
            job.task.cancel()

    # -- lifecycle ----------------------------------------------------------------------
    def relaunch(self, job: Job) -> None:
        """Run a job recovered after a restart (its row exists: it is updated, not inserted)."""
        snap = job.snapshot()
        self._launch(job, self.store.update(job, snap), snap)

    async def shutdown(self, grace: float) -> None:
        """Stop taking jobs; let running ones finish within ``grace``; abort the rest."""
        self._accepting = False
        tasks = [j.task for j in self.live.values() if j.task is not None]
        running = [t for t in tasks if not t.done()]
        if running and grace > 0:
            await asyncio.wait(running, timeout=grace)
        self._abort_reason = "Job aborted: the server is shutting down"
        for job in list(self.live.values()):
            if job.task is not None and not job.task.done():
                job.task.cancel(self._abort_reason)
        await asyncio.gather(*tasks, *self._unstarted, return_exceptions=True)
        # Last: jobs that ended during the grace may have final states waiting too.
        await self._unstored.store_now()

    def ended_live_ids(self) -> list[int]:
        return [j.id for j in self.live.values() if j.state in ENDED]

    def live_count(self, owner_id: int | None) -> int:
        """Jobs of ``owner_id`` that have not ended yet."""
        return self._unended.get(owner_id, 0)


def _retryable(policy: RetryPolicy, job: Job, exc: Exception) -> bool:
    """Never after a validation error (the input will not get better), nor when the
    attempts are used up, nor for an errno the policy does not name."""
    if job.attempt >= policy.max_attempts or isinstance(exc, ValidationErrors):
        return False
    if policy.errnos:
        return isinstance(exc, MiddlewareError) and exc.errno in policy.errnos
    return True


def _write_private(path: Any, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _check_pipes(job: Job) -> None:
    missing = job.options.pipes - job.pipes.opened
    if missing and job.options.check_pipes:
        how = {"input": "upload through POST /_upload", "output": "call it via core.download"}
        raise CallError(
            f"{job.method} needs its {' and '.join(sorted(missing))} pipe: "
            + "; ".join(how[m] for m in sorted(missing)),
            errno.EPIPE,
        )


async def _close_pipes(job: Job, state: JobState) -> None:
    """End of the job: downloaders see the end (or the failure); uploads are removed."""
    if job.pipes.output is not None:
        await job.pipes.output.close(None if state is JobState.SUCCESS else job.error)
    if job.pipes.input is not None:
        await job.pipes.input.close(None)
        job.pipes.input.discard()


def _chain(source: asyncio.Future[None], target: asyncio.Future[None]) -> None:
    def done(fut: asyncio.Future[None]) -> None:
        if target.done():
            return
        exc = None if fut.cancelled() else fut.exception()
        if exc is None:
            target.set_result(None)
        else:
            target.set_exception(exc if isinstance(exc, MiddlewareError) else CallError(str(exc)))

    source.add_done_callback(done)
