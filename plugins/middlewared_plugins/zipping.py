"""archive.zip's work: files and trees under the roots streamed into a new zip archive."""

from __future__ import annotations

import errno
import os
import stat as st
import threading
import time
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from middlewared.errors import ValidationErrors
from middlewared.roots import Dir, Location, Roots, refusal

from .blocking import Progress, Stopped
from .zipcheck import Refused, split_name

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Source:
    """One entry of the archive to make: where it comes from, below ``top``."""

    arcname: str
    top: Location
    rel: tuple[str, ...]
    stat: os.stat_result

    @property
    def is_dir(self) -> bool:
        return st.S_ISDIR(self.stat.st_mode)

    def open(self) -> BinaryIO:
        if not self.rel:
            return self.top.open_read()
        with self.top.open_dir() as top, top.subdir(self.rel[:-1]) as folder:
            return folder.open_read(self.rel[-1])


def plan(roots: Roots, files: dict[str, str]) -> list[Source]:
    """Every entry to write, a directory's tree below its name; symlinks are left out."""
    sources: list[Source] = []
    for name, path in files.items():
        field = f"files.{name}"
        try:
            arc = "/".join(split_name(name))
        except Refused as e:
            raise ValidationErrors([(field, e.reason, e.code)]) from None
        top = roots.locate(field, path)
        s = top.stat()
        if st.S_ISREG(s.st_mode):
            sources.append(Source(arc, top, (), s))
        elif st.S_ISDIR(s.st_mode):
            sources.append(Source(arc + "/", top, (), s))
            try:
                with top.open_dir() as folder:
                    for rel, sub in folder.walk():
                        kind = sub.st_mode
                        if st.S_ISDIR(kind):
                            sources.append(Source(f"{arc}/{'/'.join(rel)}/", top, rel, sub))
                        elif st.S_ISREG(kind):
                            sources.append(Source(f"{arc}/{'/'.join(rel)}", top, rel, sub))
            except OSError as e:
                raise refusal(field, e) from None
        else:
            raise ValidationErrors([(field, "Not a regular file nor a directory", errno.EINVAL)])
    return sources


def zip_info(source: Source) -> zipfile.ZipInfo:
    # A zip's times start in 1980.
    stamp = time.localtime(max(source.stat.st_mtime, 315532800))
    info = zipfile.ZipInfo(source.arcname, stamp[:6])
    info.create_system = 3
    info.external_attr = (source.stat.st_mode & 0xFFFF) << 16
    if source.is_dir:
        info.external_attr |= 0x10  # MS-DOS directory flag
    else:
        info.compress_type = zipfile.ZIP_DEFLATED
        info.file_size = source.stat.st_size  # ZIP64 records are chosen from it
    return info


def write(
    folder: Dir, tmp: str, sources: list[Source], progress: Progress, stop: threading.Event
) -> None:
    """Write the archive to ``tmp`` in ``folder`` (ZIP64 where sizes need it), flushed."""
    done = 0
    with folder.create(tmp, 0o644) as out:
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for source in sources:
                info = zip_info(source)
                if source.is_dir:
                    archive.writestr(info, b"")
                    continue
                big = source.stat.st_size > zipfile.ZIP64_LIMIT // 2
                with source.open() as fin, archive.open(info, "w", force_zip64=big) as fout:
                    while chunk := fin.read(CHUNK):
                        if stop.is_set():
                            raise Stopped()
                        fout.write(chunk)
                        done += len(chunk)
                        progress(done)
        out.flush()
        os.fsync(out.fileno())
