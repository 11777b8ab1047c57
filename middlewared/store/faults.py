"""What a failed write to the data dir means, in words and an errno a client can act on.

SQLite says "database or disk is full", "attempt to write a readonly database" or just
"disk I/O error" (it cannot create its WAL index on a full disk); the file system holding
the data dir tells which of these it is.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from pathlib import Path

from middlewared.errors import CallError

# Below this much free space a failed write is taken to be the disk being full.
NEARLY_FULL_BYTES = 1024 * 1024

_SQLITE_ERRNOS = {
    sqlite3.SQLITE_FULL: errno.ENOSPC,
    sqlite3.SQLITE_READONLY: errno.EROFS,
    sqlite3.SQLITE_IOERR: errno.EIO,
    sqlite3.SQLITE_CANTOPEN: errno.EACCES,
}


def disk_state(path: Path) -> tuple[int, str] | None:
    """(errno, words) when the file system holding ``path`` is read-only or full, else None.

    A file system the kernel turned read-only after an error may still say "rw" in its
    mount flags, so a failed write is also tried once beside ``path``.
    """
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    folder = probe if probe.is_dir() else probe.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return errno.EROFS, f"the file system holding {path} is read-only"
    if st.f_bavail * st.f_frsize < NEARLY_FULL_BYTES:
        return errno.ENOSPC, f"the disk holding {path} is full"
    try:
        with tempfile.TemporaryFile(dir=folder) as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.errno == errno.EROFS:
            return errno.EROFS, f"the file system holding {path} is read-only"
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return e.errno, f"the disk holding {path} is full"
        return e.errno or errno.EIO, f"{path} cannot be written: {e.strerror}"
    return None


def store_error(action: str, exc: BaseException, path: Path) -> CallError:
    """A CallError saying why ``action`` failed, with the errno of the real cause."""
    code = getattr(exc, "sqlite_errorcode", None)
    number = _SQLITE_ERRNOS.get(code & 0xFF, errno.EIO) if isinstance(code, int) else None
    if number is None:
        number = exc.errno if isinstance(exc, OSError) and exc.errno else errno.EIO
    state = disk_state(path)
    reason = f"{action}: {exc}"
    if state is not None:
        number, words = state
        reason += f" ({words})"
    return CallError(reason, number)
