"""Running every contender of a scenario once per run, interleaved, failures recorded."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.context import Context
from bench.model import Result
from bench.procs import Proc, ProcessFailed, spawn

Cases = dict[str, dict[str, Any]]


@dataclass
class Contender:
    name: str
    # Starts the process that is measured.
    start: Callable[[], Proc]
    # Drives it once; returns metrics by case.
    measure: Callable[[Proc], Cases]
    # Why it cannot run here (a missing package or service), else None.
    missing: str | None = None


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_all(ctx: Context, result: Result, contenders: list[Contender]) -> None:
    """Each run measures every contender in turn, so drift hits them all alike."""
    for c in contenders:
        if c.missing:
            result.skip(c.name, c.missing)
            say(f"[{result.name}] {c.name}: skipped ({c.missing})")
    for run in range(ctx.runs):
        for c in contenders:
            if not result.ok(c.name):
                continue
            say(f"[{result.name}] run {run + 1}/{ctx.runs}: {c.name}")
            cases = _once(result, c)
            for case, metrics in (cases or {}).items():
                result.add(case, c.name, metrics)


def _once(result: Result, c: Contender) -> Cases | None:
    proc: Proc | None = None
    try:
        proc = c.start()
        return c.measure(proc)
    except (ProcessFailed, OSError, KeyError, ValueError) as e:
        result.fail(c.name, f"{type(e).__name__}: {e}")
        say(f"[{result.name}] {c.name} failed: {e}")
        if proc is not None:
            say(proc.tail())
        return None
    finally:
        if proc is not None:
            proc.stop()


def with_baseline(ctx: Context, contenders: list[Contender], data: str) -> list[Contender]:
    """``contenders`` with the baseline checkout's server right after this one's (the first),
    started the same way and measured with the same load."""
    if ctx.baseline is None:
        return contenders
    tree = ctx.baseline
    first = contenders[0]
    twin = Contender(
        ctx.baseline_name(),
        lambda: ctx.middlewared(ctx.data_dir(data), tree=tree),
        first.measure,
        None if (tree / ".venv" / "bin" / "python").exists() else f"no {tree}/.venv",
    )
    return [first, twin, *contenders[1:]]


def note_baseline(ctx: Context, result: Result, metric: str) -> None:
    """One note per case: this checkout's ``metric`` over the baseline's, median of runs."""
    if ctx.baseline is None:
        return
    name = ctx.baseline_name()
    for case in result.case_order:
        ratio = result.ratio(case, metric, name)
        if ratio is not None:
            result.notes.append(f"{case}: {metric} {ratio:.2f}x the baseline's ({name})")


def stand_in(ctx: Context, log_name: str = "spawner") -> Callable[[], Proc]:
    """A process that only holds a bare reference's place (the bare loop runs in the load
    process itself) until it is stopped."""

    def start() -> Proc:
        argv = [sys.executable, "-m", "bench.references.spawner"]
        return spawn("spawner", argv, ctx.scratch / "logs" / f"{log_name}.log")

    return start
