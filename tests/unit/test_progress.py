"""ProgressCoalescer: first change at once, bursts coalesced, the latest always goes out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from middlewared.auth.credentials import INTERNAL
from middlewared.jobs.job import Job, JobState
from middlewared.jobs.progress import ProgressCoalescer
from middlewared.registry import JobOptions

# Tiny, so the tests that wait for a scheduled flush finish quickly; they wait on the
# emit callback, never on the clock.
TINY = 0.01
# Long enough that nothing scheduled fires during a test.
FOREVER = 3600.0


class FakeClock:
    """Stands for the ``time`` module inside middlewared.jobs.progress."""

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A monotonic clock that has run for a long while (its epoch is undefined)."""
    fake = FakeClock(1_000_000.0)
    monkeypatch.setattr("middlewared.jobs.progress.time", fake)
    return fake


def make_job(job_id: int = 1) -> Job:
    return Job(job_id, "test.job", JobOptions(), [], [], INTERNAL)


class Recorder:
    """The emit callback: records the percent each emission carried; ``reached`` is set
    once an emission carries ``target``."""

    def __init__(self, target: float | None = None) -> None:
        self.emitted: list[tuple[int, float | None]] = []
        self.target = target
        self.reached = asyncio.Event()

    def __call__(self, job: Job) -> None:
        percent = job.progress["percent"]
        self.emitted.append((job.id, percent))
        if percent == self.target:
            self.reached.set()


async def timer_barrier(delay: float) -> None:
    """Wait until a timer scheduled now for ``delay`` has fired: the only way to show that
    something scheduled earlier for less than ``delay`` did NOT happen."""
    fired = asyncio.Event()
    asyncio.get_running_loop().call_later(delay, fired.set)
    await fired.wait()


def progress(job: Job, coalescer: ProgressCoalescer, percent: float) -> None:
    job.set_progress(percent)
    coalescer.touch(job)


async def test_first_update_is_emitted_at_once(clock: FakeClock) -> None:
    rec = Recorder()
    coalescer = ProgressCoalescer(rec, FOREVER)
    job = make_job()
    progress(job, coalescer, 5)
    assert rec.emitted == [(1, 5.0)]
    coalescer.forget(job)


async def test_a_burst_is_coalesced_until_the_interval(clock: FakeClock) -> None:
    rec = Recorder()
    coalescer = ProgressCoalescer(rec, FOREVER)
    job = make_job()
    for percent in range(100):
        progress(job, coalescer, percent)
    assert rec.emitted == [(1, 0.0)]
    coalescer.forget(job)


async def test_jobs_are_coalesced_separately(clock: FakeClock) -> None:
    rec = Recorder()
    coalescer = ProgressCoalescer(rec, FOREVER)
    jobs = [make_job(i) for i in range(1, 4)]
    for job in jobs:
        progress(job, coalescer, 10)
        progress(job, coalescer, 20)
    assert rec.emitted == [(1, 10.0), (2, 10.0), (3, 10.0)]
    for job in jobs:
        coalescer.forget(job)


async def test_the_latest_value_is_emitted_after_the_interval() -> None:
    rec = Recorder(target=99.0)
    coalescer = ProgressCoalescer(rec, TINY)
    job = make_job()
    for percent in range(100):
        progress(job, coalescer, percent)
    await rec.reached.wait()
    assert rec.emitted[0] == (1, 0.0)
    assert rec.emitted[-1] == (1, 99.0)
    # Never the same value twice in a row, and in the order reported.
    values = [p for _, p in rec.emitted if p is not None]
    assert values == sorted(set(values))
    coalescer.forget(job)


async def test_each_later_burst_is_flushed_too() -> None:
    rec = Recorder(target=30.0)
    coalescer = ProgressCoalescer(rec, TINY)
    job = make_job()
    progress(job, coalescer, 10)
    progress(job, coalescer, 20)
    rec.target = 20.0
    await rec.reached.wait()
    rec.reached.clear()
    rec.target = 30.0
    progress(job, coalescer, 25)
    progress(job, coalescer, 30)
    await rec.reached.wait()
    assert rec.emitted[-1] == (1, 30.0)
    coalescer.forget(job)


async def test_nothing_is_emitted_after_forget() -> None:
    rec = Recorder()
    coalescer = ProgressCoalescer(rec, TINY)
    job = make_job()
    progress(job, coalescer, 1)
    progress(job, coalescer, 2)  # scheduled for later
    coalescer.forget(job)
    await timer_barrier(TINY * 5)
    assert rec.emitted == [(1, 1.0)]


async def test_nothing_is_emitted_once_the_job_ended() -> None:
    rec = Recorder()
    coalescer = ProgressCoalescer(rec, TINY)
    job = make_job()
    progress(job, coalescer, 1)
    progress(job, coalescer, 2)  # scheduled for later
    job.transition(JobState.FAILED)
    await timer_barrier(TINY * 5)
    assert rec.emitted == [(1, 1.0)]


async def test_an_ended_job_is_never_emitted(clock: FakeClock) -> None:
    rec = Recorder()
    coalescer = ProgressCoalescer(rec, FOREVER)
    job = make_job()
    job.transition(JobState.ABORTED)
    coalescer.touch(job)
    assert rec.emitted == []


async def test_after_forget_the_next_update_is_emitted_at_once(clock: FakeClock) -> None:
    rec = Recorder()
    coalescer = ProgressCoalescer(rec, FOREVER)
    job = make_job()
    progress(job, coalescer, 1)
    coalescer.forget(job)
    progress(job, coalescer, 2)
    assert rec.emitted == [(1, 1.0), (1, 2.0)]
    coalescer.forget(job)


async def test_forget_of_an_unknown_job_is_harmless() -> None:
    emit: Callable[[Job], None] = Recorder()
    ProgressCoalescer(emit).forget(make_job())


async def test_once_the_interval_passed_an_update_is_emitted_at_once(clock: FakeClock) -> None:
    rec = Recorder()
    coalescer = ProgressCoalescer(rec, 10.0)
    job = make_job()
    progress(job, coalescer, 1)
    clock.now += 10.0
    progress(job, coalescer, 2)
    assert rec.emitted == [(1, 1.0), (1, 2.0)]
    coalescer.forget(job)


async def test_first_update_is_at_once_whatever_the_clock_reads(clock: FakeClock) -> None:
    clock.now = 0.1  # e.g. a machine booted a moment ago: monotonic counts from boot
    rec = Recorder()
    coalescer = ProgressCoalescer(rec, 0.25)
    job = make_job()
    progress(job, coalescer, 5)
    coalescer.forget(job)
    assert rec.emitted == [(1, 5.0)]
