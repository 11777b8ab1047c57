"""An app's files taken from under the roots into the data dir: a directory walked through
directory descriptors (a symlink anywhere is refused, as filesystem methods refuse it), or
a zip read through one; bounded in files and bytes. The copy is what runs: later changes to
the source change nothing until ``app.update``."""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat as st
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from middlewared.errors import ValidationErrors
from middlewared.roots import Dir, Location

MAX_FILES = 10_000
MAX_BYTES = 256 * 1024 * 1024
CHUNK = 1024 * 1024
MANIFESTS = ("manifest.json", "manifest.webapp")


@dataclass(frozen=True)
class Limits:
    max_files: int = MAX_FILES
    max_bytes: int = MAX_BYTES


def _bad(message: str, code: int = errno.EINVAL) -> ValidationErrors:
    return ValidationErrors([("path", message, code)])


class _Copy:
    """Files written under ``dest``, counted and hashed as they come (the digest says
    whether an update changes anything)."""

    def __init__(self, dest: Path, limits: Limits) -> None:
        self.dest = dest
        self.limits = limits
        self.files = 0
        self.bytes = 0
        self.entries: list[tuple[str, bool, str]] = []

    def directory(self, rel: str) -> None:
        (self.dest / rel).mkdir(mode=0o700, parents=True, exist_ok=True)

    def file(self, rel: str, src: IO[bytes], executable: bool) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise _bad(f"The app has more than {self.limits.max_files} files", errno.EFBIG)
        target = self.dest / rel
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        digest = hashlib.sha256()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(CHUNK):
                self.bytes += len(chunk)
                if self.bytes > self.limits.max_bytes:
                    raise _bad(f"The app is larger than {self.limits.max_bytes} bytes", errno.EFBIG)
                digest.update(chunk)
                out.write(chunk)
            os.fchmod(out.fileno(), 0o700 if executable else 0o600)
        self.entries.append((rel, executable, digest.hexdigest()))

    def digest(self) -> str:
        whole = hashlib.sha256()
        for rel, executable, digest in sorted(self.entries):
            whole.update(f"{rel}\0{int(executable)}\0{digest}\n".encode("utf-8", "surrogateescape"))
        return whole.hexdigest()


def copy_in(where: Location, dest: Path, limits: Limits = Limits()) -> str:
    """Copy the app at ``where`` (a directory, or a zip file) into ``dest`` (created);
    returns the digest of what was copied. Runs in a thread."""
    s = where.stat()
    dest.mkdir(mode=0o700)
    copy = _Copy(dest, limits)
    try:
        if st.S_ISDIR(s.st_mode):
            with where.open_dir() as top:
                _copy_tree(top, copy)
        elif st.S_ISREG(s.st_mode):
            with where.open_read() as f:
                _copy_zip(f, copy)
        else:
            raise _bad("Not a directory nor a zip file")
    except OSError as e:
        # A file that cannot be read, a folder swapped for a symlink meanwhile, a zip
        # naming one file twice: the source's problem, said with the name.
        raise _bad(
            f"The app cannot be copied: {e.strerror or e} ({e.filename})", e.errno or errno.EIO
        ) from None
    except (zipfile.BadZipFile, EOFError) as e:
        raise _bad(f"The zip cannot be unpacked: {e}") from None
    return copy.digest()


def _copy_tree(top: Dir, copy: _Copy) -> None:
    for names, s in top.walk():
        rel = "/".join(names)
        if st.S_ISDIR(s.st_mode):
            copy.directory(rel)
        elif st.S_ISLNK(s.st_mode):
            raise _bad(f"The app holds a symbolic link ({rel}): refused", errno.ELOOP)
        elif not st.S_ISREG(s.st_mode):
            raise _bad(f"The app holds {rel}, which is not a regular file")
        else:
            with top.subdir(names[:-1]) as folder, folder.open_read(names[-1]) as f:
                copy.file(rel, f, bool(s.st_mode & 0o100))


def _copy_zip(f: BinaryIO, copy: _Copy) -> None:
    try:
        archive = zipfile.ZipFile(f)
    except zipfile.BadZipFile:
        raise _bad("Not a directory nor a zip file") from None
    with archive:
        infos = archive.infolist()
        prefix = _common_folder(infos)
        for info in infos:
            rel = _member(info.filename)[len(prefix) :]
            mode = info.external_attr >> 16
            if st.S_ISLNK(mode):
                raise _bad(f"The zip holds a symbolic link ({info.filename}): refused", errno.ELOOP)
            if not rel:
                continue
            if info.is_dir():
                copy.directory(rel)
                continue
            with archive.open(info) as member:
                copy.file(rel, member, bool(mode & 0o100))


def _member(name: str) -> str:
    """A zip member's name, if it stays inside the app."""
    norm = posixpath.normpath(name)
    if (
        name.startswith("/")
        or "\\" in name
        or "\0" in name
        or norm == ".."
        or norm.startswith("../")
    ):
        raise _bad(f"The zip holds {name!r}, a path outside the app: refused")
    return norm + ("/" if name.endswith("/") else "") if norm != "." else ""


def _common_folder(infos: list[zipfile.ZipInfo]) -> str:
    """``app/`` when every member is under one folder and no manifest is at the top (a zip
    of the app's folder), else ``""``."""
    names = [_member(i.filename) for i in infos]
    if any(n in MANIFESTS for n in names):
        return ""
    tops = {n.split("/", 1)[0] for n in names if n}
    if len(tops) != 1:
        return ""
    top = tops.pop() + "/"
    return top if all(n.startswith(top) or n == top for n in names if n) else ""


def read_manifest(folder: Path) -> tuple[str, bytes]:
    """The manifest's name and bytes in an app's copied folder."""
    for name in MANIFESTS:
        path = folder / name
        if path.is_file() and not path.is_symlink():
            if path.stat().st_size > 1024 * 1024:
                raise _bad(f"{name} is larger than 1 MiB")
            return name, path.read_bytes()
    raise _bad("The app has no manifest.json at its top", errno.ENOENT)
