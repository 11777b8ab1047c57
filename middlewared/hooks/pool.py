"""The run queue: each script's runs one at a time in event order, different scripts at
once up to the pool's bound, so a hung script holds one slot (until its timeout) and
nothing else. Waiting runs are bounded per script and in bytes over all; a run past either
bound is dropped, counted and reported."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from middlewared.hooks.record import Run, RunRecord

log = logging.getLogger(__name__)

# Runs of one script waiting behind the one that runs.
MAX_WAITING_PER_SCRIPT = 10_000
# Bytes all waiting runs may hold (their arguments and stdin).
MAX_WAITING_BYTES = 64 * 1024 * 1024

Execute = Callable[[Run], Awaitable[RunRecord]]
Done = Callable[[RunRecord], None]
Dropped = Callable[[Run, str, int], None]


@dataclass
class Counters:
    submitted: int = 0
    finished: int = 0
    dropped: int = 0


class HookPool:
    def __init__(
        self,
        execute: Execute,
        done: Done,
        dropped: Dropped,
        concurrency: int,
        max_waiting_per_script: int = MAX_WAITING_PER_SCRIPT,
        max_waiting_bytes: int = MAX_WAITING_BYTES,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._execute = execute
        self._done = done
        # ``dropped(run, why, count)``: told of the first drop of a script and every 1000th.
        self._dropped = dropped
        self.concurrency = concurrency
        self.max_waiting_per_script = max_waiting_per_script
        self.max_waiting_bytes = max_waiting_bytes
        self._waiting: dict[str, deque[Run]] = {}
        self._waiting_bytes = 0
        # Scripts that run now or are in ``_ready`` (one entry each: order per script).
        self._scheduled: set[str] = set()
        self._ready: deque[str] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self._drops: dict[str, int] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self.counters = Counters()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def submit(self, run: Run) -> bool:
        """Queue ``run`` behind its script's earlier runs; False when it was dropped."""
        if self._closed:
            return False
        key = str(run.script)
        queue = self._waiting.setdefault(key, deque())
        why = None
        if len(queue) >= self.max_waiting_per_script:
            why = f"{len(queue)} runs of it already wait"
        elif self._waiting_bytes + run.size > self.max_waiting_bytes:
            why = f"waiting runs already hold {self._waiting_bytes} bytes"
        if why is not None:
            if not queue:
                del self._waiting[key]
            self._drop(key, run, why)
            return False
        self.counters.submitted += 1
        queue.append(run)
        self._waiting_bytes += run.size
        self._idle.clear()
        if key not in self._scheduled:
            self._scheduled.add(key)
            self._ready.append(key)
        self._pump()
        return True

    def _drop(self, key: str, run: Run, why: str) -> None:
        self.counters.dropped += 1
        count = self._drops.get(key, 0) + 1
        self._drops[key] = count
        if count == 1 or count % 1000 == 0:
            self._dropped(run, why, count)

    def _pump(self) -> None:
        while self._ready and len(self._running) < self.concurrency:
            key = self._ready.popleft()
            run = self._waiting[key].popleft()
            self._waiting_bytes -= run.size
            task = asyncio.create_task(self._one(key, run), name=f"hook {run.event}")
            self._running.add(task)

    async def _one(self, key: str, run: Run) -> None:
        task = asyncio.current_task()
        try:
            try:
                record = await self._execute(run)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.exception("hook %s (%s) could not be run", run.script, run.event)
                record = RunRecord(run.event, key, run.args, 0.0, 0.0, None, error=repr(e))
            self.counters.finished += 1
            self._done(record)
        finally:
            if task is not None:
                self._running.discard(task)
            self._next(key)

    def _next(self, key: str) -> None:
        """``key``'s run ended: its next one waits its turn behind the scripts ready now."""
        if self._closed:
            return
        if self._waiting.get(key):
            self._ready.append(key)
        else:
            self._waiting.pop(key, None)
            self._scheduled.discard(key)
        self._pump()
        if not self._running and not self._ready:
            self._idle.set()

    async def drain(self) -> None:
        """Until nothing runs or waits (tests)."""
        await self._idle.wait()

    async def close(self) -> int:
        """Stop: waiting runs are dropped (their count is returned), running ones ended."""
        self._closed = True
        dropped = self.waiting
        self._waiting.clear()
        self._ready.clear()
        self._waiting_bytes = 0
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._idle.set()
        return dropped
