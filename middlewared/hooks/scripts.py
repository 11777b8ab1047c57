"""The trigger directory: the script of an event, looked up at each event (a stat), so that
scripts appear and disappear without a restart. A file that cannot be run is reported once
per version of it, never run."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# Versions of files reported as not runnable that are remembered (past it: forgotten, and
# reported again if they are still there).
MAX_REPORTED = 1000

Report = Callable[[str, Path, str], None]


def valid_event(name: str) -> bool:
    """Whether ``name`` can name a file of the directory (and no other)."""
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


class ScriptDir:
    def __init__(self, path: Path, report: Report) -> None:
        self.path = path
        # ``report(event, path, why)``: a file that is there and cannot be run.
        self._report = report
        self._reported: set[tuple[str, int, int]] = set()

    def check(self) -> None:
        """At start: the directory must exist; one others may write to is a warning (any
        file they drop there runs with the server's privileges)."""
        st = self.path.stat()
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(f"--trigger-dir {self.path}: not a directory")
        if st.st_mode & 0o022:
            log.warning(
                "--trigger-dir %s is writable by others (mode %o): whatever they put there "
                "runs with the server's privileges",
                self.path,
                stat.S_IMODE(st.st_mode),
            )

    def find(self, event: str) -> Path | None:
        """The script to run for ``event`` now, or None (no file, or one that cannot be run:
        reported the first time this version of it is seen)."""
        if not valid_event(event):
            return None
        path = self.path / event
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            self._once(event, path, 0, 0, f"cannot be read: {e.strerror}")
            return None
        if not stat.S_ISREG(st.st_mode):
            self._once(event, path, st.st_ino, st.st_mtime_ns, "not a regular file")
            return None
        if not os.access(path, os.X_OK):
            self._once(event, path, st.st_ino, st.st_mtime_ns, "not executable")
            return None
        return path

    def _once(self, event: str, path: Path, ino: int, mtime: int, why: str) -> None:
        key = (event, ino, mtime)
        if key in self._reported:
            return
        if len(self._reported) >= MAX_REPORTED:
            self._reported.clear()
        self._reported.add(key)
        self._report(event, path, why)
