"""Queries on a big store: ``core.get_jobs`` one at a time on one connection, each case
bounded in count and time, while another connection pings every few milliseconds (open loop:
a ping waits for whatever holds the server up, and its latency shows it). Also the server's
peak RSS growth during each case, and deep pages by cursor when the server pages so."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from bench.loads.common import auth, ws_url
from bench.loads.fastws import Conn, RpcError, close_all, open_many
from bench.procstat import peak_rss_bytes, reset_peak, rss_bytes
from bench.stats import latency_ms

MIB = 1024 * 1024
CURSOR = "deep page by cursor"
# Rows a cursor walk takes a step (ids only) on its way to the deep page.
WALK_STEP = 10_000


class Pinger:
    """``core.ping`` every ``interval`` s on its own connection, replies or not."""

    def __init__(self, conn: Conn, interval: float) -> None:
        self.conn = conn
        self.interval = interval
        self.lat: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._waiting: set[asyncio.Task[None]] = set()

    async def _one(self) -> None:
        t0 = time.perf_counter()
        with contextlib.suppress(RpcError):
            await (await self.conn.request("core.ping"))
        self.lat.append(time.perf_counter() - t0)

    async def _run(self) -> None:
        next_at = time.perf_counter()
        while True:
            task = asyncio.create_task(self._one())
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    def start(self) -> None:
        self.lat = []
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        """Stops sending; waits for the pings sent; their latency."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.wait_for(asyncio.gather(*self._waiting), 600)
        got = latency_ms(self.lat)
        return {"ping_p50_ms": got["p50_ms"], "ping_p99_ms": got["p99_ms"], "pings": len(self.lat)}


class Case:
    """One query repeated: latencies, rows of the last answer, errors and the first one."""

    def __init__(self, conn: Conn, filters: Any, options: Any) -> None:
        self.conn, self.filters, self.options = conn, filters, options
        self.lat: list[float] = []
        self.rows = 0
        self.errors = 0
        self.error = ""

    async def once(self, keep: bool = True) -> float:
        t0 = time.perf_counter()
        try:
            got = await self.conn.call("core.get_jobs", self.filters, self.options, timeout=600)
        except RpcError as e:
            got = None
            self.errors += keep
            self.error = self.error or str(e)[:300]
        took = time.perf_counter() - t0
        if keep:
            self.lat.append(took)
            if isinstance(got, dict) and "results" in got:
                got = got["results"]
            self.rows = len(got) if isinstance(got, list) else int(got is not None)
        return took

    async def repeat(self, spec: dict[str, Any]) -> None:
        """Warm up, then measure, each bounded by count and by time (at least ``least``).
        A query slower than the whole budget is not warmed up: its first run counts."""
        start = time.perf_counter()
        for _ in range(spec["warmup"]):
            took = await self.once(False)
            if took > spec["seconds"] and not self.error:
                self.lat.append(took)
                break
            if self.error or time.perf_counter() - start > spec["seconds"] / 4:
                break
        start = time.perf_counter()
        while len(self.lat) < spec["count"]:
            await self.once()
            if len(self.lat) >= spec["least"] and time.perf_counter() - start > spec["seconds"]:
                break

    def metrics(self) -> dict[str, float]:
        return {
            "rows": self.rows,
            "queries": len(self.lat),
            "errors": self.errors,
            **latency_ms(self.lat),
        }


async def deep_cursor(conn: Conn, depth: int, page: int) -> tuple[str | None, dict[str, float]]:
    """A cursor ``depth`` rows into the newest-first walk of every job, reached in steps of
    ids; None when the server does not page by cursor."""
    order = {"order_by": ["-id"]}
    try:
        probe = await conn.call("core.get_jobs", [], {**order, "limit": 1, "cursor": True})
    except RpcError:
        return None, {}
    if not isinstance(probe, dict) or "next_cursor" not in probe:
        return None, {}
    t0 = time.perf_counter()
    cursor: Any = True
    walked = 0
    while walked < depth:
        step = min(WALK_STEP, depth - walked)
        got = await conn.call(
            "core.get_jobs", [], {**order, "limit": step, "select": ["id"], "cursor": cursor}
        )
        walked += len(got["results"])
        cursor = got["next_cursor"]
        if not cursor:
            break
    walk = {"walk_s": time.perf_counter() - t0, "depth": walked, "page": page}
    return (cursor if isinstance(cursor, str) else None), walk


async def measured(
    case: Case, spec: dict[str, Any], pinger: Pinger, pid: int | None
) -> dict[str, float]:
    """The case with the other client's pings and the server's peak RSS growth."""
    base = 0
    if pid:
        reset_peak(pid)
        base = rss_bytes(pid)
    pinger.start()
    await case.repeat(spec)
    pings = await pinger.stop()
    # Memory freed during the case is no growth.
    growth = max(0, peak_rss_bytes(pid) - base) / MIB if pid else 0.0
    return {**case.metrics(), **pings, "rss_growth_mib": growth}


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth, seed (jobs to run first), queries [[label, filters, options]],
    cursor ({"label", "depth", "limit"} or absent), count, least, seconds, warmup,
    ping_interval, idle_s, server_pid."""
    cases: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    conn, other = await open_many(ws_url(spec), 2, auth(spec))
    # Real rows for the generator to copy: finished jobs and a failed one.
    for _ in range(spec.get("seed", 0)):
        await conn.call("bench.noop")
        with contextlib.suppress(RpcError):
            await conn.call("bench.fail", "seeded failure")
    pid = spec.get("server_pid")
    pinger = Pinger(other, spec.get("ping_interval", 0.005))
    if spec["queries"]:
        pinger.start()
        await asyncio.sleep(spec["idle_s"])
        cases["idle pings"] = await pinger.stop()
    for label, filters, options in spec["queries"]:
        case = Case(conn, filters, options)
        cases[label] = await measured(case, spec, pinger, pid)
        if case.error:
            errors[label] = case.error
    deep = spec.get("cursor")
    if deep:
        cursor, walk = await deep_cursor(conn, deep["depth"], deep["limit"])
        if cursor is None:
            cases[CURSOR] = {"supported": 0.0}
        else:
            case = Case(conn, [], {"order_by": ["-id"], "limit": deep["limit"], "cursor": cursor})
            cases[CURSOR] = {"supported": 1.0, **walk, **await measured(case, spec, pinger, pid)}
            if case.error:
                errors[CURSOR] = case.error
    await close_all([conn, other])
    return {"cases": cases, "errors": errors}
