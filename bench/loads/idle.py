"""Idle connections: open them in steps, each logged in and subscribed to jobs, and read the
server's RSS at each step; then check every one still answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

from bench.loads.common import auth, ws_url
from bench.loads.fastws import Conn, RpcError, close_all, open_many
from bench.procstat import rss_bytes

KIB = 1024


class Caller(Protocol):
    """Either client's connection (picows here, aiohttp in the soak test)."""

    async def call(self, method: str, *params: Any, timeout: float = ...) -> Any: ...


async def answering(conns: Sequence[Caller], batch: int = 500) -> int:
    """How many connections still answer ``core.ping``."""
    ok = 0
    for start in range(0, len(conns), batch):
        replies = await asyncio.gather(
            *(c.call("core.ping", timeout=30) for c in conns[start : start + batch]),
            return_exceptions=True,
        )
        ok += sum(1 for r in replies if r == "pong")
    return ok


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth, levels (ascending connection counts), settle, server_pid."""
    pid = spec["server_pid"]
    cases: dict[str, dict[str, float]] = {}
    url = ws_url(spec)
    # The base is read with one connection open: its password login allocates scrypt's
    # 16 MiB once, which is no cost of a connection.
    conns: list[Conn] = await open_many(url, 1, auth(spec), True)
    await asyncio.sleep(spec["settle"])
    base = rss_bytes(pid)
    for level in spec["levels"]:
        t0 = time.perf_counter()
        try:
            conns += await open_many(url, level - len(conns), auth(spec), True)
        except (RpcError, OSError) as e:
            cases[f"{level} conns"] = {"held": len(conns), "error": 1.0}
            print(f"stopped at {len(conns)} connections: {e}", flush=True)
            break
        opened = time.perf_counter() - t0
        await asyncio.sleep(spec["settle"])
        rss = rss_bytes(pid)
        cases[f"{level} conns"] = {
            "rss_mib": rss / KIB / KIB,
            "rss_per_conn_kib": (rss - base) / (level - 1) / KIB,
            "open_per_s": level / opened if opened else 0.0,
            "held": await answering(conns),
        }
    await close_all(conns)
    return {"cases": cases}
