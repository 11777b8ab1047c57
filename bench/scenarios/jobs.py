"""Scenario 2, no-op jobs submitted and completed, persisted, with 1, 8, 32 and 128 in
flight: middlewared (one subscriber watching ``core.get_jobs``) against huey on SQLite and
arq and rq on Redis, each driven by producers as concurrent as its library allows."""

from __future__ import annotations

from collections.abc import Callable

from bench.context import AUTH, Context
from bench.model import PROJECT, Result
from bench.optional import missing
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, note_baseline, run_all, with_baseline

HUEY = "huey (SQLite)"
NEVER_AWAITS = "middlewared, job never awaits"
LEVELS = [1, 8, 32, 128]
# Jobs/s against huey at each level: what the product must reach (the audit's before).
VS_HUEY = {1: (1.5, 1.3), 8: (3.0, 2.65), 32: (6.0, 5.2), 128: (6.0, 6.9)}
SEQUENTIAL_P50_MS = 1.0


def case(n: int) -> str:
    return f"{n} in flight"


def run(ctx: Context) -> Result:
    levels, warmup, seconds = ([1, 8], 0.05, 0.2) if ctx.smoke else (LEVELS, 0.5, 2.0)
    result = Result(
        "jobs",
        "No-op jobs, submit to result, persisted, N in flight (closed loop)",
        {"levels": levels, "warmup_s": warmup, "seconds": seconds},
        columns=["jobs_per_s", "p50_ms", "p99_ms", "server_us_per_op", "client_busy"],
    )
    result.case_order = [case(n) for n in levels]
    result.notes += [
        "middlewared runs bench.yield_once (awaits once, as a job doing any work does; "
        f"'{NEVER_AWAITS}' runs bench.noop, which ends in the step it starts in and so skips "
        "its RUNNING write and event); arq's no-op awaits once too, huey's and rq's are "
        "plain functions",
        "producers: middlewared N calls in flight over ceil(N/32) connections (a job "
        "method's call is answered at its end); huey one thread keeping N in flight and "
        "reading their results with one peek_many a sweep (2 or 4 threads were no faster, "
        "with 3-5x the p99); arq N coroutines, their results read by one sweeper with "
        "one MGET (0.2 ms pause after an empty sweep); rq N threads blocking on their job's "
        "result",
        "durability: middlewared defaults (SQLite WAL, synchronous=FULL, group commit); "
        "huey SqliteHuey defaults (WAL, synchronous=FULL, a commit per operation), "
        "2 worker threads; arq 128 jobs at a time, rq SimpleWorker, both on Redis (memory)",
        "server_us_per_op is the CPU of the measured process only (middlewared; the "
        "queue worker for the references, not Redis); client_busy is the producer's",
    ]
    redis = ctx.redis_problem()

    def mw(method: str) -> Callable[[Proc], Cases]:
        def go(proc: Proc) -> Cases:
            spec = {
                "url": proc.url(),
                "auth": AUTH,
                "method": method,
                "levels": levels,
                "warmup": warmup,
                "seconds": seconds,
                "server_pid": proc.pid,
            }
            cases: Cases = ctx.load("jobs", spec, timeout=300)["cases"]
            return cases

        return go

    def queue(backend: str, where: Callable[[], dict[str, str]]) -> Callable[[Proc], Cases]:
        def go(proc: Proc) -> Cases:
            spec = {
                "backend": backend,
                "levels": levels,
                "warmup": warmup,
                "seconds": seconds,
                "server_pid": proc.pid,
                **where(),
            }
            cases: Cases = ctx.load("queues", spec, timeout=900)["cases"]
            return cases

        return go

    huey_db = {"db": ""}

    def start_huey() -> Proc:
        huey_db["db"] = str(ctx.data_dir("huey") / "huey.db")
        return ctx.reference("huey_worker", ["--db", huey_db["db"]])

    redis_args = ["--redis", ctx.redis_url]
    run_all(
        ctx,
        result,
        with_baseline(
            ctx,
            [
                Contender(
                    PROJECT, lambda: ctx.middlewared(ctx.data_dir("jobs")), mw("bench.yield_once")
                ),
                Contender(
                    NEVER_AWAITS, lambda: ctx.middlewared(ctx.data_dir("jobs")), mw("bench.noop")
                ),
                Contender(HUEY, start_huey, queue("huey", lambda: huey_db), missing("huey")),
                Contender(
                    "arq (Redis)",
                    lambda: ctx.reference("arq_worker", redis_args),
                    queue("arq", lambda: {"redis": ctx.redis_url}),
                    missing("arq") or redis,
                ),
                Contender(
                    "rq (Redis)",
                    lambda: ctx.reference("rq_worker", redis_args),
                    queue("rq", lambda: {"redis": ctx.redis_url}),
                    missing("rq") or redis,
                ),
            ],
            "jobs",
        ),
    )
    note_baseline(ctx, result, "jobs_per_s")
    for n in levels:
        limit, before = VS_HUEY[n]
        result.target(
            f"jobs {n} in flight: jobs/s vs huey (SQLite)",
            result.ratio(case(n), "jobs_per_s", HUEY),
            ">=",
            limit,
            "x",
            before,
        )
    result.target(
        "jobs 1 in flight: submit-to-result p50",
        result.median(case(1), PROJECT, "p50_ms"),
        "<=",
        SEQUENTIAL_P50_MS,
        "ms",
    )
    behind = max(
        (result.median(case(n), PROJECT, "subscriber_behind") or 0.0 for n in levels),
        default=0.0,
    )
    if behind:
        result.notes.append(
            f"the subscriber was still {behind:.0f} job ends behind 30 s after a level"
        )
    return result
