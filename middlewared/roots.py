"""Files under the configured roots, reached only through directory descriptors.

What it guarantees, for every path a caller gives (``Roots.locate``) and every name it
acts on (``Dir``):

- A path is checked as text once: absolute, no NUL, at most ``MAX_PATH`` bytes encoded,
  encodable (a lone surrogate U+DC80..U+DCFF stands for the byte ``os.fsdecode`` escaped
  with it; any other surrogate is refused), then normalised lexically (``.``, ``..``,
  repeated slashes; no symlink is resolved) and placed under one root. After that the only
  path the kernel resolves by name is the root's own (the administrator's ``--fs-root``).
- The directories from the root down to an entry are opened from the root's descriptor
  with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` where the kernel has it, else one
  ``O_NOFOLLOW | O_DIRECTORY`` component at a time. A symlink in any component is refused
  (ELOOP) whatever it points at, so a process that swaps a directory for a symlink, however
  fast, can make an operation fail but never make it act outside the root.
- Every operation on an entry (stat, list, open, create, mkdir, symlink, rename, unlink,
  rmdir, metadata) is an ``*at`` call, or an ``f*`` call on a descriptor opened that way,
  with one plain name (never ``..`` nor a ``/``), and never follows a symlink at that
  name: stat and listings report a link as a link, opens refuse it (ELOOP), creation is
  exclusive (``O_CREAT | O_EXCL | O_NOFOLLOW``), a regular file is opened without blocking
  on a FIFO put in its place.
- A path's problems reach the caller as a ``ValidationErrors`` naming its field; the
  failures of an operation on an open ``Dir`` stay ``OSError`` for the caller to word.

Not guaranteed: that a name still holds what was there a moment before (check through the
descriptor you act on: ``fstat`` an opened file, compare ``st_ino`` before removing);
``Dir.rename(replace=False)`` is atomic only where ``renameat2(RENAME_NOREPLACE)`` works
(else it checks, then renames); mount points below a root are crossed like directories.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import functools
import logging
import os
import re
import stat as st
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, BinaryIO, TypeVar

from middlewared.errors import ValidationErrors

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PATH = 4096
_O_PATH: int = getattr(os, "O_PATH", os.O_RDONLY)
# A directory only walked through or named in ``*at`` calls: O_PATH needs no read right.
_WALK = _O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_LIST = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in for a file must not block the open.
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_SYS_OPENAT2 = 437  # one number on every architecture (Linux 5.6+)
_RESOLVE = 0x02 | 0x04 | 0x08  # RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100


class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64))


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _openat2(dir_fd: int, path: bytes, flags: int) -> int:
    how = _OpenHow(flags, 0, _RESOLVE)
    fd = _libc().syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(path),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), os.fsdecode(path))
    return int(fd)


@functools.cache
def has_openat2() -> bool:
    """Whether the kernel resolves for us (asked once: ENOSYS before 5.6, EPERM under some
    seccomp filters)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        os.close(_openat2(_AT_FDCWD, b".", _WALK))
    except OSError as e:
        if e.errno in (errno.ENOSYS, errno.EPERM):
            log.info("openat2 is not available (%s): walking paths one component at a time", e)
            return False
    return True


def _name(name: str) -> str:
    """``name`` if it is one entry of a directory (``.`` is the directory itself)."""
    if not name or name == ".." or "/" in name or "\x00" in name:
        raise OSError(errno.EINVAL, "Not a single file name", name)
    return name


def _classify(dir_fd: int, name: str, err: OSError) -> OSError:
    """O_NOFOLLOW | O_DIRECTORY says ENOTDIR for a symlink: call it ELOOP, as openat2 does."""
    if err.errno == errno.ENOTDIR:
        try:
            if st.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                return OSError(errno.ELOOP, os.strerror(errno.ELOOP), name)
        except OSError:
            pass
    return err


