"""Queries on a big store: ``core.get_jobs`` with filters and a page, one at a time."""

from __future__ import annotations

import contextlib
import time
from typing import Any

from bench.loads.common import auth, ws_url
from bench.loads.wsrpc import RpcError, open_many, session
from bench.stats import latency_ms


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth, seed (jobs to run first), queries [[label, filters, options]],
    count, warmup."""
    cases: dict[str, dict[str, float]] = {}
    async with session() as http:
        (conn,) = await open_many(http, ws_url(spec), 1, auth(spec))
        # Real rows for the generator to copy: finished jobs and a failed one.
        for _ in range(spec.get("seed", 0)):
            await conn.call("bench.noop")
            with contextlib.suppress(RpcError):
                await conn.call("test.fail", "seeded failure")
        for label, filters, options in spec["queries"]:
            for _ in range(spec["warmup"]):
                await conn.call("core.get_jobs", filters, options)
            lat: list[float] = []
            rows = 0
            for _ in range(spec["count"]):
                t0 = time.perf_counter()
                got = await conn.call("core.get_jobs", filters, options)
                lat.append(time.perf_counter() - t0)
                rows = len(got) if isinstance(got, list) else 1
            cases[label] = {"rows": rows, **latency_ms(lat)}
    return {"cases": cases}
