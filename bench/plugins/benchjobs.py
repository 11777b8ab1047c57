"""What the benchmarks call (``--plugins-dir bench/plugins``, the only plugin dir they load,
so no test plugin's listener runs beside them): an echo, no-op jobs, a failing job and a
progress pulse, and a no-op that says when it ran (the triggers scenario)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import CallError
from middlewared.jobs.job import Job
from middlewared.registry import JobOptions, Param, Registry

registry = Registry("bench", "Benchmark helpers")


@registry.method(params=[Param("value", {})])
async def echo(ctx: CallContext, value: Any) -> Any:
    """Return the value given (the RPC scenario's echo)."""
    return value


@registry.method(params=[Param("message", {"type": "string"})], job=JobOptions())
async def fail(ctx: CallContext, job: Job, message: str) -> None:
    """Fail with CallError(message) (failed jobs in the store scenario)."""
    raise CallError(message)


@registry.method(returns={"type": "null"}, job=JobOptions())
async def noop(ctx: CallContext, job: Job) -> None:
    """Do nothing, without ever awaiting: such a job ends in the loop step it starts in,
    which lets the server skip its RUNNING write and event."""


@registry.method(returns={"type": "number"}, job=JobOptions())
async def stamp(ctx: CallContext, job: Job) -> float:
    """Do nothing but read the clock: the wall-clock time (Unix seconds) the job's code ran
    at, so that a trigger's fire can be aged from its due time to its job's start. Never
    awaits, as ``bench.noop``."""
    return time.time()


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
