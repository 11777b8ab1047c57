"""Scenario 6, store scale: ``core.get_jobs`` with a filter and a page, and the server's
start-up time, with 1,000,000 finished jobs in its store (written straight into SQLite)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import storegen
from bench.context import AUTH, Context
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all, say

EMPTY = "middlewared, empty store"
QUERIES: list[list[Any]] = [
    # Id 3 is one of the jobs the server ran itself, in both stores.
    ["one job by id", [["id", "=", 3]], {"get": True}],
    ["failed, newest 20", [["state", "=", "FAILED"]], {"order_by": ["-id"], "limit": 20}],
    [
        "one method, page 10 of 50",
        [["method", "=", "pool.scrub"], ["state", "=", "SUCCESS"]],
        {"order_by": ["-id"], "limit": 50, "offset": 450},
    ],
]


def _retention(count: int) -> list[str]:
    """Keep every generated job: the default policy (100,000) would purge them at start."""
    return ["--retention-count", str(10 * count + 1000), "--retention-days", "36500"]


def run(ctx: Context) -> Result:
    count, queries, warmup = (2000, 20, 5) if ctx.smoke else (1_000_000, 500, 50)
    result = Result(
        "store",
        f"Store scale: {count:,} finished jobs",
        {"jobs": count, "queries_each": queries},
        columns=["p50_ms", "p99_ms", "max_ms", "rows", "startup_s"],
    )
    data = ctx.data_dir("store")
    seed = ctx.middlewared(data, _retention(count))
    try:
        ctx.load("store", {"url": seed.url(), "auth": AUTH, "seed": 3, "queries": []})
    finally:
        seed.stop()
    empty = data.with_name(data.name + "-empty")
    shutil.copytree(data, empty)
    say(f"[store] writing {count:,} jobs into {data}")
    seconds = storegen.generate(data / "middlewared.db", count)
    result.params["generation_s"] = round(seconds, 1)
    result.notes.append(
        f"{count:,} jobs written in {seconds:.2f} s; start-up is from spawning "
        "`python -m middlewared` to its 'listening' line (interpreter start included, page "
        "cache warm), with a retention policy that keeps them all"
    )

    def go(where: Path) -> tuple[Callable[[], Proc], Callable[[Proc], Cases]]:
        def start() -> Proc:
            return ctx.middlewared(where, _retention(count))

        def measure(proc: Proc) -> Cases:
            spec = {
                "url": proc.url(),
                "auth": AUTH,
                "queries": QUERIES,
                "count": queries,
                "warmup": warmup,
            }
            cases: Cases = ctx.load("store", spec, timeout=300)["cases"]
            return {"start-up": {"startup_s": proc.started_in}, **cases}

        return start, measure

    run_all(ctx, result, [Contender(PROJECT, *go(data)), Contender(EMPTY, *go(empty))])
    for label, _filters, _options in QUERIES:
        result.target(
            f"store: core.get_jobs {label} p99",
            result.median(label, PROJECT, "p99_ms"),
            "<=",
            5,
            "ms",
        )
    result.target(
        f"store: start-up with {count:,} jobs",
        result.median("start-up", PROJECT, "startup_s"),
        "<=",
        1,
        "s",
    )
    return result
