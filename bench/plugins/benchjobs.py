"""Jobs for the benchmarks (``--plugins-dir bench/plugins``): no-ops and a progress pulse."""

from __future__ import annotations

import asyncio
import time

from middlewared.context import CallContext
from middlewared.jobs.job import Job
from middlewared.registry import JobOptions, Param, Registry

registry = Registry("bench", "Benchmark helpers")


@registry.method(returns={"type": "null"}, job=JobOptions())
async def noop(ctx: CallContext, job: Job) -> None:
    """Do nothing, without ever awaiting: such a job ends in the loop step it starts in,
    which lets the server skip its RUNNING write and event."""


@registry.method(returns={"type": "null"}, job=JobOptions())
async def yield_once(ctx: CallContext, job: Job) -> None:
    """Do nothing but await once, as any job that does real work does: what is left is the
    cost of a persisted job (the headline of the jobs scenario)."""
    await asyncio.sleep(0)


@registry.method(
    params=[
        Param("count", {"type": "integer", "minimum": 1}),
        Param("interval", {"type": "number", "minimum": 0}),
        Param("offset", {"type": "number", "minimum": 0}, required=False, default=0),
    ],
    returns={"type": "integer"},
    job=JobOptions(),
)
async def pulse(ctx: CallContext, job: Job, count: int, interval: float, offset: float) -> int:
    """After ``offset`` seconds, report progress ``count`` times, ``interval`` apart; each
    report carries its wall-clock time in ``extra.t`` so subscribers can age it. Reports are
    due at fixed times (no drift), so every contender offers as many in a window."""
    clock = asyncio.get_running_loop().time
    start = clock() + offset
    for i in range(1, count + 1):
        await asyncio.sleep(max(0.0, start + (i - 1) * interval - clock()))
        job.set_progress(100.0 * i / count, f"pulse {i} of {count}", {"t": time.time()})
    return count
