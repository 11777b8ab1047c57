"""archive.unzip's work: checked entries extracted into a temporary folder inside the
destination, then moved into place under free names; removed whole on any failure."""

from __future__ import annotations

import contextlib
import copy
import errno
import logging
import os
import threading
import time
import zipfile
import zlib

from middlewared.roots import Dir

from .blocking import Progress, Stopped
from .zipcheck import Entry, Refused, numbered

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
MAX_NUMBER = 10_000


def _mode(info: zipfile.ZipInfo, default: int) -> int:
    mode = (info.external_attr >> 16) & 0o777 if info.create_system == 3 else 0
    return mode or default


def _stamp(info: zipfile.ZipInfo) -> float:
    try:
        return time.mktime((*info.date_time, 0, 0, -1))
    except (OverflowError, ValueError):
        return time.time()


class Extraction:
    """The temporary folder ``tmp`` inside ``dest`` that entries are written into."""

    def __init__(self, archive: zipfile.ZipFile, dest: Dir, tmp: str) -> None:
        self.archive = archive
        self.dest = dest
        self.tmp = tmp
        dest.mkdir(tmp, 0o700)
        try:
            self.folder = dest.subdir([tmp])
        except BaseException:
            dest.rmdir(tmp)
            raise
        self.made: set[tuple[str, ...]] = set()

    def close(self) -> None:
        self.folder.close()

    def _dirs(self, parts: tuple[str, ...]) -> None:
        for i in range(1, len(parts) + 1):
            if parts[:i] not in self.made:
                with self.folder.subdir(parts[: i - 1]) as parent:
                    parent.mkdir(parts[i - 1], 0o755)
                self.made.add(parts[:i])

    def extract(self, entries: list[Entry], progress: Progress, stop: threading.Event) -> None:
        done = 0
        for entry in entries:
            if stop.is_set():
                raise Stopped()
            if entry.is_dir:
                self._dirs(entry.parts)
                continue
            self._dirs(entry.parts[:-1])
            with self.folder.subdir(entry.parts[:-1]) as parent:
                done = self._file(parent, entry, done, progress, stop)

    def _file(
        self, parent: Dir, entry: Entry, done: int, progress: Progress, stop: threading.Event
    ) -> int:
        info = entry.info
        # Read one byte past the declared size: an entry that has it lies about its size.
        # The CRC is checked here, once the size is known to be the declared one.
        probe = copy.copy(info)
        probe.file_size = info.file_size + 1
        del probe.CRC
        written, crc = 0, 0
        with parent.create(entry.parts[-1], 0o600) as out:
            try:
                with self.archive.open(probe) as fin:
                    while chunk := fin.read(CHUNK):
                        if stop.is_set():
                            raise Stopped()
                        written += len(chunk)
                        if written > info.file_size:
                            raise Refused(
                                f"Entry {info.filename!r} is larger than its declared size of "
                                f"{info.file_size} bytes",
                                errno.EFBIG,
                            )
                        crc = zlib.crc32(chunk, crc)
                        out.write(chunk)
                        progress(done + written)
            except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as e:
                raise Refused(f"Entry {info.filename!r} cannot be read: {e}") from None
            except zlib.error as e:
                raise Refused(f"Entry {info.filename!r} is damaged: {e}") from None
            if crc != info.CRC or written != info.file_size:
                raise Refused(f"Entry {info.filename!r} is damaged (bad CRC-32 or size)")
            os.fchmod(out.fileno(), _mode(info, 0o644))
            out.flush()
            stamp = _stamp(info)
            os.utime(out.fileno(), (stamp, stamp))
        return done + written

    def move_into_place(self, entries: list[Entry]) -> list[str]:
        """Move each top-level name into the destination, numbered when taken; the final
        path of every entry."""
        finals: dict[str, str] = {}
        for entry in entries:
            top = entry.parts[0]
            if top in finals:
                continue
            for n in range(1, MAX_NUMBER):
                candidate = numbered(top, n)
                try:
                    self.folder.move(top, self.dest, candidate)
                except FileExistsError:
                    continue
                finals[top] = candidate
                break
            else:
                raise OSError(errno.EEXIST, f"No free name for {top}", self.dest.join(top))
        return [self.dest.join("/".join((finals[e.parts[0]], *e.parts[1:]))) for e in entries]

    def remove(self) -> None:
        """Remove the temporary folder and what is left in it, deepest first."""
        with contextlib.suppress(OSError):
            with self.dest.subdir([self.tmp], readable=True) as folder:
                below = list(folder.walk())
                for rel, s in reversed(below):
                    with folder.subdir(rel[:-1]) as parent:
                        if (s.st_mode & 0o170000) == 0o040000:
                            parent.rmdir(rel[-1])
                        else:
                            parent.unlink(rel[-1])
        try:
            self.dest.rmdir(self.tmp)
        except OSError as e:
            log.warning("unzip left %s in place: %s", self.dest.join(self.tmp), e.strerror)
