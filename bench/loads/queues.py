"""No-op jobs on the queue references (huey on SQLite, arq and rq on Redis): enqueue a batch
and wait for every result, then one job at a time. Producers poll for results every
millisecond or less (huey, arq) or block on Redis (rq), so polling does not set the pace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.loads.common import CpuWindow
from bench.optional import load
from bench.references.tasks import QUEUE, huey_app
from bench.stats import latency_ms

RQ_TASK = "bench.references.tasks.noop"
TIMEOUT = 120

Batch = Callable[[int], Awaitable[None]]


def _huey(spec: dict[str, Any]) -> Batch:
    _app, task = huey_app(spec["db"])

    async def batch(n: int) -> None:
        for r in [task() for _ in range(n)]:
            r.get(blocking=True, timeout=TIMEOUT, backoff=1.0, max_delay=0.0005)

    return batch


async def _arq(spec: dict[str, Any]) -> Batch:
    connections: Any = load("arq.connections")
    pool = await connections.create_pool(
        connections.RedisSettings.from_dsn(spec["redis"]), default_queue_name=QUEUE
    )
    await pool.flushdb()
    limit = asyncio.Semaphore(128)

    async def enqueue() -> Any:
        async with limit:
            return await pool.enqueue_job("noop")

    async def batch(n: int) -> None:
        jobs = await asyncio.gather(*(enqueue() for _ in range(n)))
        for job in jobs:
            await job.result(timeout=TIMEOUT, poll_delay=0.0005)

    return batch


def _rq(spec: dict[str, Any]) -> Batch:
    rq: Any = load("rq")
    redis: Any = load("redis")
    conn = redis.Redis.from_url(spec["redis"])
    conn.flushdb()
    queue = rq.Queue(QUEUE, connection=conn)

    async def batch(n: int) -> None:
        for job in [queue.enqueue(RQ_TASK) for _ in range(n)]:
            if job.latest_result(timeout=TIMEOUT) is None:
                raise TimeoutError(f"rq job {job.id} gave no result")

    return batch


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: backend (huey|arq|rq), db or redis, count, warmup, sequential, server_pid."""
    backend = spec["backend"]
    if backend == "huey":
        batch = _huey(spec)
    elif backend == "arq":
        batch = await _arq(spec)
    else:
        batch = _rq(spec)
    await batch(spec["warmup"])
    cpu = CpuWindow(spec.get("server_pid"))
    cpu.start()
    await batch(spec["count"])
    cpu.stop()
    lat: list[float] = []
    for _ in range(spec["sequential"]):
        t0 = time.perf_counter()
        await batch(1)
        lat.append(time.perf_counter() - t0)
    count = spec["count"]
    return {
        "cases": {
            "throughput": {"jobs_per_s": count / cpu.wall, **cpu.per(count)},
            "sequential": {"jobs_per_s": len(lat) / (sum(lat) or 1), **latency_ms(lat)},
        }
    }
