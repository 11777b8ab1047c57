"""Hook scripts: N ``core.ping`` calls, each queueing an ``on.core.ping`` run, while
``on.auth.me`` hangs; or (``bare``) the same script spawned N times in this process."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.loads.common import CpuWindow, auth, ws_url
from bench.loads.fastws import Conn, close_all, open_many
from bench.stats import latency_ms

ARGS = ('{"request":"core.ping","parameters":[]}', "success", "OK", '"pong"')


def case(n: int) -> str:
    return f"{n} on.core.ping runs, 1 hung script"


async def bare(script: str, n: int) -> list[float]:
    lat: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(script, *ARGS)
        if await proc.wait() != 0:
            raise RuntimeError(f"{script} failed")
        lat.append(time.perf_counter() - t0)
    return lat


async def finished(conn: Conn, n: int, timeout: float) -> None:
    """Until ``n`` runs have finished (hook.status: a cheap poll)."""
    deadline = time.perf_counter() + timeout
    while (await conn.call("hook.status"))["finished"] < n:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{n} runs did not finish within {timeout} s")
        await asyncio.sleep(0.005)


async def through_hooks(spec: dict[str, Any], cpu: CpuWindow) -> dict[str, Any]:
    n = spec["runs"]
    (conn,) = await open_many(ws_url(spec), 1, auth(spec))
    try:
        await conn.call("auth.me")  # on.auth.me starts and hangs
        cpu.start()
        for _ in range(n):
            await conn.call("core.ping")
        await finished(conn, n, 600)
        cpu.stop()
        listed = await conn.call("hook.runs", 1000)
        runs = [r for r in listed if r["event"] == "on.core.ping"]
        hung = [r for r in listed if r["event"] == "on.auth.me"]
        if hung:
            raise RuntimeError(f"the hung script ended: {json.dumps(hung[0])[:300]}")
    finally:
        await close_all([conn])
    return {
        "per_run_ms": cpu.wall / n * 1000,
        "runs_per_s": n / cpu.wall,
        "run_p50_ms": latency_ms([r["duration"] for r in runs])["p50_ms"],
        "completed": len([r for r in runs if r["exit_code"] == 0]),
        **cpu.per(n),
    }


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: bare (bool), runs, script; url, auth and server_pid when not bare."""
    n = spec["runs"]
    if spec.get("bare"):
        await bare(spec["script"], min(n, 20))  # warm-up
        cpu = CpuWindow(None)
        cpu.start()
        lat = await bare(spec["script"], n)
        cpu.stop()
        metrics = {
            "per_run_ms": cpu.wall / n * 1000,
            "runs_per_s": n / cpu.wall,
            "run_p50_ms": latency_ms(lat)["p50_ms"],
            "completed": n,
            **cpu.per(n),
        }
    else:
        metrics = await through_hooks(spec, CpuWindow(spec.get("server_pid")))
    return {"cases": {case(n): metrics}}
