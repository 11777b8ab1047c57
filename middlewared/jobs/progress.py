"""Coalesce a job's rapid progress updates into at most one event per interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from middlewared.jobs.job import Job

DEFAULT_INTERVAL = 0.25


class ProgressCoalescer:
    """The first change is emitted at once, later ones at most every ``interval``; the
    latest value always goes out, and emitting is cheap however often jobs report."""

    def __init__(self, emit: Callable[[Job], None], interval: float = DEFAULT_INTERVAL) -> None:
        self._emit = emit
        self._interval = interval
        self._last: dict[int, float] = {}
        self._scheduled: dict[int, asyncio.TimerHandle] = {}

    def touch(self, job: Job) -> None:
        if job.id in self._scheduled:
            return
        now = time.monotonic()
        last = self._last.get(job.id)
        due = now if last is None else last + self._interval
        if now >= due:
            self._flush(job)
        else:
            loop = asyncio.get_running_loop()
            self._scheduled[job.id] = loop.call_later(due - now, self._flush, job)

    def _flush(self, job: Job) -> None:
        self._scheduled.pop(job.id, None)
        if job.ended:
            return
        self._last[job.id] = time.monotonic()
        self._emit(job)

    def forget(self, job: Job) -> None:
        """The job ended: its final event is emitted by the manager, not here."""
        handle = self._scheduled.pop(job.id, None)
        if handle is not None:
            handle.cancel()
        self._last.pop(job.id, None)
