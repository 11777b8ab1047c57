"""What a hook run is given (``Run``) and what it left (``RunRecord``), and where records go:
the last ones in memory for ``hook.runs``, every one to ``--trigger-log`` as a JSON line (or
to the server's log)."""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from middlewared import jsonc

log = logging.getLogger(__name__)

# Runs ``hook.runs`` can list.
KEPT_RUNS = 1000
# What a run costs in memory while it waits besides its arguments and stdin (a bound on
# waiting runs counts it).
RUN_OVERHEAD = 256


@dataclass(frozen=True, slots=True)
class Run:
    """One run to make: ``script`` (a path in the directory) for ``event``."""

    event: str
    script: Path
    args: tuple[str, ...]
    stdin: bytes | None = None

    @property
    def size(self) -> int:
        stdin = len(self.stdin) if self.stdin is not None else 0
        return RUN_OVERHEAD + stdin + sum(len(a) for a in self.args)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """How a run went. ``exit_code`` is minus the signal that ended it; None when it never
    started (``error`` says why)."""

    event: str
    script: str
    args: tuple[str, ...]
    started: float  # seconds since the epoch
    duration: float  # seconds
    exit_code: int | None
    timed_out: bool = False
    output_tail: str = ""
    output_bytes: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def record(self) -> dict[str, Any]:
        """As ``hook.runs`` lists it."""
        return {
            "script": self.script,
            "event": self.event,
            "args": list(self.args),
            "exit_code": self.exit_code,
            "duration": round(self.duration, 6),
            "started": {"$date": int(self.started * 1000)},
            "timed_out": self.timed_out,
            "output_tail": self.output_tail,
            "output_bytes": self.output_bytes,
            "error": self.error,
        }


@dataclass
class RunLog:
    """The last ``KEPT_RUNS`` records, newest last; each one logged as it comes."""

    file: Path | None = None
    kept: deque[RunRecord] = field(default_factory=lambda: deque(maxlen=KEPT_RUNS))
    _out: IO[str] | None = None

    def open(self) -> None:
        if self.file is not None:
            fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            self._out = os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def add(self, run: RunRecord) -> None:
        self.kept.append(run)
        if self._out is not None:
            self._write({"time": run.started, **run.record()})
        if not run.ok:
            how = _outcome(run)
            tail = run.output_tail[-400:].rstrip()
            log.warning("hook %s (%s) %s; output tail: %r", run.script, run.event, how, tail)
        elif self._out is None:
            log.info("hook %s (%s) exited 0 in %.3f s", run.script, run.event, run.duration)

    def note(self, event: str, script: Path, message: str) -> None:
        """Something about a script that is not a run (not executable, runs dropped)."""
        log.warning("hook %s (%s): %s", script, event, message)
        if self._out is not None:
            self._write({"event": event, "script": str(script), "message": message})

    def _write(self, entry: dict[str, Any]) -> None:
        out = self._out
        if out is None:
            return
        try:
            out.write(jsonc.dumps(entry) + "\n")
        except OSError as e:
            log.error("--trigger-log %s: %s (hook runs go on, unlogged there)", self.file, e)

    def last(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` records, newest first."""
        out: list[dict[str, Any]] = []
        for run in reversed(self.kept):
            if len(out) >= limit:
                break
            out.append(run.record())
        return out


def _outcome(run: RunRecord) -> str:
    if run.error is not None:
        return f"did not run: {run.error}"
    if run.timed_out:
        return f"timed out after {run.duration:.1f} s (exit code {run.exit_code})"
    return f"exited with code {run.exit_code} after {run.duration:.3f} s"
