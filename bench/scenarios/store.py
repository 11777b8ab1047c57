"""Scenario 6, store scale: ``core.get_jobs`` on 10,000, 100,000 and 1,000,000 finished
jobs (written straight into SQLite): easy queries on columns, then the hard ones (a filter
on a field of the stored record, a regex, a count over a filter, a deep page by offset and
by cursor), with another client's ping latency and the server's RSS growth during each, and
the server's start-up time."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import storegen
from bench.context import AUTH, Context
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all, say

CURSOR = "deep page by cursor"
PAGE = 50
# The easy ones: an index answers each (target: p99 <= 5 ms at the largest size).
EASY: list[list[Any]] = [
    # Id 3 is one of the jobs the server ran itself, in every store.
    ["one job by id", [["id", "=", 3]], {"get": True}],
    ["failed, newest 20", [["state", "=", "FAILED"]], {"order_by": ["-id"], "limit": 20}],
    [
        "one method, page 10 of 50",
        [["method", "=", "pool.scrub"], ["state", "=", "SUCCESS"]],
        {"order_by": ["-id"], "limit": PAGE, "offset": 9 * PAGE},
    ],
]
# Fields of the stored record, not columns (storegen.description: "exporting 7 of 1000").
# "=" matches 1 job in 20,000 (most of the store is read to find 20); "~" is anchored at
# the start (PROTOCOL.md section 4), so "~ x" matches none: the whole store is read to say
# so. The regex matches 1 job in 50 (newest first: found after about a thousand).
NON_COLUMN_EQ = "non-column =, limit 20"
NON_COLUMN_RE = "non-column ~ x (none), limit 20"
HARD: list[list[Any]] = [
    [NON_COLUMN_EQ, [["progress.description", "=", "exporting 999 of 1000"]], {"limit": 20}],
    [NON_COLUMN_RE, [["progress.description", "~", "x"]], {"limit": 20}],
    [
        "regex, newest 20",
        [["progress.description", "~", "^(scrubb|resilver)ing [0-9]*[02]4 of"]],
        {"order_by": ["-id"], "limit": 20},
    ],
    ["count, non-column prefix", [["progress.description", "^", "exporting 99"]], {"count": True}],
]
LIMIT_NON_COLUMN_MS = 100
LIMIT_RSS_MIB = 64
LIMIT_PING_VS_IDLE = 2


def _retention(count: int) -> list[str]:
    """Keep every generated job: the default policy (100,000) would purge them at start."""
    return ["--retention-count", str(10 * count + 1000), "--retention-days", "36500"]


def _queries(count: int) -> list[list[Any]]:
    deep = ["deep page by offset", [], {"order_by": ["-id"], "limit": PAGE, "offset": count // 2}]
    return [*EASY, *HARD, deep]


def _name(count: int, largest: int) -> str:
    return PROJECT if count == largest else f"at {count:,} jobs"


def run(ctx: Context) -> Result:
    if ctx.smoke:
        sizes, limits = [2000], {"count": 5, "least": 2, "seconds": 0.2, "warmup": 1}
        idle = 0.2
    else:
        sizes, limits = (
            [10_000, 100_000, 1_000_000],
            {
                "count": 200,
                "least": 3,
                "seconds": 3.0,
                "warmup": 10,
            },
        )
        idle = 2.0
    largest = sizes[-1]
    smaller = ", ".join(f"{n:,}" for n in sizes[:-1])
    result = Result(
        "store",
        f"Store scale: middlewared on {largest:,} finished jobs"
        + (f" (and on {smaller})" if smaller else ""),
        {"sizes": sizes, **limits, "idle_s": idle},
        columns=[
            "p50_ms",
            "p99_ms",
            "rows",
            "errors",
            "ping_p50_ms",
            "ping_p99_ms",
            "rss_growth_mib",
            "startup_s",
        ],
    )
    result.case_order = ["start-up", "idle pings", *(q[0] for q in _queries(largest)), CURSOR]
    stores = _stores(ctx, sizes, result)

    def go(count: int) -> tuple[Callable[[], Proc], Callable[[Proc], Cases]]:
        def start() -> Proc:
            return ctx.middlewared(stores[count], _retention(count))

        def measure(proc: Proc) -> Cases:
            spec = {
                "url": proc.url(),
                "auth": AUTH,
                "queries": _queries(count),
                "cursor": {"depth": count // 2, "limit": PAGE},
                **limits,
                "idle_s": idle,
                "ping_interval": 0.005,
                "server_pid": proc.pid,
            }
            got = ctx.load("store", spec, timeout=3600)
            for label, error in got.get("errors", {}).items():
                note = f"{_name(count, largest)}, {label}: error {error}"
                if note not in result.notes:
                    result.notes.append(note)
            cases: Cases = got["cases"]
            if not cases.get(CURSOR, {}).get("supported", 1.0):
                note = f"{CURSOR}: not supported by this server (no cursor option)"
                if note not in result.notes:
                    result.notes.append(note)
            return {"start-up": {"startup_s": proc.started_in}, **cases}

        return start, measure

    run_all(ctx, result, [Contender(_name(n, largest), *go(n)) for n in sizes])
    _targets(result, largest)
    return result


def _stores(ctx: Context, sizes: list[int], result: Result) -> dict[int, Path]:
    """A data dir per size: a server runs a few real jobs, then the generator copies them."""
    seed = ctx.data_dir("store-seed")
    proc = ctx.middlewared(seed, _retention(0))
    try:
        ctx.load("store", {"url": proc.url(), "auth": AUTH, "seed": 3, "queries": []})
    finally:
        proc.stop()
    stores: dict[int, Path] = {}
    for count in sizes:
        where = seed.with_name(f"{seed.name}-{count}")
        shutil.copytree(seed, where)
        say(f"[store] writing {count:,} jobs into {where}")
        seconds = storegen.generate(where / "middlewared.db", count)
        result.params[f"generation_s_{count}"] = round(seconds, 1)
        stores[count] = where
    result.notes.append(
        "jobs written straight into SQLite ("
        + ", ".join(f"{n:,} in {result.params[f'generation_s_{n}']} s" for n in sizes)
        + "); start-up is from spawning `python -m middlewared` to its 'listening' line "
        "(interpreter start included, page cache warm), with a retention policy that keeps "
        "them all"
    )
    result.notes.append(
        "each query runs one at a time for up to 200 times or 3 s (at least 3); meanwhile "
        "another connection sends core.ping every 5 ms without waiting for replies "
        "(ping_*: their latency; 'idle pings': with no query running); rss_growth_mib: "
        "the server's peak RSS during the case over its RSS before"
    )
    return stores


def _targets(result: Result, largest: int) -> None:
    at = f"{largest:,} jobs"
    for label, _filters, _options in EASY:
        result.target(
            f"store {at}: {label} p99", result.median(label, PROJECT, "p99_ms"), "<=", 5, "ms"
        )
    for label in (NON_COLUMN_EQ, NON_COLUMN_RE):
        result.target(
            f"store {at}: {label} p99",
            _clean(result, label, "p99_ms"),
            "<=",
            LIMIT_NON_COLUMN_MS,
            "ms",
        )
        result.target(
            f"store {at}: {label}: server RSS growth",
            result.median(label, PROJECT, "rss_growth_mib"),
            "<=",
            LIMIT_RSS_MIB,
            "MiB",
        )
    result.target(
        f"store {at}: deep page by cursor p99", _clean(result, CURSOR, "p99_ms"), "<=", 5, "ms"
    )
    idle = result.median("idle pings", PROJECT, "ping_p99_ms")
    during = [
        result.median(label, PROJECT, "ping_p99_ms")
        for label in (*(q[0] for q in _queries(largest)), CURSOR)
    ]
    worst = max((d for d in during if d is not None), default=None)
    result.target(
        f"store {at}: another client's ping p99 during any query vs idle",
        None if worst is None or not idle else worst / idle,
        "<=",
        LIMIT_PING_VS_IDLE,
        "x",
    )
    result.target(
        f"store: start-up with {at}",
        result.median("start-up", PROJECT, "startup_s"),
        "<=",
        1,
        "s",
    )


def _clean(result: Result, label: str, metric: str) -> float | None:
    """The median, unless the query failed: an error is no fast answer (shown as "error",
    short of its target)."""
    if result.median(label, PROJECT, "errors"):
        return math.inf
    return result.median(label, PROJECT, metric)
