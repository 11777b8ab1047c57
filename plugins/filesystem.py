"""filesystem.*: copy (a job with byte progress), listdir and stat, inside the roots."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat as st
from pathlib import Path
from typing import Any, BinaryIO

from middlewared.context import CallContext, ServerApi
from middlewared.errors import ValidationErrors
from middlewared.jobs.job import Job
from middlewared.jobs.pipes import UploadedFile
from middlewared.registry import JobOptions, Param, Registry

from .paths import confine
from .tempfiles import journalled_temp, sweep

registry = Registry("filesystem", "Files and directories under the configured roots")


@registry.on_startup
async def _sweep_temp_files(app: ServerApi) -> None:
    await asyncio.to_thread(sweep, app.config.data_dir, app.config.roots)


PATH = {"type": "string", "minLength": 1, "maxLength": 4096}
CHUNK = 1024 * 1024
STAT = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "path": {"type": "string"},
        "type": {"enum": ["FILE", "DIRECTORY", "SYMLINK", "OTHER"]},
        "size": {"type": "integer"},
        "mode": {"type": "integer"},
        "mtime": {"type": "number"},
        "uid": {"type": "integer"},
        "gid": {"type": "integer"},
    },
}


def _type(mode: int) -> str:
    if st.S_ISLNK(mode):
        return "SYMLINK"
    if st.S_ISDIR(mode):
        return "DIRECTORY"
    if st.S_ISREG(mode):
        return "FILE"
    return "OTHER"


def _stat(path: Path) -> dict[str, Any]:
    s = path.lstat()
    return {
        "name": path.name,
        "path": str(path),
        "type": _type(s.st_mode),
        "size": s.st_size,
        "mode": s.st_mode,
        "mtime": s.st_mtime,
        "uid": s.st_uid,
        "gid": s.st_gid,
    }


@registry.method(params=[Param("path", PATH)], returns=STAT)
async def stat(ctx: CallContext, path: str) -> dict[str, Any]:
    """Stat a path (symlinks are not followed)."""
    return await asyncio.to_thread(_stat, confine("path", path, ctx.config.roots))


@registry.method(params=[Param("path", PATH)], returns={"type": "array", "items": STAT})
async def listdir(ctx: CallContext, path: str) -> list[dict[str, Any]]:
    """The entries of a directory, sorted by name."""
    real = confine("path", path, ctx.config.roots)
    if not real.is_dir():
        raise ValidationErrors([("path", "Not a directory", errno.ENOTDIR)])

    def scan() -> list[dict[str, Any]]:
        return [_stat(p) for p in sorted(real.iterdir())]

    return await asyncio.to_thread(scan)


def _plan(src: Path) -> tuple[list[tuple[Path, Path]], int]:
    """Every entry to create (relative path, source) in order, and the bytes to copy."""
    if not src.is_dir() or src.is_symlink():
        return [(Path(), src)], src.lstat().st_size
    entries: list[tuple[Path, Path]] = [(Path(), src)]
    total = 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames) + sorted(filenames):
            p = base / name
            entries.append((p.relative_to(src), p))
            if not p.is_symlink() and p.is_file():
                total += p.lstat().st_size
    return entries, total


class _Copier:
    def __init__(self, job: Job, total: int) -> None:
        self.job = job
        self.total = total
        self.done = 0

    def report(self) -> None:
        percent = 100.0 * self.done / self.total if self.total else 100.0
        self.job.set_progress(percent, f"Copied {self.done} of {self.total} bytes")

    async def copy_file(self, src: Path, dst: Path) -> None:
        with src.open("rb") as fin, dst.open("xb") as fout:
            while True:
                chunk = await asyncio.to_thread(fin.read, CHUNK)
                if not chunk:
                    break
                await asyncio.to_thread(fout.write, chunk)
                self.done += len(chunk)
                self.report()
        shutil.copystat(src, dst)

    async def copy_entry(self, src: Path, dst: Path) -> None:
        if await asyncio.to_thread(_make_entry, src, dst):
            await self.copy_file(src, dst)


def _make_entry(src: Path, dst: Path) -> bool:
    """Create a directory or a symlink; True when ``src`` is a file still to be copied."""
    if src.is_symlink():
        # Copied as a link, never followed: it cannot read outside the roots.
        os.symlink(os.readlink(src), dst)
        return False
    if src.is_dir():
        dst.mkdir()
        return False
    return src.is_file()


def _prepare(src: str, dst: str, roots: tuple[Path, ...]) -> tuple[Path, Path]:
    source = confine("src", src, roots)
    target = confine("dst", dst, roots, must_exist=False)
    if os.path.lexists(target):
        raise ValidationErrors([("dst", "Destination already exists", errno.EEXIST)])
    if target.is_relative_to(source):
        raise ValidationErrors([("dst", "Destination is inside the source", errno.EINVAL)])
    if not target.parent.is_dir():
        raise ValidationErrors([("dst", "Parent directory does not exist", errno.ENOENT)])
    return source, target


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@registry.method(
    params=[
        Param("src", PATH, description="file or directory to copy"),
        Param("dst", PATH, description="new path; must not exist"),
    ],
    returns={"type": "boolean"},
    job=JobOptions(
        lock=lambda args: f"filesystem.copy:{args[1]}",
        abortable=True,
        description=lambda args: f"Copy {args[0]} to {args[1]}",
    ),
)
async def copy(ctx: CallContext, job: Job, src: str, dst: str) -> bool:
    """Copy a file or a whole directory tree, reporting "Copied N of M bytes"."""
    source, target = await asyncio.to_thread(_prepare, src, dst, ctx.config.roots)
    entries, total = await asyncio.to_thread(_plan, source)
    copier = _Copier(job, total)
    copier.report()
    try:
        for rel, path in entries:
            await copier.copy_entry(path, target / rel if rel.parts else target)
    except BaseException:
        # The destination did not exist before: leave no half-copied tree behind.
        await asyncio.shield(asyncio.to_thread(_remove, target))
        raise
    job.log(f"copied {copier.done} bytes in {len(entries)} entries from {source} to {target}")
    return True


@registry.method(
    params=[Param("path", PATH)],
    returns={"type": "null"},
    job=JobOptions(
        pipes=frozenset({"output"}), abortable=True, description=lambda args: f"Sending {args[0]}"
    ),
)
async def get(ctx: CallContext, job: Job, path: str) -> None:
    """Send a file to the output pipe: ``core.download("filesystem.get", [path], name)``."""
    real = await asyncio.to_thread(confine, "path", path, ctx.config.roots)
    output = job.pipes.output
    assert output is not None
    with await asyncio.to_thread(_open_regular, real) as f:
        size = os.fstat(f.fileno()).st_size
        sent = 0
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            await output.write(chunk)
            sent += len(chunk)
            job.set_progress(100 * sent / size if size else 100, f"Sent {sent} of {size} bytes")


def _open_regular(path: Path) -> BinaryIO:
    """Open for reading, refusing what is not a regular file (a FIFO would block forever)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    if not st.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValidationErrors([("path", "Not a regular file", errno.EINVAL)])
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


