"""Scenario 9, hook scripts: N ``on.core.ping`` runs (``--trigger-on-api``) while another
script (``on.auth.me``) hangs for the whole window, against the same script spawned with
``asyncio.create_subprocess_exec`` and awaited in a bare loop (one after another, as one
script's runs go)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.context import AUTH, Context
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all
from bench.scenarios._common import stand_in as common_stand_in

BARE = "bare asyncio subprocess"
QUICK = "on.core.ping"
HUNG = "on.auth.me"


def case(n: int) -> str:
    return f"{n} on.core.ping runs, 1 hung script"


def scripts(folder: Path) -> Path:
    """The quick script (what both contenders run) and the one that hangs."""
    folder.mkdir(parents=True, exist_ok=True)
    quick = folder / QUICK
    quick.write_text('#!/bin/sh\n[ "$2" = success ] || exit 1\n')
    hung = folder / HUNG
    hung.write_text("#!/bin/sh\nexec sleep 3600\n")
    for path in (quick, hung):
        path.chmod(0o755)
    return quick


def run(ctx: Context) -> Result:
    n = 50 if ctx.smoke else 1000
    result = Result(
        "hooks",
        "Hook scripts: on.<method> runs with a hung script present, vs a bare spawn",
        {"runs": n},
        columns=[
            "per_run_ms",
            "runs_per_s",
            "run_p50_ms",
            "completed",
            "server_us_per_op",
            "client_busy",
        ],
    )
    folder = ctx.scratch / "hooks"
    quick = scripts(folder)
    result.notes += [
        f"middlewared: --trigger-on-api, {HUNG} hangs (sleep) for the whole window while "
        f"{n} core.ping calls (one in flight) each queue a run of {QUICK}; per_run_ms is the "
        f"wall time from the first call until hook.status counts {n} runs finished, over {n}; "
        "run_p50_ms is the runs' own duration (spawn to reap) as hook.runs gives it; "
        "completed counts runs that exited 0",
        f"bare: the same script with the same four arguments, spawned {n} times one after "
        "another with asyncio.create_subprocess_exec in the load process (one script's runs "
        "go one at a time in middlewared too); client_busy is the load process's CPU",
    ]

    def go(bare: bool) -> Callable[[Proc], Cases]:
        def measure(proc: Proc) -> Cases:
            spec: dict[str, Any] = {"bare": bare, "runs": n, "script": str(quick)}
            if not bare:
                spec |= {"url": proc.url(), "auth": AUTH, "server_pid": proc.pid}
            cases: Cases = ctx.load("hooks", spec, timeout=600)["cases"]
            return cases

        return measure

    def start_mw() -> Proc:
        extra = ["--trigger-dir", str(folder), "--trigger-on-api", "--trigger-timeout", "3600"]
        return ctx.middlewared(ctx.data_dir("hooks"), extra)

    stand_in = common_stand_in(ctx, "spawner-hooks")

    run_all(
        ctx,
        result,
        [Contender(PROJECT, start_mw, go(False)), Contender(BARE, stand_in, go(True))],
    )
    result.target(
        "hooks: time per on.<method> run vs bare subprocess",
        result.ratio(case(n), "per_run_ms", BARE),
        "<=",
        2.0,
        "x",
    )
    result.target(
        "hooks: runs completed beside a hung script",
        result.median(case(n), PROJECT, "completed"),
        ">=",
        n,
    )
    return result
