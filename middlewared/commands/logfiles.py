"""Each run's log kept under karajo's name, ``<name>.<counter>.<status>`` (``success`` or
``fail``; no status while it runs, which karajo reads as failed), in
``<logs-dir>/commands/<name>/``: a hard link to the job's log, so that purging old jobs and
a command's ``log_retention`` do not depend on each other."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

STATUSES = ("success", "fail")


class LogFiles:
    def __init__(self, logs_dir: Path) -> None:
        self.root = logs_dir / "commands"

    def folder(self, name: str) -> Path:
        return self.root / name

    def path(self, name: str, counter: int, status: str | None = None) -> Path:
        suffix = f".{status}" if status else ""
        return self.folder(name) / f"{name}.{counter}{suffix}"

    def start(self, name: str, counter: int, job_log: Path) -> None:
        """The run's log appears under its name as the job writes it."""
        self.folder(name).mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # no hard links here: copied at the end
            os.link(job_log, self.path(name, counter))

    def finish(self, name: str, counter: int, status: str, job_log: Path | None) -> None:
        running = self.path(name, counter)
        done = self.path(name, counter, status)
        try:
            running.rename(done)
        except FileNotFoundError:
            if job_log is not None and job_log.exists():
                self.folder(name).mkdir(mode=0o700, parents=True, exist_ok=True)
                shutil.copyfile(job_log, done)
                done.chmod(0o600)

    def find(self, name: str, counter: int) -> Path | None:
        for status in (*STATUSES, None):
            path = self.path(name, counter, status)
            if path.exists():
                return path
        return None

    def remove(self, name: str, counter: int) -> None:
        for status in (*STATUSES, None):
            self.path(name, counter, status).unlink(missing_ok=True)

    def remove_all(self, name: str) -> None:
        shutil.rmtree(self.folder(name), ignore_errors=True)

    def counters(self, name: str) -> dict[int, str | None]:
        """The runs whose log is here, by counter, with their status (None: unfinished)."""
        pattern = re.compile(rf"^{re.escape(name)}\.(\d+)(?:\.(success|fail))?$")
        found: dict[int, str | None] = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.folder(name)):
                m = pattern.match(entry.name)
                if m:
                    found[int(m.group(1))] = m.group(2)
        return found