def _walk(dir_fd: int, parts: Sequence[str], flags: int) -> int:
    """What openat2 does, one ``O_NOFOLLOW`` open per component (for older kernels)."""
    names = list(parts) or ["."]
    fd, owned = dir_fd, False
    try:
        for i, name in enumerate(names):
            last = i == len(names) - 1
            try:
                found = os.open(name, (flags if last else _WALK) | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                raise _classify(fd, name, e) from None
            if owned:
                os.close(fd)
            fd, owned = found, True
        return fd
    except BaseException:
        if owned:
            os.close(fd)
        raise


def open_beneath(dir_fd: int, parts: Sequence[str], flags: int = _WALK) -> int:
    """A descriptor of ``parts`` below ``dir_fd``, opened with ``flags``; no symlink is
    followed on the way nor at the end (ELOOP)."""
    for part in parts:
        _name(part)
    if has_openat2():
        path = os.fsencode("/".join(parts)) if parts else b"."
        # Without O_NOFOLLOW: RESOLVE_NO_SYMLINKS refuses a trailing symlink too, with
        # ELOOP, where O_NOFOLLOW | O_DIRECTORY would say ENOTDIR.
        try:
            return _openat2(dir_fd, path, (flags & ~os.O_NOFOLLOW) | os.O_CLOEXEC)
        except OSError as e:
            # EAGAIN: a concurrent rename made the kernel give up; the walk is not bothered.
            if e.errno != errno.EAGAIN:
                raise
    return _walk(dir_fd, parts, flags)


def _rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> bool:
    """Rename unless ``dst`` exists (EEXIST); False where the libc, kernel or filesystem
    has no RENAME_NOREPLACE."""
    renameat2 = getattr(_libc(), "renameat2", None)
    if renameat2 is None:
        return False
    done = renameat2(
        ctypes.c_int(src_fd),
        ctypes.c_char_p(os.fsencode(src)),
        ctypes.c_int(dst_fd),
        ctypes.c_char_p(os.fsencode(dst)),
        ctypes.c_uint(_RENAME_NOREPLACE),
    )
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(code, os.strerror(code), dst)


def copy_metadata(src_fd: int, dst_fd: int) -> None:
    """Times, extended attributes and permission bits of one open file onto another (what
    ``shutil.copystat`` does, on descriptors); setuid, setgid and sticky are not carried."""
    s = os.fstat(src_fd)
    os.utime(dst_fd, ns=(s.st_atime_ns, s.st_mtime_ns))
    try:
        for attr in os.listxattr(src_fd):
            os.setxattr(dst_fd, attr, os.getxattr(src_fd, attr))
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.ENODATA, errno.EINVAL, errno.EPERM, errno.EACCES):
            raise
    os.fchmod(dst_fd, st.S_IMODE(s.st_mode) & 0o777)


def _join(path: str, *names: str) -> str:
    for name in names:
        if name != ".":
            path = f"{path.rstrip('/')}/{name}"
    return path


