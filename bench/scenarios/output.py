"""Scenario 9, command output throughput: one command run writing text lines to stdout, cut
into lines, stamped and written to its job's log, against the same line's stdout read to its
end by a bare asyncio reader (``cat file > /dev/null``-style piping); the server's RSS
before the run and at its peak during it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.context import AUTH, Context
from bench.loads.commands import OUTPUT_CASE
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all
from bench.scenarios._common import stand_in as common_stand_in

BARE = "bare asyncio reader"
BARE_FILE = "bare reader into a file"
WHOLE = "middlewared, whole log kept"
GIB = 1 << 30


def run(ctx: Context) -> Result:
    size = 32 * 2**20 if ctx.smoke else GIB
    result = Result(
        "output",
        f"Command output throughput: {size // 2**20} MiB of text lines on stdout, one run",
        {"bytes": size},
        columns=["mb_per_s", "seconds", "rss_growth_mib"],
    )
    result.notes.append(
        "middlewared stamps each line with the time and its stream and writes it to the job's "
        "log file: up to the default --max-job-log (64 MiB), past which it reads and drops; "
        "'whole log kept' raises --max-job-log above the size, so nothing is cut; the bare reader "
        "runs in the load process and drops what it reads (the issue's reference); the "
        "second one appends what it reads to a file, unstamped: the disk's own bound"
    )

    def go(bare: bool, into_file: bool = False) -> Callable[[Proc], Cases]:
        def measure(proc: Proc) -> Cases:
            spec: dict[str, Any] = {"bare": bare, "output": size}
            if into_file:
                spec["into"] = str(ctx.scratch / "bare-output.log")
            if not bare:
                spec |= {"url": proc.url(), "auth": AUTH, "server_pid": proc.pid}
            cases: Cases = ctx.load("commands", spec, timeout=600)["cases"]
            return cases

        return measure

    def server(whole: bool) -> Callable[[], Proc]:
        extra = ["--max-job-log", str(3 * size)] if whole else []
        return lambda: ctx.middlewared(ctx.data_dir("output"), extra)

    stand_in = common_stand_in(ctx)

    run_all(
        ctx,
        result,
        [
            Contender(PROJECT, server(False), go(False)),
            Contender(WHOLE, server(True), go(False)),
            Contender(BARE, stand_in, go(True)),
            Contender(BARE_FILE, stand_in, go(True, into_file=True)),
        ],
    )
    result.target(
        "output: MB/s into the job log vs a bare reader",
        result.ratio(OUTPUT_CASE, "mb_per_s", BARE),
        ">=",
        0.8,
        "x",
    )
    result.target(
        "output: MB/s, whole log kept, vs a bare reader into a file",
        result.ratio(OUTPUT_CASE, "mb_per_s", BARE_FILE, of=WHOLE),
        ">=",
        0.8,
        "x",
    )
    result.target(
        "output: server RSS growth during the run",
        result.median(OUTPUT_CASE, PROJECT, "rss_growth_mib"),
        "<=",
        32.0,
        "MiB",
    )
    return result
