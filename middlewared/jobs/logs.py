"""Per-job log files in the data dir, bounded by ``--max-job-log``, and the excerpt kept in
the job record (live while the job runs: its last bytes are held in memory)."""

from __future__ import annotations

import os
from pathlib import Path

EXCERPT_BYTES = 4096
DEFAULT_MAX_LOG_BYTES = 64 * 1024 * 1024


class JobLog:
    """A job's log file, opened on first write. Past ``max_bytes`` nothing more is kept: the
    log says where it was cut and, when it is closed, how much was left out."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_LOG_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.written = 0
        self.dropped = 0
        self._fd: int | None = None
        self._tail = bytearray()

    @property
    def path_str(self) -> str:
        return str(self.path)

    @property
    def cut(self) -> bool:
        return self.dropped > 0

    def write(self, text: str) -> None:
        """Append a line of text (a newline is added when missing)."""
        data = text.encode("utf-8", "replace")
        self.write_bytes(data if data.endswith(b"\n") else data + b"\n")

    def write_bytes(self, data: bytes) -> None:
        """Append bytes as they are, up to the bound."""
        room = self.max_bytes - self.written
        if len(data) > room:
            if self.dropped == 0:
                kept = data[: max(room, 0)]
                note = f"\n[log cut at {self.max_bytes} bytes (--max-job-log)]\n".encode()
                self._append(kept + note)
            self.dropped += len(data) - max(room, 0)
            self.written = max(self.written, self.max_bytes)
            return
        self._append(data)
        self.written += len(data)

    def drop_if_full(self, size: int) -> bool:
        """Once the log was cut, count ``size`` more bytes as not kept and say so (a child's
        output past the bound is then dropped unread by its reader, not stamped first)."""
        if self.dropped == 0:
            return False
        self.dropped += size
        return True

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        tail = self._tail
        tail += data[-EXCERPT_BYTES:]
        del tail[:-EXCERPT_BYTES]

    def open_now(self) -> None:
        """Create the file now (empty), so that it can be linked before anything is written."""
        if self._fd is None:
            self._append(b"")

    def live_excerpt(self) -> str | None:
        """The last bytes written so far (None when nothing was)."""
        return self._tail.decode("utf-8", "replace") if self._tail else None

    def close(self) -> str | None:
        """Close and return the tail of the log, or None when nothing was written."""
        if self._fd is not None:
            if self.dropped:
                self._append(f"[{self.dropped} more bytes were not kept]\n".encode())
            os.close(self._fd)
            self._fd = None
        return excerpt(self.path)


def excerpt(path: Path) -> str | None:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - EXCERPT_BYTES))
            return f.read().decode("utf-8", errors="replace") or None
    except FileNotFoundError:
        return None
