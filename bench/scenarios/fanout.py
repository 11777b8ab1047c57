"""Scenario 3, progress fan-out: 10, 100 and 1,000 subscribers of ``core.get_jobs`` while
jobs publish progress (``bench.pulse``), with and without one subscriber that never reads,
against a bare aiohttp broadcast that serialises each event once."""

from __future__ import annotations

from collections.abc import Callable

from bench.context import AUTH, Context
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all

BARE = "aiohttp broadcast"
# Jobs publish progress every INTERVAL s: middlewared's coalescing interval, so every report
# goes out and none waits to be merged.
INTERVAL = 0.25
# The audit's event age p99 against the bare broadcast's (500 ms against 165 ms at 1,000).
AGE_P99_BEFORE = {1000: 500 / 165}


def case(subscribers: int, stalled: bool) -> str:
    return f"{subscribers} subs" + (" + 1 stalled" if stalled else "")


def run(ctx: Context) -> Result:
    interval = INTERVAL
    if ctx.smoke:
        levels, jobs, warmup, seconds = [10], 4, 0.1, 0.3
    else:
        levels, jobs, warmup, seconds = [10, 100, 1000], 50, 0.5, 2.5
    result = Result(
        "fanout",
        "Progress fan-out to subscribers of core.get_jobs",
        {
            "subscribers": levels,
            "jobs": jobs,
            "interval_s": interval,
            "events_per_s": jobs / interval,
            "warmup_s": warmup,
            "seconds": seconds,
        },
        columns=[
            "deliveries_per_s",
            "delivered_share",
            "age_p50_ms",
            "age_p99_ms",
            "server_us_per_op",
            "server_busy",
            "client_busy",
        ],
    )
    result.notes += (
        f"{jobs} jobs each report progress every {interval} s ({jobs / interval:.0f} events/s); "
        "a stalled subscriber subscribes, then never reads; the bare broadcast skips a "
        "subscriber whose socket buffer is full; middlewared coalesces a lagging "
        "subscriber's events per job instead (fewer, fresher-state deliveries), so its "
        "delivered share and event age are the price of that, shown beside deliveries/s",
        "event age: from the job's progress call (extra.t) to the subscriber's parse of the "
        "frame; client_busy is the subscribers' load process (picows), a core at most",
        "deliveries count the events published in the window (by their stamp, arriving up "
        "to 2 s after it); delivered_share is of the events published in the window that "
        "reached any subscriber, and deliveries_per_s is that share of what was offered",
    )
    result.columns.insert(0, "offered_per_s")

    flips: dict[bool, bool] = {}

    def measure(with_auth: bool) -> Callable[[Proc], Cases]:
        def go(proc: Proc) -> Cases:
            # Alternate which comes first, calm or stalled, so drift does not favour one.
            flips[with_auth] = not flips.get(with_auth, True)
            order = (False, True) if flips[with_auth] else (True, False)
            spec = {
                "url": proc.url(),
                "auth": AUTH if with_auth else None,
                "cells": [[case(n, s), n, s] for n in levels for s in order],
                "jobs": jobs,
                "interval": interval,
                "warmup": warmup,
                "seconds": seconds,
                "server_pid": proc.pid,
            }
            cases: Cases = ctx.load("fanout", spec, timeout=600)["cases"]
            return cases

        return go

    result.case_order = [case(n, s) for n in levels for s in (False, True)]
    run_all(
        ctx,
        result,
        [
            Contender(PROJECT, lambda: ctx.middlewared(ctx.data_dir("fanout")), measure(True)),
            Contender(BARE, lambda: ctx.reference("aiohttp_broadcast"), measure(False)),
        ],
    )
    for subs in levels:
        result.target(
            f"fanout {subs} subs: deliveries/s vs bare broadcast",
            result.ratio(case(subs, False), "deliveries_per_s", BARE),
            ">=",
            1.0,
            "x",
        )
        result.target(
            f"fanout {subs} subs: event age p99 vs bare broadcast",
            result.ratio(case(subs, False), "age_p99_ms", BARE),
            "<=",
            1.5,
            "x",
            AGE_P99_BEFORE.get(subs),
        )
    for subs in levels:
        calm = result.median(case(subs, False), PROJECT, "deliveries_per_s")
        stalled = result.median(case(subs, True), PROJECT, "deliveries_per_s")
        cost = None if not calm or stalled is None else 100 * (1 - stalled / calm)
        result.target(
            f"fanout {subs} subs: deliveries lost to 1 stalled subscriber",
            None if cost is None else max(cost, 0.0),
            "<",
            10,
            "%",
        )
    busiest = max(
        (result.median(case(n, s), who, "client_busy") or 0.0)
        for n in levels
        for s in (False, True)
        for who in (PROJECT, BARE)
    )
    result.target("harness: fanout load client busiest cell", busiest, "<=", 0.9, " cores")
    return result