class Dir:
    """An open directory under a root: each method acts on one name in it, through its
    descriptor, never following a symlink at that name."""

    def __init__(self, fd: int, path: str, readable: bool = False) -> None:
        self.fd = fd
        # What it stands for: to word messages and journal entries, never to open.
        self.path = path
        self.readable = readable

    def __enter__(self) -> Dir:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def join(self, name: str) -> str:
        """The path text of ``name`` in this directory."""
        return _join(self.path, name)

    def subdir(self, parts: Sequence[str], readable: bool = False) -> Dir:
        """The directory at ``parts`` below this one (``readable`` to list it)."""
        fd = open_beneath(self.fd, parts, _LIST if readable else _WALK)
        return Dir(fd, _join(self.path, *parts), readable)

    def lstat(self, name: str) -> os.stat_result:
        return os.stat(_name(name), dir_fd=self.fd, follow_symlinks=False)

    def entries(self) -> list[tuple[str, os.stat_result]]:
        """Every entry but ``.`` and ``..``, sorted by name, each stat'ed without following
        (an entry removed meanwhile is left out). Needs a directory opened ``readable``."""
        found: list[tuple[str, os.stat_result]] = []
        with os.scandir(self.fd) as it:
            for entry in it:
                try:
                    found.append((entry.name, entry.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    continue
        found.sort(key=lambda e: e[0])
        return found

    def walk(self) -> Iterator[tuple[tuple[str, ...], os.stat_result]]:
        """Every entry below, as (names from here, lstat), a directory before what it holds,
        each directory's entries by name. Symlinks are reported, never followed; a directory
        replaced by anything else while walked fails its open (ELOOP or ENOTDIR)."""
        stack: list[tuple[tuple[str, ...], Dir, Iterator[tuple[str, os.stat_result]]]] = []
        stack.append(((), self, iter(self.entries())))
        try:
            while stack:
                prefix, folder, pending = stack[-1]
                for name, s in pending:
                    yield (*prefix, name), s
                    if st.S_ISDIR(s.st_mode):
                        sub = folder.subdir([name], readable=True)
                        stack.append(((*prefix, name), sub, iter(sub.entries())))
                        break
                else:
                    stack.pop()
                    if folder is not self:
                        folder.close()
        finally:
            for _, folder, _ in stack[1:]:
                folder.close()

    def open_read(self, name: str) -> BinaryIO:
        """A regular file, for reading (anything else: EINVAL "Not a regular file")."""
        fd = os.open(_name(name), _READ, dir_fd=self.fd)
        try:
            if not st.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "Not a regular file", self.join(name))
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def create(self, name: str, mode: int = 0o600) -> BinaryIO:
        """A new file (EEXIST if anything, even a dangling symlink, has the name)."""
        fd = os.open(_name(name), _CREATE, mode & 0o777, dir_fd=self.fd)
        return os.fdopen(fd, "wb")

    def mkdir(self, name: str, mode: int = 0o777) -> None:
        os.mkdir(_name(name), mode & 0o777, dir_fd=self.fd)

    def symlink(self, target: str, name: str) -> None:
        os.symlink(target, _name(name), dir_fd=self.fd)

    def readlink(self, name: str) -> str:
        return os.readlink(_name(name), dir_fd=self.fd)

    def rename(self, src: str, dst: str, replace: bool = True) -> None:
        """Rename ``src`` to ``dst`` in this directory; EEXIST when ``dst`` exists unless
        ``replace``."""
        src, dst = _name(src), _name(dst)
        if not replace:
            if _rename_noreplace(self.fd, src, self.fd, dst):
                return
            if self._exists(dst):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), self.join(dst))
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def move(self, src: str, other: Dir, dst: str) -> None:
        """Move ``src`` of this directory to ``dst`` in ``other``, never replacing (EEXIST)."""
        src, dst = _name(src), _name(dst)
        if _rename_noreplace(self.fd, src, other.fd, dst):
            return
        if other._exists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), other.join(dst))
        os.rename(src, dst, src_dir_fd=self.fd, dst_dir_fd=other.fd)

    def _exists(self, name: str) -> bool:
        try:
            self.lstat(name)
        except FileNotFoundError:
            return False
        return True

    def unlink(self, name: str) -> None:
        os.unlink(_name(name), dir_fd=self.fd)

    def rmdir(self, name: str) -> None:
        os.rmdir(_name(name), dir_fd=self.fd)


_REASONS = {
    errno.ENOENT: "Path does not exist",
    errno.ELOOP: "Path is or goes through a symbolic link",
    errno.ENOTDIR: "Not a directory",
    errno.EACCES: "Permission denied",
    errno.EPERM: "Permission denied",
    errno.ENAMETOOLONG: "Path is too long",
}
_PARENT_REASONS = {
    errno.ENOENT: "Parent directory does not exist",
    errno.ENOTDIR: "Parent is not a directory",
}


def refusal(field: str, err: OSError, parent: bool = False) -> ValidationErrors:
    """The validation error that tells a caller why ``field`` could not be used."""
    code = err.errno or errno.EINVAL
    reason = (_PARENT_REASONS.get(code) if parent else None) or _REASONS.get(code)
    return ValidationErrors([(field, reason or err.strerror or str(err), code)])


