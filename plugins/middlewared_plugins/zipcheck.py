"""archive.unzip's checks, made on the central directory before anything is written."""

from __future__ import annotations

import errno
import os
import re
import stat as st
import zipfile
from dataclasses import dataclass

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 16 * 1024**3
DEFAULT_MAX_RATIO = 200
# Entries smaller than this are not held to max_ratio: a few KiB of zeros compress over
# 300:1 and harm no one (the total is bounded by max_bytes).
RATIO_FLOOR = 1024 * 1024
NAME_MAX = 255
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNIX = 3  # create_system of archives made on Unix: external_attr's high half is st_mode


class Refused(Exception):
    """An archive unzip will not extract; the reason names the entry."""

    def __init__(self, reason: str, code: int = errno.EINVAL) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Limits:
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_bytes: int = DEFAULT_MAX_BYTES
    max_ratio: float = DEFAULT_MAX_RATIO


@dataclass(frozen=True)
class Entry:
    """One entry to extract: its names below the destination, and its record."""

    parts: tuple[str, ...]
    is_dir: bool
    info: zipfile.ZipInfo


def split_name(name: str) -> tuple[str, ...]:
    """The plain names of an entry's path; Refused if it could land outside the
    destination (absolute, a drive letter, ``..``) or cannot be a file name here."""
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        raise Refused(f"Entry {name!r} has an absolute path")
    if "\x00" in name:
        raise Refused(f"Entry {name!r} has a NUL byte in its name")
    parts = tuple(p for p in re.split(r"[/\\]", name) if p not in ("", "."))
    if ".." in parts:
        raise Refused(f"Entry {name!r} escapes the destination (..)")
    if not parts:
        raise Refused(f"Entry {name!r} has no name")
    for part in parts:
        try:
            encoded = os.fsencode(part)
        except UnicodeEncodeError:
            raise Refused(f"Entry {name!r} cannot be encoded", errno.EILSEQ) from None
        if len(encoded) > NAME_MAX:
            raise Refused(f"Entry {name!r} has a name over {NAME_MAX} bytes", errno.ENAMETOOLONG)
    return parts


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == _UNIX and st.S_ISLNK(info.external_attr >> 16)


def check(infos: list[zipfile.ZipInfo], limits: Limits) -> list[Entry]:
    """Every entry, checked against the limits; Refused at the first that fails."""
    if len(infos) > limits.max_entries:
        name = infos[limits.max_entries].filename
        raise Refused(
            f"Entry {name!r} is past the limit of {limits.max_entries} entries "
            f"(the archive has {len(infos)})",
            errno.EFBIG,
        )
    total = 0
    entries: list[Entry] = []
    seen: dict[tuple[str, ...], bool] = {}
    for info in infos:
        name = info.filename
        parts = split_name(name)
        if _is_symlink(info):
            raise Refused(f"Entry {name!r} is a symbolic link")
        total += info.file_size
        if total > limits.max_bytes:
            raise Refused(
                f"Entry {name!r} takes the archive past {limits.max_bytes} bytes uncompressed",
                errno.EFBIG,
            )
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size >= RATIO_FLOOR and ratio > limits.max_ratio:
            raise Refused(
                f"Entry {name!r} has a compression ratio of {ratio:.0f} "
                f"(over {limits.max_ratio:g})",
                errno.EFBIG,
            )
        is_dir = info.is_dir()
        # A name given twice, or a file also used as a directory, cannot both be written.
        clash = parts in seen and not (is_dir and seen[parts])
        if clash or any(seen.get(parts[:i]) is False for i in range(1, len(parts))):
            raise Refused(f"Entry {name!r} clashes with another entry")
        seen[parts] = is_dir
        for i in range(1, len(parts)):
            seen.setdefault(parts[:i], True)
        entries.append(Entry(parts, is_dir, info))
    return entries


def numbered(name: str, n: int) -> str:
    """``name`` numbered ``n`` as cozy-stack numbers a name already taken: ``a (2).txt``."""
    if n < 2:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return f"{name} ({n})"
    return f"{stem} ({n}).{ext}"
