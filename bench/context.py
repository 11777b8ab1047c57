"""What every scenario is given: sizes, scratch space, and how to start contenders."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import ROOT, Proc, run_load, spawn

PASSWORD = "bench-root-password"
AUTH = {"user": "root", "password": PASSWORD}
# The bench plugin only: a test plugin's event listener would be measured with the server.
PLUGIN_DIRS = (ROOT / "bench" / "plugins",)


@dataclass
class Context:
    out: Path
    scratch: Path
    smoke: bool
    runs: int
    redis_url: str
    # Another checkout (with its own .venv) whose server runs beside this one: before/after.
    baseline: Path | None = None
    _count: int = field(default=0)

    def data_dir(self, name: str) -> Path:
        self._count += 1
        path = self.scratch / f"{self._count:03d}-{name}"
        (path / "files").mkdir(parents=True)
        return path

    def _log(self, name: str) -> Path:
        return self.scratch / "logs" / f"{self._count:03d}-{name}.log"

    def middlewared(
        self,
        data_dir: Path,
        extra: Sequence[str] = (),
        raise_nofile: bool = False,
        timeout: float = 120.0,
        tree: Path | None = None,
    ) -> Proc:
        """The server on a free port with the bench plugin; ``raise_nofile`` starts
        it through a wrapper that lifts its open-file limit to the hard maximum. ``tree``: run
        that checkout's server (its own .venv, imported from its folder) with this checkout's
        bench plugin, so both run the same jobs."""
        entry = ["-m", "bench.serverwrap"] if raise_nofile else ["-m", "middlewared"]
        python = str(tree / ".venv" / "bin" / "python") if tree else sys.executable
        argv = [python, *entry, "--host", "127.0.0.1", "--port", "0"]
        argv += ["--data-dir", str(data_dir), "--fs-root", str(data_dir / "files")]
        for folder in PLUGIN_DIRS:
            argv += ["--plugins-dir", str(folder)]
        env = {"MIDDLEWARED_ROOT_PASSWORD": PASSWORD}
        if tree:
            env["PYTHONPATH"] = str(tree)
        name = "baseline" if tree else "middlewared"
        log = self._log(name)
        return spawn(name, [*argv, *extra], log, env, timeout, cwd=tree or ROOT)

    def baseline_name(self) -> str:
        """How the baseline's figures are labelled: its commit, else its folder."""
        assert self.baseline is not None
        try:
            rev = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=self.baseline,
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            rev = self.baseline.name
        return f"middlewared at {rev} (baseline)"

    def reference(self, module: str, args: Sequence[str] = ()) -> Proc:
        """``python -m bench.references.MODULE --port 0 ARGS``."""
        self._count += 1
        argv = [sys.executable, "-m", f"bench.references.{module}", "--port", "0", *args]
        return spawn(module, argv, self._log(module))

    def load(self, kind: str, spec: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        return run_load(kind, spec, timeout)

    def redis_problem(self) -> str | None:
        """Why Redis cannot be used (None when it answers PING)."""
        host, port = _redis_address(self.redis_url)
        try:
            with socket.create_connection((host, port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                if not s.recv(64).startswith(b"+PONG"):
                    return f"Redis at {host}:{port} did not answer PING"
        except OSError as e:
            return f"Redis is not reachable at {host}:{port} ({e})"
        return None


def _redis_address(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return host or "127.0.0.1", int(port or 6379)
