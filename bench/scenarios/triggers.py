"""Scenario 8, triggers (issue 12), three parts, each beside its reference in the same run:

1. N ``@every 1s`` triggers running a no-op job: fire lateness (due time to the job's code
   running) and the server's CPU while none is due, against APScheduler 3.x running the same
   N interval jobs in one process;
2. 10,000 ``@event`` triggers whose rules match nothing, while no-op jobs flood the bus:
   events/s and server CPU per event, against the same server and load with no triggers;
3. a ``@webhook`` trigger signed with ``hmac-sha256``: requests/s, against a bare aiohttp
   handler that checks the same HMAC."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.context import AUTH, Context
from bench.model import PROJECT, Result
from bench.optional import missing
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all

APS = "APScheduler 3 (AsyncIOScheduler)"
NO_TRIGGERS = "middlewared, no triggers"
BARE = "aiohttp hmac handler"
WEBHOOK = "webhook hmac-sha256"
EVENTS = "bus events"


def firing(n: int) -> str:
    return f"{n} @every 1s"


def idle(n: int) -> str:
    return f"{n} @every 1h (idle)"


def sizes(smoke: bool) -> dict[str, dict[str, Any]]:
    if smoke:
        return {
            "every": {"triggers": 20, "spread": 0.2, "warmup": 1.5, "seconds": 1.0},
            "every_idle": {"settle": 0.3, "idle_seconds": 0.5},
            "events": {"triggers": 40, "inflight": 8, "warmup": 0.1, "seconds": 0.3},
            "webhook": {"conns": 4, "warmup": 0.1, "seconds": 0.3},
        }
    return {
        "every": {"triggers": 1000, "spread": 1.0, "warmup": 4.0, "seconds": 15.0},
        "every_idle": {"settle": 2.0, "idle_seconds": 10.0},
        "events": {"triggers": 10_000, "inflight": 32, "warmup": 1.0, "seconds": 5.0},
        "webhook": {"conns": 50, "warmup": 1.0, "seconds": 5.0},
    }


def run(ctx: Context) -> Result:
    size = sizes(ctx.smoke)
    every = {**size["every"], **size["every_idle"]}
    n, n_events = every["triggers"], size["events"]["triggers"]
    result = Result(
        "triggers",
        "Triggers: @every lateness and idle CPU, @event matching, signed webhooks",
        dict(size),
        columns=["per_s", "p50_ms", "p99_ms", "server_us_per_op", "server_busy", "client_busy"],
    )
    result.case_order = [firing(n), idle(n), EVENTS, WEBHOOK]
    result.notes += [
        f"per_s is fires/s ({firing(n)}), bus events/s ({EVENTS}) or 202 answers/s "
        f"({WEBHOOK}); p50/p99 are fire lateness ({firing(n)}) or request latency ({WEBHOOK})",
        "lateness: from a fire's due time to the moment its job's code ran (bench.stamp "
        "returns time.time(); APScheduler's coroutine the same), for the fires due in the "
        "window; middlewared's due time is its fire row's (trigger_fires, read from SQLite "
        "after the window), APScheduler's the run's scheduled_run_time. middlewared stores "
        "each fire and its job durably (SQLite WAL, synchronous=FULL) before the job runs; "
        "APScheduler keeps its jobs in memory (MemoryJobStore) and stores nothing",
        "APScheduler: AsyncIOScheduler on the same loop (uvloop) as middlewared, one process, "
        "its AsyncIOExecutor running an async no-op, misfire_grace_time None, coalesce, one "
        "instance; its schedules fire at the same ms within the second as middlewared's of "
        "the same run (whose phase is each trigger's creation time: the creates are paced "
        f"over {every['spread']} s)",
        f"idle: after the window every schedule is moved to 1 h (trigger.update; APScheduler's "
        f"reschedule_job), so {n} stay armed and none is due; after {every['settle']} s, "
        f"server_busy is the server's CPU over {every['idle_seconds']} s, summed over its "
        "threads' /proc/PID/task/TID/schedstat (ns; /proc/PID/stat's 10 ms ticks read 0)",
        f"{EVENTS}: {n_events} @event triggers whose rules match none of the events "
        "published (no job starts): a mix of job methods no job runs, job ids beyond any "
        "made, state ABORTED (no-op jobs never abort) and trigger.query ids; the bus is "
        f"loaded by bench.yield_once jobs, {size['events']['inflight']} in flight, with one "
        "subscriber of core.get_jobs in both contenders (so both build every event); "
        "events/s is that subscriber's frames; the trigger cost per event is the difference "
        "of server CPU per event between the two",
        f"{WEBHOOK}: one POST body (56 bytes) signed once (no timestamp header, so no replay "
        "check), keep-alive, one request in flight on each of "
        f"{size['webhook']['conns']} connections (loads/rawhttp.py, protocol callbacks); "
        "middlewared's trigger runs bench.noop with overlap 'allow' and no debounce, so "
        "every request starts a job and is answered 202",
    ]
    where = {"data_dir": ""}
    phases: dict[str, list[int]] = {}

    def start_mw(name: str) -> Callable[[], Proc]:
        def go() -> Proc:
            path = ctx.data_dir(name)
            where["data_dir"] = str(path)
            return ctx.middlewared(path)

        return go

    def measure(part: str, extra: Callable[[Proc], dict[str, Any]]) -> Callable[[Proc], Cases]:
        def go(proc: Proc) -> Cases:
            spec = {"part": part, "url": proc.url(), "server_pid": proc.pid, **extra(proc)}
            out = ctx.load("triggers", spec, timeout=900)
            if "phases" in out:
                phases["last"] = out["phases"]
            cases: Cases = out["cases"]
            return cases

        return go

    def mw_every(_proc: Proc) -> dict[str, Any]:
        return {**every, "auth": AUTH, "data_dir": where["data_dir"]}

    def aps_every(_proc: Proc) -> dict[str, Any]:
        return {**every, "target": "apscheduler", "phases": phases.get("last")}

    def mw_events(count: int) -> Callable[[Proc], dict[str, Any]]:
        def spec(_proc: Proc) -> dict[str, Any]:
            return {**size["events"], "triggers": count, "auth": AUTH, "method": "bench.yield_once"}

        return spec

    def hook(with_auth: bool) -> Callable[[Proc], dict[str, Any]]:
        def spec(_proc: Proc) -> dict[str, Any]:
            return {**size["webhook"], "auth": AUTH if with_auth else None}

        return spec

    run_all(
        ctx,
        result,
        [
            Contender(PROJECT, start_mw("every"), measure("every", mw_every)),
            Contender(
                APS,
                lambda: ctx.reference("apscheduler_every"),
                measure("every", aps_every),
                missing("apscheduler"),
            ),
            Contender(PROJECT, start_mw("events"), measure("events", mw_events(n_events))),
            Contender(NO_TRIGGERS, start_mw("events0"), measure("events", mw_events(0))),
            Contender(PROJECT, start_mw("webhook"), measure("webhook", hook(True))),
            Contender(BARE, lambda: ctx.reference("aiohttp_hmac"), measure("webhook", hook(False))),
        ],
    )
    _targets(result, n, n_events)
    return result


def _targets(result: Result, n: int, n_events: int) -> None:
    result.target(
        f"triggers {n} @every 1s: fire lateness p99 vs APScheduler",
        result.ratio(firing(n), "p99_ms", APS),
        "<=",
        1.0,
        "x",
    )
    busy = result.median(idle(n), PROJECT, "server_busy")
    result.target(
        f"triggers {n} @every: server CPU while none is due",
        None if busy is None else 100 * busy,
        "<",
        2.0,
        "% of a core",
    )
    share = result.median(firing(n), PROJECT, "fired_share")
    result.target(
        f"triggers {n} @every 1s: due fires run",
        None if share is None else 100 * share,
        ">=",
        99.0,
        "%",
    )
    ours = result.median(EVENTS, PROJECT, "server_us_per_op")
    bare = result.median(EVENTS, NO_TRIGGERS, "server_us_per_op")
    result.target(
        f"triggers {n_events} @event: trigger cost per bus event (CPU over no triggers)",
        None if ours is None or bare is None else ours - bare,
        "<=",
        20,
        "us",
    )
    result.target(
        f"triggers {n_events} @event: bus events/s vs no triggers",
        result.ratio(EVENTS, "per_s", NO_TRIGGERS),
        ">=",
        0.8,
        "x",
    )
    result.target(
        "triggers webhook hmac-sha256: requests/s vs bare aiohttp",
        result.ratio(WEBHOOK, "per_s", BARE),
        ">=",
        0.6,
        "x",
    )
    result.target(
        "harness: triggers webhook: aiohttp hmac handler busy",
        result.median(WEBHOOK, BARE, "server_busy"),
        ">=",
        0.9,
        " cores",
    )
    result.target(
        "harness: triggers webhook: load client busy (bare handler)",
        result.median(WEBHOOK, BARE, "client_busy"),
        "<=",
        0.8,
        " cores",
    )