PUT_OPTIONS = {
    "type": "object",
    "properties": {
        "overwrite": {"type": "boolean", "description": "replace an existing file"},
        "mode": {"type": "integer", "minimum": 0, "maximum": 0o7777},
    },
    "additionalProperties": False,
}


def _targets(path: Path, names: list[str]) -> list[Path]:
    """Into ``path`` (a directory) each file goes by its own name; else to ``path``."""
    if path.is_dir():
        return [path / _safe_name(n) for n in names]
    return [path]


def _safe_name(name: str) -> str:
    base = os.path.basename(name.replace("\\", "/"))
    if base in ("", ".", "..") or "\x00" in base:
        raise ValidationErrors([("file", f"Bad file name {name!r}", errno.EINVAL)])
    return base


def _check_target(target: Path, overwrite: bool, roots: tuple[Path, ...]) -> Path:
    real = confine("path", str(target), roots, must_exist=False)
    if os.path.lexists(real) and (not overwrite or not real.is_file() or real.is_symlink()):
        raise ValidationErrors([("path", f"{real} already exists", errno.EEXIST)])
    if not real.parent.is_dir():
        raise ValidationErrors([("path", "Parent directory does not exist", errno.ENOENT)])
    return real


class _Receiver:
    def __init__(self, job: Job, expected: int | None) -> None:
        self.job = job
        self.expected = expected
        self.received = 0

    def report(self) -> None:
        percent = min(99.0, 100 * self.received / self.expected) if self.expected else None
        self.job.set_progress(percent, f"Received {self.received} bytes")

    async def save(self, source: UploadedFile, real: Path, mode: int, data_dir: Path) -> None:
        """Write to a temporary name beside the target, fsync, then rename: atomic. The
        temporary name is journalled, so a crash leaves no stray file behind."""
        with journalled_temp(data_dir, real) as tmp:
            with tmp.open("xb") as out:
                async for chunk in source.chunks():
                    await asyncio.to_thread(out.write, chunk)
                    self.received += len(chunk)
                    self.report()
                await asyncio.to_thread(_sync, out, mode)
            await asyncio.to_thread(os.replace, tmp, real)


def _sync(f: BinaryIO, mode: int) -> None:
    f.flush()
    os.fchmod(f.fileno(), mode)
    os.fsync(f.fileno())


@registry.method(
    params=[Param("path", PATH), Param("options", PUT_OPTIONS, required=False, default={})],
    returns={"type": "array", "items": {"type": "string"}},
    job=JobOptions(
        pipes=frozenset({"input"}),
        abortable=True,
        lock=lambda args: f"filesystem.put:{args[0]}",
        lock_queue_size=None,
        description=lambda args: f"Receiving {args[0]}",
    ),
)
async def put(ctx: CallContext, job: Job, path: str, options: dict[str, Any]) -> list[str]:
    """Write uploaded file(s) atomically: to ``path``, or into it by name when it is a
    directory. Upload through ``POST /_upload``. Returns the paths written."""
    pipe = job.pipes.input
    assert pipe is not None
    roots = ctx.config.roots
    real_path = await asyncio.to_thread(confine, "path", path, roots, False)
    receiver = _Receiver(job, pipe.expected_bytes)
    written: list[str] = []
    async for source in pipe:
        if written and not await asyncio.to_thread(real_path.is_dir):
            raise ValidationErrors(
                [("path", "Several files need an existing directory", errno.ENOTDIR)]
            )
        (target,) = await asyncio.to_thread(_targets, real_path, [source.filename])
        real = await asyncio.to_thread(
            _check_target, target, options.get("overwrite", False), roots
        )
        await receiver.save(source, real, options.get("mode", 0o644), ctx.config.data_dir)
        written.append(str(real))
    if not written:
        raise ValidationErrors([("file", "No file was uploaded", errno.ENOENT)])
    return written
