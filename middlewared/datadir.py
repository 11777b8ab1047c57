"""The data dir: one owner at a time (an exclusive lock held while the server runs), and
private to the server (0700, its files 0600, tightened at start if an older install left
them open)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from pathlib import Path

from middlewared.errors import CallError

log = logging.getLogger(__name__)

LOCK_NAME = "middlewared.lock"


class DataDirInUse(CallError):
    """Another server holds the data dir."""

    default_errno = errno.EBUSY


class DataDirLock:
    """``flock`` on ``<data-dir>/middlewared.lock``, which holds the owner's pid.

    The kernel drops the lock when the process dies, however it dies, so a crashed server
    never blocks the next one; a second server started on a live one's data dir is refused
    before it touches anything (it would fail the first one's running jobs and reuse its
    job ids).
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise DataDirInUse(
                f"The data dir {self.path.parent} is in use by {who} (another middlewared "
                "serves it); stop that server or choose another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        data = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(data) if data.isdigit() else None
    except OSError:
        return None


def prepare(data_dir: Path) -> None:
    """Create the data dir 0700 (its parents as the umask says)."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(mode=0o700, exist_ok=True)


def tighten(data_dir: Path, private_dirs: list[Path]) -> int:
    """Take group and other permissions off the data dir and ``private_dirs``, and off the
    files directly in those that were open to others.

    Returns how many had to be changed; logs one warning when any did (an older install
    created them world-readable, and the database holds password and key hashes).
    """
    changed = 0
    for folder in [data_dir, *private_dirs]:
        was_open = _chmod(folder)
        changed += was_open
        if not was_open or not folder.is_dir():
            continue  # a private folder already keeps its files from others
        for entry in folder.iterdir():
            if entry.is_file() and not entry.is_symlink():
                changed += _chmod(entry)
    if changed:
        log.warning(
            "%d files or folders in the data dir %s were readable by others; made private",
            changed,
            data_dir,
        )
    return changed


def _chmod(path: Path) -> int:
    """Take group and other permissions away; 1 when there were any."""
    try:
        current = stat.S_IMODE(path.lstat().st_mode)
    except FileNotFoundError:
        return 0
    if current & 0o077 == 0:
        return 0
    path.chmod(current & 0o700)
    return 1
