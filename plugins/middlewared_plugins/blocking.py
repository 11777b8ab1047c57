"""Blocking work run off the event loop, reporting bytes done, stopped between chunks when
the job is aborted."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

from middlewared.jobs.job import Job

T = TypeVar("T")
Progress = Callable[[int], None]


class Stopped(Exception):
    """The job was aborted: the blocking work stopped at its next chunk."""


async def run_blocking(
    job: Job, total: int, verb: str, fn: Callable[[Progress, threading.Event], T]
) -> T:
    """``fn(progress, stop)`` in a thread: ``progress(done)`` reports "<verb> N of M bytes",
    ``stop`` is set when the caller is cancelled, and the cancellation is raised only once
    ``fn`` has returned (so nothing it holds is closed under it)."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()

    def report(done: int) -> None:
        percent = 100.0 * done / total if total else 100.0
        job.set_progress(percent, f"{verb} {done} of {total} bytes")

    def progress(done: int) -> None:
        loop.call_soon_threadsafe(report, done)

    report(0)
    task = asyncio.ensure_future(asyncio.to_thread(fn, progress, stop))
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as e:
            cancelled = e
            stop.set()
        except BaseException:
            break
    if cancelled is not None:
        task.exception()  # retrieved: it is the cancellation that is raised
        raise cancelled
    return task.result()
