"""RPC round trips: N connections, one call in flight on each, for a fixed time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from bench.loads.common import CpuWindow, auth, ws_url
from bench.loads.wsrpc import open_many, session
from bench.stats import latency_ms


async def _drive(
    ws: aiohttp.ClientWebSocketResponse, frame: str, deadline: float, lat: list[float]
) -> int:
    """Call, wait for the answer, repeat until the deadline; returns the error replies."""
    errors = 0
    clock = time.perf_counter
    while (t0 := clock()) < deadline:
        await ws.send_str(frame)
        msg = await ws.receive()
        lat.append(clock() - t0)
        if msg.type is not aiohttp.WSMsgType.TEXT or '"error"' in msg.data:
            errors += 1
    return errors


async def _measure(
    socks: list[aiohttp.ClientWebSocketResponse], frame: str, seconds: float, pid: int | None
) -> dict[str, float]:
    lat: list[float] = []
    cpu = CpuWindow(pid)
    cpu.start()
    deadline = time.perf_counter() + seconds
    errors = await asyncio.gather(*(_drive(ws, frame, deadline, lat) for ws in socks))
    cpu.stop()
    return {
        "calls": len(lat),
        "calls_per_s": len(lat) / cpu.wall,
        "errors": sum(errors),
        **latency_ms(lat),
        **cpu.per(len(lat)),
    }


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth, conns [1, 50], calls [[label, method, params]], warmup, seconds."""
    cases: dict[str, dict[str, float]] = {}
    async with session() as http:
        conns = await open_many(http, ws_url(spec), max(spec["conns"]), auth(spec))
        # The measurement talks to the sockets directly.
        socks = [await c.detach() for c in conns]
        for label, method, params in spec["calls"]:
            frame = orjson.dumps(
                {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
            ).decode()
            for n in spec["conns"]:
                await _measure(socks[:n], frame, spec["warmup"], None)
                cases[f"{label}/{n}"] = await _measure(
                    socks[:n], frame, spec["seconds"], spec.get("server_pid")
                )
        await asyncio.gather(*(ws.close() for ws in socks))
    return {"cases": cases}
