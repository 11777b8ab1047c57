"""Scenario 2, no-op jobs submitted and completed, persisted: middlewared (one subscriber
watching ``core.get_jobs``) against huey on SQLite and arq and rq on Redis."""

from __future__ import annotations

from collections.abc import Callable

from bench.context import AUTH, Context
from bench.model import PROJECT, Result
from bench.optional import missing
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all

HUEY = "huey (SQLite)"


def run(ctx: Context) -> Result:
    if ctx.smoke:
        ours, theirs, warmup, sequential = 100, 50, 20, 20
    else:
        ours, theirs, warmup, sequential = 5000, 2000, 500, 500
    conns, inflight = 4, 32
    result = Result(
        "jobs",
        "No-op jobs, submit to complete, persisted",
        {
            "middlewared_jobs": ours,
            "reference_jobs": theirs,
            "warmup_jobs": warmup,
            "sequential_jobs": sequential,
            "middlewared_concurrency": f"{conns} connections x {inflight} calls in flight",
        },
        columns=["jobs_per_s", "p50_ms", "p99_ms", "server_us_per_op"],
    )
    result.notes += [
        "middlewared: default durability (SQLite WAL, synchronous=FULL, group commit); "
        "huey: SqliteHuey defaults (WAL, synchronous=FULL, a commit per operation), "
        "2 worker threads; arq: 128 jobs at a time; rq: SimpleWorker",
        "server_us_per_op is the CPU of the measured process only (middlewared; the "
        "queue worker for the references, not their producer or Redis)",
    ]
    redis = ctx.redis_problem()

    def mw(proc: Proc) -> Cases:
        spec = {
            "url": proc.url(),
            "auth": AUTH,
            "method": "bench.noop",
            "count": ours,
            "warmup": warmup,
            "conns": conns,
            "inflight": inflight,
            "sequential": sequential,
            "server_pid": proc.pid,
        }
        cases: Cases = ctx.load("jobs", spec, timeout=300)["cases"]
        return cases

    def queue(backend: str, where: Callable[[], dict[str, str]]) -> Callable[[Proc], Cases]:
        def go(proc: Proc) -> Cases:
            spec = {
                "backend": backend,
                "count": theirs,
                "warmup": warmup,
                "sequential": sequential,
                "server_pid": proc.pid,
                **where(),
            }
            cases: Cases = ctx.load("queues", spec, timeout=600)["cases"]
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
        [
            Contender(PROJECT, lambda: ctx.middlewared(ctx.data_dir("jobs")), mw),
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
    )
    result.target(
        "jobs: jobs/s vs huey (SQLite)",
        result.ratio("throughput", "jobs_per_s", HUEY),
        ">=",
        3,
        "x",
    )
    result.target(
        "jobs: sequential submit-to-result p50",
        result.median("sequential", PROJECT, "p50_ms"),
        "<=",
        1.5,
        "ms",
    )
    return result
