"""Running every contender of a scenario once per run, interleaved, failures recorded."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.context import Context
from bench.model import Result
from bench.procs import Proc, ProcessFailed

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
