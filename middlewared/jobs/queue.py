"""Which job runs next: ids, locks, merging of identical calls, per-method concurrency and
retry delays. The engine runs jobs; the queue decides when.

``LocalQueue`` keeps all of it in memory: the single-node default. Its interface is the one
a queue in a shared store implements for several nodes (ids from a sequence, ``claim``
with ``FOR UPDATE SKIP LOCKED`` on the job's row, locks and concurrency as rows, a claim
renewed by heartbeats), which is why the job rows carry ``lock_key``, ``attempt``,
``run_after`` and ``node`` already.
"""

from __future__ import annotations

import asyncio
import errno
import time
from collections.abc import Callable
from typing import Protocol

from middlewared import jsonc
from middlewared.errors import Busy
from middlewared.jobs.job import Job
from middlewared.jobs.locks import Locks

# A merged job answers at most this many calls; past it an identical call is refused
# (EBUSY) rather than let one record grow without bound.
MAX_MERGED_CALLS = 100


class IdSource(Protocol):
    def allocate_id(self) -> int: ...


class JobQueue(Protocol):
    def allocate_id(self) -> int:
        """A new job id: unique, never reused, increasing."""

    def merge_target(self, job: Job, queue_size: int | None) -> Job | None:
        """The waiting job an identical call should join instead of queueing ``job``
        (None: queue it); raises Busy when the lock's queue is full and nothing can merge."""

    def add(self, job: Job) -> None:
        """``job`` is waiting: it takes its place (in arrival order under its lock)."""

    async def claim(self, job: Job) -> None:
        """Return once ``job`` may run: its lock's turn, a concurrency slot of its method
        and its ``run_after`` have all come."""

    def release(self, job: Job) -> None:
        """``job`` left the queue or stopped running (ended, aborted, or waiting to retry):
        its lock and slot go to the next."""


class LocalQueue:
    def __init__(self, ids: IdSource, clock: Callable[[], float] = time.time) -> None:
        self._ids = ids
        self.clock = clock
        self.locks = Locks()
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self._holding: set[int] = set()  # jobs holding a concurrency slot

    def allocate_id(self) -> int:
        return self._ids.allocate_id()

    def merge_target(self, job: Job, queue_size: int | None) -> Job | None:
        key = job.lock_key
        if key is None or job.pipes.opened:
            return None  # a call that opens pipes always gets a job of its own
        if queue_size == 0 and self.locks.busy(key):
            raise Busy(f"A job with lock {key!r} is already running")
        if queue_size in (None, 0) or self.locks.waiting_count(key) < queue_size:
            return None
        same = _merge_key(job)
        for waiting in reversed(self.locks.waiting(key)):
            if not waiting.ended and _merge_key(waiting) == same:
                if len(waiting.message_ids) + waiting.pending_merges >= MAX_MERGED_CALLS:
                    break
                return waiting
        raise Busy(
            f"{queue_size} jobs with lock {key!r} are already waiting, and none is the same "
            "call of the same user (only identical calls are merged)",
            errno.EBUSY,
        )

    def add(self, job: Job) -> None:
        if job.lock_key is not None:
            self.locks.enqueue(job.lock_key, job)

    async def claim(self, job: Job) -> None:
        if job.run_after is not None:
            delay = job.run_after / 1000 - self.clock()
            if delay > 0:
                await asyncio.sleep(delay)
        if job.lock_key is not None:
            await self.locks.turn(job.lock_key, job)
        sem = self._semaphore(job)
        if sem is not None:
            await sem.acquire()
            self._holding.add(job.id)

    def release(self, job: Job) -> None:
        if job.id in self._holding:
            self._holding.discard(job.id)
            self._semaphores[job.method].release()
        if job.lock_key is not None:
            self.locks.release(job.lock_key, job)

    def _semaphore(self, job: Job) -> asyncio.Semaphore | None:
        limit = job.options.max_concurrency
        if limit is None:
            return None
        sem = self._semaphores.get(job.method)
        if sem is None:
            sem = self._semaphores[job.method] = asyncio.Semaphore(limit)
        return sem


def _merge_key(job: Job) -> tuple[str, int | None, str]:
    """Calls merge only when they are the same call by the same user."""
    return job.method, job.owner_id, jsonc.dumps(job.arguments)
