"""No-op jobs on middlewared, N in flight (a job method's call is answered when its job
ends), with one subscriber watching ``core.get_jobs``: jobs/s and submit-to-result latency."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.loads.common import CpuWindow, auth, level_metrics, ws_url
from bench.loads.fastws import Conn, close_all, open_many

FINISHED = b'"state":"SUCCESS"'
# Calls in flight on one connection at most; more in flight opens more connections.
PER_CONN = 32


class Watcher:
    """Counts the jobs a subscriber has seen finish."""

    def __init__(self) -> None:
        self.finished = 0
        self.changed = asyncio.Event()

    def on_note(self, data: bytes) -> None:
        if FINISHED in data:
            self.finished += 1
            self.changed.set()

    async def reach(self, goal: int, timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while self.finished < goal:
            self.changed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                return False
        return True


async def closed_loop(conn: Conn, method: str, deadline: float, lat: list[float]) -> None:
    """Call, wait for the job's end, call again, until the deadline."""
    clock = time.perf_counter
    while (t0 := clock()) < deadline:
        await (await conn.request(method))
        lat.append(clock() - t0)


async def level(
    conns: list[Conn], method: str, inflight: int, seconds: float, pid: int | None
) -> tuple[list[float], CpuWindow]:
    lat: list[float] = []
    cpu = CpuWindow(pid)
    cpu.start()
    deadline = time.perf_counter() + seconds
    loops = [closed_loop(conns[i % len(conns)], method, deadline, lat) for i in range(inflight)]
    await asyncio.wait_for(asyncio.gather(*loops), seconds + 120)
    cpu.stop()
    return lat, cpu


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth, method, levels (jobs in flight), warmup and seconds (per level),
    server_pid. Cases are named after the level ("8 in flight")."""
    method = spec["method"]
    watcher = Watcher()
    url = ws_url(spec)
    (sub,) = await open_many(url, 1, auth(spec), True, lambda _: watcher.on_note)
    most = max(spec["levels"])
    conns = await open_many(url, max(1, -(-most // PER_CONN)), auth(spec))
    cases: dict[str, dict[str, float]] = {}
    done = 0
    for n in spec["levels"]:
        use = conns[: max(1, -(-n // PER_CONN))]
        warm, _ = await level(use, method, n, spec["warmup"], None)
        lat, cpu = await level(use, method, n, spec["seconds"], spec.get("server_pid"))
        done += len(warm) + len(lat)
        # Every job's end reached the subscriber too (it is part of the work measured).
        seen = await watcher.reach(done, 30)
        cases[f"{n} in flight"] = {
            **level_metrics(lat, cpu),
            "subscriber_behind": 0.0 if seen else float(done - watcher.finished),
        }
    await close_all([sub, *conns])
    return {"cases": cases}
