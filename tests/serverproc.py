"""Start the real middlewared as a subprocess on a free port, for acceptance tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

READY = re.compile(r"middlewared listening on (https?)://([\d.]+):(\d+)")
ROOT_PASSWORD = "test-root-password"


@dataclass
class ServerProc:
    """A running server; ``output`` collects its stdout and stderr lines."""

    data_dir: Path
    args: list[str]
    password: str = ROOT_PASSWORD
    host: str = "127.0.0.1"
    port: int = 0
    scheme: str = "http"
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # Run in the child before the server starts (e.g. to lower its RLIMIT_NOFILE).
    preexec: Callable[[], None] | None = None
    _drainer: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        ws = "wss" if self.scheme == "https" else "ws"
        return f"{ws}://{self.host}:{self.port}/api/current"

    def start(self, timeout: float = 30.0) -> ServerProc:
        env = dict(os.environ)
        env["MIDDLEWARED_ROOT_PASSWORD"] = self.password
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        cmd = [sys.executable, "-m", "middlewared", "--host", self.host, "--port", "0"]
        cmd += ["--data-dir", str(self.data_dir), *self.args]
        self.process = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
            preexec_fn=self.preexec,
        )
        ready = threading.Event()
        self._drainer = threading.Thread(
            target=self._drain, args=(self.process, ready), daemon=True
        )
        self._drainer.start()
        if not ready.wait(timeout) or self.port == 0:
            self.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.output[-50:]))
        return self

    def _drain(self, process: subprocess.Popen[str], ready: threading.Event) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.output.append(line)
            m = READY.search(line)
            if m and not ready.is_set():
                self.scheme = m.group(1)
                self.port = int(m.group(3))
                ready.set()
        ready.set()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._release()
        return code

    def _release(self) -> None:
        """Wait for the output to be drained, then close the pipe."""
        if self._drainer is not None:
            self._drainer.join(10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self._release()

    def restart(self) -> ServerProc:
        self.stop()
        self.output.clear()
        return self.start()

    def log_text(self) -> str:
        return "".join(self.output)
