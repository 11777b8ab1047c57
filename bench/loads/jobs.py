"""No-op jobs on middlewared: throughput with a subscriber watching, then sequential latency."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.loads.common import CpuWindow, auth, ws_url
from bench.loads.wsrpc import Conn, open_many, session
from bench.stats import latency_ms

FINISHED = '"state":"SUCCESS"'


class Watcher:
    """Counts the jobs a subscriber has seen finish."""

    def __init__(self) -> None:
        self.finished = 0
        self.goal = 0
        self.reached = asyncio.Event()

    def expect(self, goal: int) -> None:
        self.finished = 0
        self.goal = goal
        self.reached.clear()

    def on_note(self, data: str) -> None:
        if FINISHED in data:
            self.finished += 1
            if self.finished >= self.goal:
                self.reached.set()


async def submit(conns: list[Conn], method: str, count: int, inflight: int) -> None:
    """``count`` calls spread over the connections, ``inflight`` at a time on each."""
    left = count

    async def worker(conn: Conn) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await conn.call(method)

    await asyncio.gather(*(worker(c) for c in conns for _ in range(inflight)))


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth, method, count, warmup, conns, inflight, sequential, server_pid."""
    method = spec["method"]
    watcher = Watcher()
    async with session() as http:
        url = ws_url(spec)
        await open_many(http, url, 1, auth(spec), True, lambda _: watcher.on_note)
        conns = await open_many(http, url, spec["conns"], auth(spec))
        for goal in (spec["warmup"], spec["count"]):
            watcher.expect(goal)
            cpu = CpuWindow(spec.get("server_pid"))
            cpu.start()
            await submit(conns, method, goal, spec["inflight"])
            replied = cpu.elapsed()
            await asyncio.wait_for(watcher.reached.wait(), 60)
            cpu.stop()
        lat: list[float] = []
        for _ in range(spec["sequential"]):
            t0 = time.perf_counter()
            await conns[0].call(method)
            lat.append(time.perf_counter() - t0)
    count = spec["count"]
    return {
        "cases": {
            "throughput": {
                "jobs_per_s": count / cpu.wall,
                "replied_jobs_per_s": count / replied,
                **cpu.per(count),
            },
            "sequential": {"jobs_per_s": len(lat) / (sum(lat) or 1), **latency_ms(lat)},
        }
    }
