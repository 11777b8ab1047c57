"""The job engine: queue, locks, concurrency, abort, persistence and events. No sockets."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from middlewared.auth.credentials import CredentialKind, Credentials
from middlewared.errors import Busy, CallError, MiddlewareError, NotFound, PermissionDenied
from middlewared.events.bus import ADDED, CHANGED, REMOVED, Event, EventBus
from middlewared.jobs.job import ENDED, Job, JobState, Snapshot, now_ms
from middlewared.jobs.locks import Locks
from middlewared.jobs.logs import JobLog
from middlewared.jobs.pipes import Pipes
from middlewared.jobs.progress import ProgressCoalescer
from middlewared.jobs.store import JobStore
from middlewared.jobs.unstored import UnstoredEnds
from middlewared.registry import JobOptions, MethodSpec

log = logging.getLogger(__name__)

COLLECTION = "core.get_jobs"

Invoke = Callable[[Job], Awaitable[Any]]


class JobAborted(CallError):
    default_errno = errno.ECANCELED

    def __init__(self, reason: str = "Job aborted") -> None:
        super().__init__(reason)


def _resolve(spec: Callable[[Sequence[Any]], str | None] | str | None, args: list[Any]) -> Any:
    return spec(args) if callable(spec) else spec


class JobManager:
    """Runs jobs; publishes every visible change on the bus; persists every transition."""

    def __init__(self, store: JobStore, bus: EventBus, logs_dir: Path, invoke: Invoke) -> None:
        self.store = store
        self.bus = bus
        self.logs_dir = logs_dir
        self.invoke = invoke
        self.live: dict[int, Job] = {}
        self.locks = Locks()
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._progress = ProgressCoalescer(self._publish_changed)
        self._accepting = True
        self._abort_reason = "Job aborted"
        # Endings of jobs whose task was cancelled before it ran (see _task_done).
        self._unstarted: set[asyncio.Task[None]] = set()
        # Ended jobs whose final state waits for the store to take it.
        self._unstored = UnstoredEnds(store, self._forget)
        # Jobs whose start is stored and published at the end of this loop step (_start_soon).
        self._starting: dict[int, Job] = {}

    # -- submitting ---------------------------------------------------------------------
    async def submit(
        self,
        spec: MethodSpec,
        args: list[Any],
        shown_args: list[Any],
        credentials: Credentials,
        message_id: Any = None,
        pipes: Pipes | None = None,
    ) -> Job:
        """Create (or merge into) a job and return it once it is durably recorded.

        A call that opens pipes always gets a job of its own (pipes cannot be shared).
        """
        options = spec.job
        assert options is not None, f"{spec.name} is not a job"
        if not self._accepting:
            raise CallError("The server is shutting down", errno.ESHUTDOWN)
        lock_key = _resolve(options.lock, args)
        if lock_key is not None and pipes is None:
            merged = await self._merge(lock_key, options, message_id)
            if merged is not None:
                return merged
        job = Job(
            id=self.store.allocate_id(),
            method=spec.name,
            options=options,
            arguments=args,
            shown_arguments=shown_args,
            credentials=credentials,
            message_id=message_id,
            lock_key=lock_key,
            description=_resolve(options.description, args),
        )
        if pipes is not None:
            job.pipes = pipes
        self._start(job)
        await job.persisted
        return job

    async def _merge(self, key: str, options: JobOptions, message_id: Any) -> Job | None:
        if options.lock_queue_size == 0 and self.locks.busy(key):
            raise Busy(f"A job with lock {key!r} is already running")
        target = self.locks.last_waiting(key, options.lock_queue_size)
        if target is None:
            return None
        await target.persisted
        if message_id is not None:
            target.message_ids.append(message_id)
        self._persist_and_publish(target)
        log.info("job %d: call %r merged into it (lock %r)", target.id, message_id, key)
        return target

    def _start(self, job: Job) -> None:
        """Register the job, queue its insert, and start its task (which waits for the insert)."""
        if job.options.transient:
            # Not stored, but its id is taken for good all the same.
            self.store.reserve(job.id)
            self._launch(job, None, None)
        else:
            snap = job.snapshot()
            self._launch(job, self.store.insert(job, snap), snap)

    def _launch(self, job: Job, write: asyncio.Future[None] | None, snap: Snapshot | None) -> None:
        """Register the job and start its task; ``write`` stores ``snap``, its first record."""
        self.live[job.id] = job
        job.on_change = self._on_change
        if job.options.logs:
            job.logs = JobLog(self.logs_dir / f"{job.id}.log")
        if job.lock_key is not None:
            self.locks.enqueue(job.lock_key, job)
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
            self._publish(job, ADDED, snap)

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
            self._forget(job)
            job.done.set_exception(e)
        else:
            await self._end(job, JobState.ABORTED, JobAborted(self._abort_reason))
        finally:
            if job.lock_key is not None:
                self.locks.release(job.lock_key, job)

    async def _run(self, job: Job) -> None:
        try:
            try:
                await asyncio.shield(job.persisted)
            except MiddlewareError as e:
                self._forget(job)
                job.done.set_exception(e)
                return
            log.debug("job %d (%s) queued", job.id, job.method)
            await self._execute(job)
        except asyncio.CancelledError as e:
            reason = e.args[0] if e.args and isinstance(e.args[0], str) else self._abort_reason
            await self._end(job, JobState.ABORTED, JobAborted(reason))
        except Exception as e:
            await self._end(job, JobState.FAILED, e)
        finally:
            if job.lock_key is not None:
                self.locks.release(job.lock_key, job)

    async def _execute(self, job: Job) -> None:
        if job.lock_key is not None:
            await self.locks.turn(job.lock_key, job)
        sem = self._semaphore(job)
        if sem is not None:
            await sem.acquire()
        try:
            job.transition(JobState.RUNNING)
            self._persist_soon(job)
            # Routine transitions at DEBUG: two INFO lines per job cost 10-15 % of job
            # throughput (docs/performance.md); failures are logged at WARNING below.
            log.debug("job %d (%s) running", job.id, job.method)
            _check_pipes(job)
            if job.options.timeout is not None:
                try:
                    async with asyncio.timeout(job.options.timeout):
                        result = await self.invoke(job)
                except TimeoutError:
                    raise CallError(
                        f"Job timed out after {job.options.timeout} seconds", errno.ETIMEDOUT
                    ) from None
            else:
                result = await self.invoke(job)
            job.set_result(result)
            await self._end(job, JobState.SUCCESS, None)
        finally:
            if sem is not None:
                sem.release()

    def _semaphore(self, job: Job) -> asyncio.Semaphore | None:
        limit = job.options.max_concurrency
        if limit is None:
            return None
        sem = self._semaphores.get(job.method)
        if sem is None:
            sem = self._semaphores[job.method] = asyncio.Semaphore(limit)
        return sem

    async def _end(self, job: Job, state: JobState, exc: BaseException | None) -> None:
        if job.ended:
            return
        self._starting.pop(job.id, None)  # its end is what gets stored and published
        if exc is not None:
            job.set_failure(exc, aborted=state is JobState.ABORTED)
        job.transition(state)
        self._progress.forget(job)
        await _close_pipes(job, state)
        if job.logs is not None:
            job.logs_excerpt = job.logs.close()
        stored = True
        if not job.options.transient:
            snap = job.snapshot()
            try:
                await self.store.update(job, snap)
            except Exception as e:
                log.error("job %d: final state not stored yet, kept in memory: %s", job.id, e)
                stored = False
            self._publish(job, CHANGED, snap)
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

    def _forget(self, job: Job) -> None:
        self.live.pop(job.id, None)

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
            self._publish(job, CHANGED, snap)

    def _publish_changed(self, job: Job) -> None:
        """Progress: nothing is stored, and the frame is encoded only if a reader takes it."""
        self._publish(job, CHANGED)

    def _publish(self, job: Job, msg: str, snap: Snapshot | None = None) -> None:
        if job.options.transient or not self.bus.has_subscribers(COLLECTION):
            return
        self.bus.publish(_event(job, msg, snap))

    def publish_removed(self, job_ids: list[int]) -> None:
        if self.bus.has_subscribers(COLLECTION):
            for job_id in job_ids:
                self.bus.publish(Event(COLLECTION, REMOVED, job_id, None, None))

    # -- control ------------------------------------------------------------------------
    def get_live(self, job_id: int, credentials: Credentials) -> Job:
        job = self.live.get(job_id)
        if job is None or not credentials.may_read(job.credentials.username):
            raise NotFound(f"Job {job_id} is not running")
        return job

    def abort(self, job_id: int, credentials: Credentials) -> None:
        job = self.get_live(job_id, credentials)
        if job.state is JobState.RUNNING and not job.options.abortable:
            raise CallError(f"Job {job_id} ({job.method}) is not abortable", errno.EINVAL)
        if not credentials.admin and job.credentials.username != credentials.username:
            raise PermissionDenied(f"Job {job_id} belongs to another user")
        if job.task is not None and not job.ended:
            log.info("job %d (%s) abort requested", job.id, job.method)
            job.task.cancel()

    # -- lifecycle ----------------------------------------------------------------------
    async def recover(
        self,
        lookup: Callable[[str], MethodSpec | None],
        credentials_for: Callable[[str], Credentials | None],
    ) -> int:
        """After a restart: fail (or re-queue) the jobs that were pending. Returns the count.

        A job is re-queued only when its method is declared safe to retry, it had no secret
        arguments (those were never stored) and its owner still exists: it runs again with
        that owner's credentials as they are now.
        """
        await self.store.load_counter()
        pending = await self.store.unfinished()
        for record, retry in pending:
            owner = (record.get("credentials") or {}).get("data", {}).get("username")
            spec = lookup(record["method"]) if retry else None
            creds = credentials_for(owner) if spec is not None and owner else None
            if (
                spec is not None
                and spec.job is not None
                and creds is not None
                and not (spec.secret_params)
            ):
                self._requeue(spec, record, creds)
                continue
            was = record["state"]
            record["state"] = JobState.FAILED.value
            record["time_finished"] = {"$date": now_ms()}
            record["error"] = f"Interrupted: the server stopped while the job was {was}"
            record["exception"] = record["error"]
            record["exc_info"] = {
                "type": "Interrupted",
                "errno": errno.EINTR,
                "errname": "EINTR",
                "extra": None,
                "repr": record["error"],
            }
            await self.store.save_record(record, owner)
            log.warning(
                "job %d (%s) was %s when the server stopped: marked FAILED",
                record["id"],
                record["method"],
                was,
            )
        return len(pending)

    def _requeue(self, spec: MethodSpec, record: dict[str, Any], creds: Credentials) -> None:
        assert spec.job is not None
        kind = str((record.get("credentials") or {}).get("type"))
        if kind in CredentialKind.__members__:
            creds = dataclasses.replace(creds, kind=CredentialKind(kind))
        job = Job(
            record["id"],
            spec.name,
            spec.job,
            list(record["arguments"]),
            list(record["arguments"]),
            creds,
            None,
            _resolve(spec.job.lock, record["arguments"]),
            record["description"],
        )
        job.message_ids = list(record.get("message_ids") or [])
        job.time_started = (record.get("time_started") or {}).get("$date", job.time_started)
        snap = job.snapshot()
        self._launch(job, self.store.update(job, snap), snap)
        log.warning("job %d (%s) re-queued after a restart", job.id, job.method)

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


def _event(job: Job, msg: str, snap: Snapshot | None) -> Event:
    """The event for ``job``: from ``snap`` (and its JSON) when given, else as it is now."""
    if snap is None:
        fields = job.record(admin=False)
        exception = job.exception
        encoded = None
    else:
        fields, exception, encoded = snap.record, snap.record["exception"], snap.encoded
        if exception:
            fields = {**fields, "exception": None}
    admin = {"exception": exception} if exception else None
    return Event(COLLECTION, msg, job.id, fields, job.credentials.username, admin, encoded)


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