@dataclass(frozen=True)
class Location:
    """A path a caller gave, checked and placed under a root; nothing opened yet."""

    field: str
    root: Path
    # The names below the root (none for a root itself), each a plain name.
    parts: tuple[str, ...]

    @property
    def path(self) -> str:
        return _join(str(self.root), *self.parts)

    @property
    def name(self) -> str:
        """The last name, to act on in ``parent()``; ``.`` for a root itself."""
        return self.parts[-1] if self.parts else "."

    def contains(self, other: Location) -> bool:
        return PurePosixPath(other.path).is_relative_to(self.path)

    def _open(self, parts: Sequence[str], flags: int, parent: bool) -> int:
        try:
            root_fd = os.open(self.root, _WALK)
        except OSError as e:
            raise refusal(self.field, e, parent) from None
        try:
            return open_beneath(root_fd, parts, flags)
        except OSError as e:
            raise refusal(self.field, e, parent) from None
        finally:
            os.close(root_fd)

    def parent(self) -> Dir:
        """The directory that holds this entry (the root for a root itself)."""
        parts = self.parts[:-1]
        return Dir(self._open(parts, _WALK, True), _join(str(self.root), *parts))

    def open_dir(self) -> Dir:
        """This entry as a directory, to list."""
        return Dir(self._open(self.parts, _LIST, False), self.path, readable=True)

    def stat(self) -> os.stat_result:
        """The entry itself (a symlink is reported as one)."""
        with self.parent() as folder:
            try:
                return folder.lstat(self.name)
            except OSError as e:
                raise refusal(self.field, e) from None

    def open_read(self) -> BinaryIO:
        """The regular file at this path, for reading."""
        with self.parent() as folder:
            try:
                return folder.open_read(self.name)
            except OSError as e:
                raise refusal(self.field, e) from None


def _bad(field: str, message: str, code: int = errno.EINVAL) -> ValidationErrors:
    return ValidationErrors([(field, message, code)])


def normalise(path: str) -> str:
    """``path`` without ``.``, ``..``, repeated or trailing slashes; no symlink resolved."""
    norm = os.path.normpath(path)
    # POSIX lets "//" mean something else; here it is "/".
    return "/" + norm.lstrip("/") if norm.startswith("//") else norm


class Roots:
    """The roots a server may touch, and the door to them: ``locate`` a caller's path."""

    def __init__(self, roots: Sequence[Path]) -> None:
        # The deepest root first, when one holds another.
        self.roots = sorted(roots, key=lambda r: len(r.parts), reverse=True)
        self._pure = [PurePosixPath(r) for r in self.roots]

    def locate(self, field: str, path: str) -> Location:
        """``path`` placed under a root; a validation error naming ``field`` otherwise."""
        if "\x00" in path:
            raise _bad(field, "Path contains a NUL byte")
        try:
            encoded = os.fsencode(path)
        except UnicodeEncodeError as e:
            bad = path[e.start : e.end].encode("unicode_escape").decode()
            raise _bad(field, f"Path cannot be encoded (character {bad})", errno.EILSEQ) from None
        if len(encoded) > MAX_PATH:
            raise _bad(field, "Path is too long", errno.ENAMETOOLONG)
        if not path.startswith("/"):
            raise _bad(field, "Path must be absolute")
        norm = PurePosixPath(normalise(path))
        for root, pure in zip(self.roots, self._pure, strict=True):
            if norm.is_relative_to(pure):
                return Location(field, root, norm.relative_to(pure).parts)
        raise _bad(field, "Path is outside the allowed roots", errno.EACCES)


_ESCAPED = re.compile("[\udc80-\udcff]")


def escaped(text: str) -> bool:
    """Whether ``text`` holds bytes that are not UTF-8 (as ``os.fsdecode`` escapes them)."""
    return not text.isascii() and _ESCAPED.search(text) is not None


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread, run to its end even when the caller is cancelled
    meanwhile (the cancellation is raised after): a call on an open ``Dir`` must end before
    the caller's ``finally`` closes it, or its descriptor number could name another file."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as e:
            cancelled = e
        except BaseException:
            break  # the call's own error: task.result() raises it
    if cancelled is not None:
        if task.exception() is not None:
            log.debug("%s failed while its caller was cancelled: %r", fn, task.exception())
        raise cancelled
    return task.result()
