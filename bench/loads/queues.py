"""No-op jobs on the queue references, N in flight, each producer as concurrent as its
library allows: huey (on SQLite) from a thread that keeps a window of N jobs in flight and
reads their results with one ``peek_many`` a sweep; arq (on Redis) from N coroutines whose
results one sweeper reads with one MGET; rq (on Redis) from N threads, each blocking on its
job's result. A sweep that finds nothing pauses 0.2 ms."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.loads.common import CpuWindow, level_metrics
from bench.optional import load
from bench.references.tasks import QUEUE, huey_app

RQ_TASK = "bench.references.tasks.noop"
TIMEOUT = 120
# huey: producer threads at most (each with its own SQLite connection). One keeps up: 2 and
# 4 measured no faster and with 3-5 times the p99, contending for SQLite's write lock.
# Then the pause between result sweeps that found nothing.
HUEY_THREADS = 1
SWEEP_PAUSE = 0.0002
# Runs one closed-loop window of ``inflight`` jobs until ``deadline``; returns latencies.
Level = Callable[[int, float], Awaitable[list[float]]]


def _threads(count: int, target: Callable[[int, list[float]], None]) -> list[float]:
    """Run ``target(i, lat)`` in ``count`` threads; their latencies, together."""
    lat: list[float] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            target(i, lat)
        except BaseException as e:  # handed to the caller below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT + 60)
    if errors:
        raise errors[0]
    return lat


def _huey(spec: dict[str, Any]) -> Level:
    apps = [huey_app(spec["db"]) for _ in range(HUEY_THREADS)]

    def window(app: Any, task: Any, size: int, deadline: float, lat: list[float]) -> None:
        pending: dict[str, float] = {}
        clock = time.perf_counter
        while pending or clock() < deadline:
            while len(pending) < size and clock() < deadline:
                pending[task().id] = clock()
            ready = app.storage.peek_many(list(pending))
            now = clock()
            for key in ready:
                lat.append(now - pending.pop(key))
            if ready:
                app.storage.sql(
                    f"delete from kv where queue = ? and key in ({','.join('?' * len(ready))})",
                    (app.storage.name, *ready),
                    commit=True,
                )
            else:
                time.sleep(SWEEP_PAUSE)
            if clock() > deadline + TIMEOUT:
                raise TimeoutError(f"huey: {len(pending)} jobs gave no result")

    async def level(inflight: int, deadline: float) -> list[float]:
        threads = min(inflight, HUEY_THREADS)
        sizes = [inflight // threads + (i < inflight % threads) for i in range(threads)]

        def one(i: int, lat: list[float]) -> None:
            window(*apps[i], sizes[i], deadline, lat)

        return await asyncio.to_thread(_threads, threads, one)

    return level


async def _arq(spec: dict[str, Any]) -> Level:
    connections: Any = load("arq.connections")
    constants: Any = load("arq.constants")
    jobs: Any = load("arq.jobs")
    pool = await connections.create_pool(
        connections.RedisSettings.from_dsn(spec["redis"]), default_queue_name=QUEUE
    )
    await pool.flushdb()
    prefix: str = constants.result_key_prefix
    # Job id -> the future its producer waits on: one sweeper reads every pending result
    # with one MGET, where each job's own result() would poll Redis by itself.
    pending: dict[str, asyncio.Future[None]] = {}

    async def sweeper(stop: asyncio.Event) -> None:
        while not stop.is_set() or pending:
            ids = list(pending)
            values = await pool.mget([prefix + i for i in ids]) if ids else []
            for job_id, value in zip(ids, values, strict=True):
                if value is None:
                    continue
                fut = pending.pop(job_id)
                if jobs.deserialize_result(value).success:
                    fut.set_result(None)
                else:
                    fut.set_exception(RuntimeError(f"arq job {job_id} failed"))
            if not any(v is not None for v in values):
                await asyncio.sleep(SWEEP_PAUSE)

    async def producer(deadline: float, lat: list[float]) -> None:
        clock = time.perf_counter
        loop = asyncio.get_running_loop()
        while (t0 := clock()) < deadline:
            job = await pool.enqueue_job("noop")
            done = pending[job.job_id] = loop.create_future()
            await asyncio.wait_for(done, TIMEOUT)
            lat.append(clock() - t0)

    async def level(inflight: int, deadline: float) -> list[float]:
        lat: list[float] = []
        stop = asyncio.Event()
        sweeping = asyncio.create_task(sweeper(stop))
        try:
            await asyncio.gather(*(producer(deadline, lat) for _ in range(inflight)))
        finally:
            stop.set()
            await sweeping
        return lat

    return level


def _rq(spec: dict[str, Any]) -> Level:
    rq: Any = load("rq")
    redis: Any = load("redis")
    pool = redis.BlockingConnectionPool.from_url(spec["redis"], max_connections=512)
    conn = redis.Redis(connection_pool=pool)
    conn.flushdb()
    queue = rq.Queue(QUEUE, connection=conn)

    def waiter(deadline: float, lat: list[float]) -> None:
        clock = time.perf_counter
        while (t0 := clock()) < deadline:
            job = queue.enqueue(RQ_TASK)
            if job.latest_result(timeout=TIMEOUT) is None:
                raise TimeoutError(f"rq job {job.id} gave no result")
            lat.append(clock() - t0)

    async def level(inflight: int, deadline: float) -> list[float]:
        return await asyncio.to_thread(_threads, inflight, lambda _i, lat: waiter(deadline, lat))

    return level


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: backend (huey|arq|rq), db or redis, levels, warmup, seconds, server_pid."""
    backend = spec["backend"]
    if backend == "huey":
        run = _huey(spec)
    elif backend == "arq":
        run = await _arq(spec)
    else:
        run = _rq(spec)
    cases: dict[str, dict[str, float]] = {}
    for n in spec["levels"]:
        await run(n, time.perf_counter() + spec["warmup"])
        cpu = CpuWindow(spec.get("server_pid"))
        cpu.start()
        lat = await run(n, time.perf_counter() + spec["seconds"])
        cpu.stop()
        cases[f"{n} in flight"] = level_metrics(lat, cpu)
    return {"cases": cases}
