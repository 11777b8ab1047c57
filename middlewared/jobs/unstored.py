"""Final states the store refused (a full or read-only disk), written once it takes them.

Such a job has ended (its caller has its outcome, subscribers its last event); it stays
among the live jobs so that queries show its true end, and leaves them once stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from middlewared.jobs.job import Job
from middlewared.jobs.store import JobStore

log = logging.getLogger(__name__)

# Waits between tries: doubling from the first to the longest.
FIRST_RETRY_SECONDS = 0.25
LONGEST_RETRY_SECONDS = 5.0


class UnstoredEnds:
    def __init__(self, store: JobStore, stored: Callable[[Job], None]) -> None:
        self.store = store
        self._stored = stored  # called once a job's final state is written
        self._retries: dict[int, tuple[Job, asyncio.Task[None]]] = {}

    def __len__(self) -> int:
        return len(self._retries)

    def keep(self, job: Job) -> None:
        task = asyncio.create_task(self._retry(job), name=f"job-{job.id}-store")
        self._retries[job.id] = (job, task)
        task.add_done_callback(lambda _t: self._retries.pop(job.id, None))

    async def _retry(self, job: Job) -> None:
        delay = FIRST_RETRY_SECONDS
        while True:
            await asyncio.sleep(delay)
            try:
                await self.store.update(job, job.snapshot())
            except Exception as e:
                log.debug("job %d: final state still not stored: %s", job.id, e)
                delay = min(delay * 2, LONGEST_RETRY_SECONDS)
                continue
            log.info("job %d: final state stored", job.id)
            self._stored(job)
            return

    async def store_now(self) -> None:
        """One last try for each (at shutdown); what still fails reads as interrupted after
        the restart."""
        for job, retry in list(self._retries.values()):
            retry.cancel()
            try:
                await self.store.update(job, job.snapshot())
            except Exception as e:
                log.error("job %d: final state lost (%s); it will read as interrupted", job.id, e)
            else:
                self._stored(job)
