"""RPC round trips: N connections, one call in flight on each, for a fixed time. Each reply
sends the next call from picows's callback: no task, no future, no JSON decoding per call,
so the client costs far less than any server it drives."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from bench.loads.common import CpuWindow, auth, ws_url
from bench.loads.fastws import Conn, close_all, open_many
from bench.stats import latency_ms

ERROR = b'"error"'


class Loop:
    """One connection's closed loop: call, take the reply, call again until the deadline."""

    def __init__(self, conn: Conn, frame: bytes, lat: list[float], done: asyncio.Event) -> None:
        self.conn = conn
        self.frame = frame
        self.lat = lat
        self.done = done
        self.deadline = 0.0
        self.errors = 0
        self.sent_at = 0.0
        conn.tap = self.reply

    def start(self, deadline: float) -> None:
        self.deadline = deadline
        self.sent_at = time.perf_counter()
        self.conn.send(self.frame)

    def reply(self, data: bytes) -> None:
        now = time.perf_counter()
        self.lat.append(now - self.sent_at)
        if ERROR in data:
            self.errors += 1
        if now < self.deadline:
            self.sent_at = now
            self.conn.send(self.frame)
        else:
            self.done.set()


async def _measure(
    conns: list[Conn], frame: bytes, seconds: float, pid: int | None
) -> dict[str, float]:
    lat: list[float] = []
    events = [asyncio.Event() for _ in conns]
    loops = [Loop(c, frame, lat, e) for c, e in zip(conns, events, strict=True)]
    cpu = CpuWindow(pid)
    cpu.start()
    deadline = time.perf_counter() + seconds
    for one in loops:
        one.start(deadline)
    await asyncio.gather(*(e.wait() for e in events))
    cpu.stop()
    for c in conns:
        c.tap = None
    return {
        "calls": len(lat),
        "calls_per_s": len(lat) / cpu.wall,
        "errors": sum(one.errors for one in loops),
        **latency_ms(lat),
        **cpu.per(len(lat)),
    }


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth, conns [1, 50], calls [[label, method, params]], warmup, seconds."""
    cases: dict[str, dict[str, float]] = {}
    conns = await open_many(ws_url(spec), max(spec["conns"]), auth(spec))
    for label, method, params in spec["calls"]:
        frame = orjson.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
        for n in spec["conns"]:
            await _measure(conns[:n], frame, spec["warmup"], None)
            cases[f"{label}/{n}"] = await _measure(
                conns[:n], frame, spec["seconds"], spec.get("server_pid")
            )
    await close_all(conns)
    return {"cases": cases}
