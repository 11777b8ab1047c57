"""Job locks: jobs sharing a lock run one at a time, in arrival order, with a bounded queue."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

from middlewared.jobs.job import Job


@dataclass
class LockQueue:
    running: Job | None = None
    waiting: deque[Job] = field(default_factory=deque)
    turns: dict[int, asyncio.Event] = field(default_factory=dict)


class Locks:
    """FIFO queues by lock name. A job enters with ``enqueue`` and waits for ``turn``."""

    def __init__(self) -> None:
        self._queues: dict[str, LockQueue] = {}

    def queue(self, key: str) -> LockQueue | None:
        return self._queues.get(key)

    def busy(self, key: str) -> bool:
        q = self._queues.get(key)
        return q is not None and (q.running is not None or bool(q.waiting))

    def waiting_count(self, key: str) -> int:
        q = self._queues.get(key)
        return 0 if q is None else len(q.waiting)

    def waiting(self, key: str) -> list[Job]:
        """The jobs waiting for the lock, in arrival order."""
        q = self._queues.get(key)
        return [] if q is None else list(q.waiting)

    def enqueue(self, key: str, job: Job) -> None:
        q = self._queues.setdefault(key, LockQueue())
        q.waiting.append(job)
        q.turns[job.id] = asyncio.Event()
        self._advance(q)

    async def turn(self, key: str, job: Job) -> None:
        q = self._queues[key]
        await q.turns[job.id].wait()

    def release(self, key: str, job: Job) -> None:
        q = self._queues.get(key)
        if q is None:
            return
        q.turns.pop(job.id, None)
        if q.running is job:
            q.running = None
        else:
            try:
                q.waiting.remove(job)
            except ValueError:
                pass
        self._advance(q)
        if q.running is None and not q.waiting:
            del self._queues[key]

    def _advance(self, q: LockQueue) -> None:
        if q.running is None and q.waiting:
            q.running = q.waiting.popleft()
            q.turns[q.running.id].set()
