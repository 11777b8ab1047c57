"""Per-job log files in the data dir, and the excerpt kept in the job record."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

EXCERPT_BYTES = 4096


class JobLog:
    """A job's log file, opened on first write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    @property
    def path_str(self) -> str:
        return str(self.path)

    def write(self, text: str) -> None:
        if self._file is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._file = os.fdopen(fd, "a", encoding="utf-8", errors="replace")
        self._file.write(text if text.endswith("\n") else text + "\n")
        self._file.flush()

    def close(self) -> str | None:
        """Close and return the tail of the log, or None when nothing was written."""
        if self._file is not None:
            self._file.close()
            self._file = None
        return excerpt(self.path)


def excerpt(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - EXCERPT_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
