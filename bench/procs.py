"""Child processes: contenders started until they say they are ready, and load runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# middlewared and the references print the first; queue workers print the second.
READY = re.compile(r"listening on https?://[\d.]+:(\d+)|bench worker ready")
ROOT = Path(__file__).resolve().parent.parent


class ProcessFailed(RuntimeError):
    """A contender or a load process failed; the message ends with its output."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    started_in: float = 0.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def url(self, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}"

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it does not go; returns its exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(timeout)

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _pythonpath() -> str:
    """The repository first (``bench`` is not installed), then whatever was set."""
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    cwd: Path = ROOT,
) -> Proc:
    """Start ``argv`` in ``cwd`` with its output in ``log_path``; return once it printed it is
    ready."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONPATH": _pythonpath(), **(env or {})}
    started = time.perf_counter()
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
    proc = Proc(name, popen, log_path)
    deadline = started + timeout
    while time.perf_counter() < deadline:
        m = READY.search(log_path.read_text(errors="replace"))
        if m:
            proc.started_in = time.perf_counter() - started
            proc.port = int(m.group(1) or 0)
            return proc
        if popen.poll() is not None:
            break
        time.sleep(0.002)
    proc.stop(5)
    raise ProcessFailed(f"{name} did not start:\n{proc.tail()}")


def run_load(kind: str, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run ``python -m bench.load KIND`` with ``spec`` on stdin; its JSON result."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.load", kind],
            input=json.dumps(spec).encode(),
            capture_output=True,
            timeout=timeout,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": _pythonpath()},
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ProcessFailed(f"load {kind} did not finish within {timeout:.0f} s") from e
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()[-15:]
        raise ProcessFailed(f"load {kind} exited {done.returncode}:\n" + "\n".join(err))
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result
