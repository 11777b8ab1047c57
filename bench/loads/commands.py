"""Command job overhead: ``command.run`` of a command whose one line is ``true``, submit to
SUCCESS, one after another; or (``bare``) ``asyncio.create_subprocess_exec("true")``
awaited in a bare loop in this process."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.loads.common import CpuWindow, auth, level_metrics, ws_url
from bench.loads.fastws import close_all, open_many

NAME = "bench-true"
CASE = "true, 1 at a time"


async def bare(seconds: float) -> list[float]:
    lat: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    while (t0 := clock()) < deadline:
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
        lat.append(clock() - t0)
    return lat


async def runs(spec: dict[str, Any], seconds: float) -> list[float]:
    (conn,) = await open_many(ws_url(spec), 1, auth(spec))
    try:
        found = await conn.call("command.query", [["name", "=", NAME]])
        if not found:
            await conn.call("command.create", {"name": NAME, "commands": ["true"]})
        lat: list[float] = []
        clock = time.perf_counter
        deadline = clock() + seconds
        while (t0 := clock()) < deadline:
            await conn.call("command.run", NAME)
            lat.append(clock() - t0)
        return lat
    finally:
        await close_all([conn])


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: bare (bool), url and auth (not bare), warmup and seconds, server_pid."""

    async def measure(seconds: float) -> list[float]:
        return await (bare(seconds) if spec.get("bare") else runs(spec, seconds))

    await measure(spec["warmup"])
    cpu = CpuWindow(spec.get("server_pid"))
    cpu.start()
    lat = await measure(spec["seconds"])
    cpu.stop()
    return {"cases": {CASE: level_metrics(lat, cpu)}}
