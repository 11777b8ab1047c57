"""Scenario 7, command job overhead: ``command.run`` of ``true`` (submit to SUCCESS: a
persisted job, a process group, its pipes and token, karajo's log) against
``asyncio.create_subprocess_exec("true")`` awaited in a bare loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.context import AUTH, Context
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all
from bench.scenarios._common import stand_in as common_stand_in

BARE = "bare asyncio subprocess"
CASE = "true, 1 at a time"


def run(ctx: Context) -> Result:
    warmup, seconds = (0.1, 0.5) if ctx.smoke else (0.5, 3.0)
    result = Result(
        "commands",
        "Command job overhead: command.run of true, one after another",
        {"warmup_s": warmup, "seconds": seconds},
        columns=["jobs_per_s", "p50_ms", "p99_ms", "server_us_per_op"],
    )
    result.notes.append(
        "the bare loop runs in the load process (its stand-in process does nothing); "
        "middlewared's runs are persisted jobs with defaults (SQLite WAL, synchronous=FULL)"
    )

    def go(bare: bool) -> Callable[[Proc], Cases]:
        def measure(proc: Proc) -> Cases:
            spec: dict[str, Any] = {"bare": bare, "warmup": warmup, "seconds": seconds}
            if not bare:
                spec |= {"url": proc.url(), "auth": AUTH, "server_pid": proc.pid}
            cases: Cases = ctx.load("commands", spec, timeout=300)["cases"]
            return cases

        return measure

    stand_in = common_stand_in(ctx)

    run_all(
        ctx,
        result,
        [
            Contender(PROJECT, lambda: ctx.middlewared(ctx.data_dir("commands")), go(False)),
            Contender(BARE, stand_in, go(True)),
        ],
    )
    result.target(
        "commands: time per run vs bare subprocess",
        result.ratio(CASE, "p50_ms", BARE),
        "<=",
        2.0,
        "x",
    )
    result.target(
        "commands: runs per second", result.median(CASE, PROJECT, "jobs_per_s"), ">=", 200
    )
    return result
