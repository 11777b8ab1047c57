"""data.export's blocking work: the entries to export (data as JSON, files under the roots
read through directory descriptors) written as parts, each a zip of its own."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from middlewared.errors import CallError
from middlewared.roots import Roots

from .blocking import Progress, Stopped
from .exportparts import Item, pack
from .zipping import Source, plan, zip_info

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Entry:
    """One entry of the export: JSON data held in memory, or a file (or folder) to read."""

    name: str
    data: bytes | None = None
    source: Source | None = None

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        assert self.source is not None
        return 0 if self.source.is_dir else self.source.stat.st_size

    @property
    def item(self) -> Item:
        return Item(self.name, self.size)


@dataclass(frozen=True)
class Written:
    path: Path
    size: int
    sha256: str


def file_entries(roots: Sequence[Path]) -> tuple[list[Entry], list[str]]:
    """The trees under the roots as ``files/<root's name>/...`` (symlinks left out); and the
    names left out because a zip cannot hold them (not UTF-8)."""
    entries: list[Entry] = []
    skipped: list[str] = []
    taken: set[str] = set()
    for root in roots:
        name = root.name or "root"
        arc, n = name, 1
        while arc in taken:
            n += 1
            arc = f"{name} ({n})"
        taken.add(arc)
        for source in plan(Roots(roots), {f"files/{arc}": str(root)}):
            try:
                source.arcname.encode()
            except UnicodeEncodeError:
                skipped.append(source.arcname.encode(errors="backslashreplace").decode())
                continue
            entries.append(Entry(source.arcname, source=source))
    return entries, skipped


def split(entries: Sequence[Entry], parts_size: int) -> list[list[Entry]]:
    return [[entries[i] for i in part] for part in pack([e.item for e in entries], parts_size)]


class PartWriter:
    """Writes the parts into ``folder``, reporting the bytes read so far."""

    def __init__(self, folder: Path, progress: Progress, stop: threading.Event) -> None:
        self.folder = folder
        self.progress = progress
        self.stop = stop
        self.done = 0

    def write_all(self, parts: Sequence[Sequence[Entry]], parts_size: int) -> list[Written]:
        written = []
        for n, entries in enumerate(parts, 1):
            w = self.write(self.folder / f"part-{n:04d}.zip", entries)
            if w.size > parts_size and len(entries) > 1:
                raise CallError(f"Part {n} has {w.size} bytes, over {parts_size}", errno.EFBIG)
            written.append(w)
        return written

    def write(self, path: Path, entries: Sequence[Entry]) -> Written:
        with path.open("xb") as out:
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
                for entry in entries:
                    self._entry(archive, entry)
            out.flush()
            os.fsync(out.fileno())
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return Written(path, path.stat().st_size, digest.hexdigest())

    def _entry(self, archive: zipfile.ZipFile, entry: Entry) -> None:
        if entry.data is not None:
            info = zipfile.ZipInfo(entry.name, time.localtime()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            archive.writestr(info, entry.data)
            self._read(len(entry.data))
            return
        source = entry.source
        assert source is not None
        info = zip_info(source)
        if source.is_dir:
            archive.writestr(info, b"")
            return
        # A file that grew since it was planned is cut at its planned size: the part's
        # bound holds.
        left = source.stat.st_size
        with source.open() as fin, archive.open(info, "w", force_zip64=True) as fout:
            while left and (chunk := fin.read(min(CHUNK, left))):
                if self.stop.is_set():
                    raise Stopped()
                fout.write(chunk)
                left -= len(chunk)
                self._read(len(chunk))

    def _read(self, n: int) -> None:
        self.done += n
        self.progress(self.done)
