"""filesystem.*: stat, listdir, get, put and copy (a job with byte progress), inside the roots;
the ``filesystem.files`` events of what changes there."""

from __future__ import annotations

import asyncio
import errno
import os
import stat as st
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from middlewared.context import CallContext, ServerApi
from middlewared.errors import CallError, ValidationErrors
from middlewared.jobs.job import Job
from middlewared.jobs.pipes import UploadedFile
from middlewared.registry import Access, JobOptions, Param, Registry
from middlewared.roots import Dir, Location, Roots, escaped, in_thread, normalise, refusal

from . import fswatch
from .copying import Tree, copy_tree
from .fileevents import (
    COLLECTION,
    SETTINGS_DEFAULTS,
    SETTINGS_SCHEMA,
    announce_written,
    file_type,
    writing,
)
from .tempfiles import journalled_temp, sweep

registry = Registry("filesystem", "Files and directories under the configured roots")
registry.collection(
    COLLECTION,
    "Files added, changed or removed under the roots, by the API (cause: the job) or by any "
    "other program (inotify), one event per path once its writes settle; id: the path; "
    "fields: path, type, size, mime, mtime, escaped, cause (the job that wrote it, or null). "
    "Subscribing needs the grant "
    "filesystem.files; the events reach full administrators.",
)
registry.declare_settings(SETTINGS_SCHEMA, SETTINGS_DEFAULTS)


@registry.on_startup
async def _sweep_temp_files(app: ServerApi) -> None:
    await asyncio.to_thread(sweep, app.config.data_dir, app.config.roots)


@registry.lifespan
async def _watch(app: ServerApi) -> AsyncIterator[None]:
    async with fswatch.watching(app):
        yield


@registry.method(returns={"type": "object"}, access=Access.ADMIN)
async def watch_status(ctx: CallContext) -> dict[str, Any]:
    """The watcher of ``filesystem.files``: roots watched, roots not watched with the reason,
    the settle time in force, paths waiting, and counters (published, announced by jobs,
    suppressed echoes of the API's own writes, dropped past ``max_pending``, inotify
    overflows)."""
    return fswatch.status(ctx.app)


PATH = {
    "type": "string",
    "minLength": 1,
    "maxLength": 4096,
    "description": "absolute, under a root; no symlink is followed in any component",
}
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
        "escaped": {
            "type": "boolean",
            "description": "the path holds bytes that are not UTF-8, each sent as a lone "
            "surrogate U+DC80..U+DCFF; pass the string back as it is to reach the same file",
        },
    },
    "required": ["name", "path", "type", "size", "mode", "mtime", "uid", "gid", "escaped"],
}


def _roots(ctx: CallContext) -> Roots:
    return Roots(ctx.config.roots)


def _lock(method: str, index: int) -> Callable[[Sequence[Any]], str]:
    """One lock per path, however it is spelled (normalised as text, no symlink resolved)."""

    def key(args: Sequence[Any]) -> str:
        value = args[index]
        return f"{method}:{normalise(value) if isinstance(value, str) else value}"

    return key


def _entry(path: str, s: os.stat_result) -> dict[str, Any]:
    return {
        "name": os.path.basename(path),
        "path": path,
        "type": file_type(s.st_mode),
        "size": s.st_size,
        "mode": s.st_mode,
        "mtime": s.st_mtime,
        "uid": s.st_uid,
        "gid": s.st_gid,
        "escaped": escaped(path),
    }


@registry.method(params=[Param("path", PATH)], returns=STAT)
async def stat(ctx: CallContext, path: str) -> dict[str, Any]:
    """Stat a path; a symlink is reported as one, never followed."""
    where = _roots(ctx).locate("path", path)
    return _entry(where.path, await asyncio.to_thread(where.stat))


def _list(where: Location) -> list[dict[str, Any]]:
    with where.open_dir() as folder:
        return [_entry(folder.join(name), s) for name, s in folder.entries()]


@registry.method(params=[Param("path", PATH)], returns={"type": "array", "items": STAT})
async def listdir(ctx: CallContext, path: str) -> list[dict[str, Any]]:
    """The entries of a directory, sorted by name (symlinks reported, never followed)."""
    return await asyncio.to_thread(_list, _roots(ctx).locate("path", path))


@registry.method(
    params=[
        Param("src", PATH, description="file or directory to copy; symlinks copied as links"),
        Param("dst", PATH, description="new path; must not exist"),
    ],
    returns={"type": "boolean"},
    job=JobOptions(
        lock=_lock("filesystem.copy", 1),
        abortable=True,
        description=lambda args: f"Copy {args[0]} to {args[1]}",
    ),
)
async def copy(ctx: CallContext, job: Job, src: str, dst: str) -> bool:
    """Copy a file or a whole directory tree, reporting "Copied N of M bytes". Permission
    bits are copied without setuid, setgid and sticky; on failure only what this copy
    created is removed."""
    tree = await asyncio.to_thread(Tree.prepare, _roots(ctx), src, dst)

    async def written(path: str) -> None:
        await announce_written(ctx.app, path, job.id)

    try:
        with writing(ctx.app, tree.path(())):
            await copy_tree(job, tree, written)
    finally:
        tree.close()
    return True


@registry.method(
    params=[Param("path", PATH)],
    returns={"type": "null"},
    job=JobOptions(
        pipes=frozenset({"output"}), abortable=True, description=lambda args: f"Sending {args[0]}"
    ),
)
async def get(ctx: CallContext, job: Job, path: str) -> None:
    """Send a regular file to the output pipe: ``core.download("filesystem.get", [path],
    name)``. A symlink in any component of ``path`` is refused."""
    where = _roots(ctx).locate("path", path)
    output = job.pipes.output
    assert output is not None
    with await asyncio.to_thread(where.open_read) as f:
        size = os.fstat(f.fileno()).st_size
        sent = 0
        while chunk := await asyncio.to_thread(f.read, CHUNK):
            await output.write(chunk)
            sent += len(chunk)
            job.set_progress(100 * sent / size if size else 100, f"Sent {sent} of {size} bytes")


PUT_OPTIONS = {
    "type": "object",
    "properties": {
        "overwrite": {"type": "boolean", "description": "replace an existing file"},
        "mode": {
            "type": "integer",
            "minimum": 0,
            "maximum": 0o777,
            "description": "permission bits of the new file, 0..0o777 (no setuid, setgid or "
            "sticky bit); default 0o644",
        },
    },
    "additionalProperties": False,
}


def _safe_name(name: str) -> str:
    base = os.path.basename(name.replace("\\", "/"))
    if base in ("", ".", "..") or "\x00" in base:
        raise ValidationErrors([("file", f"Bad file name {name!r}", errno.EINVAL)])
    try:
        os.fsencode(base)
    except UnicodeEncodeError:
        message = f"File name {name!r} cannot be encoded"
        raise ValidationErrors([("file", message, errno.EILSEQ)]) from None
    return base


def _destination(where: Location) -> tuple[Dir, str | None]:
    """The directory files go into, and the name to write (None: each file's own name)."""
    parent = where.parent()
    try:
        kind = parent.lstat(where.name).st_mode
    except FileNotFoundError:
        return parent, where.name
    except OSError as e:
        parent.close()
        raise refusal(where.field, e) from None
    if not st.S_ISDIR(kind):
        return parent, where.name
    with parent:
        try:
            return parent.subdir([where.name]), None
        except OSError as e:
            raise refusal(where.field, e) from None


def _exists(folder: Dir, name: str, overwrite: bool) -> bool:
    """Refuse what is at ``name`` unless it is a regular file to overwrite; whether it is."""
    try:
        kind = folder.lstat(name).st_mode
    except FileNotFoundError:
        return False
    if not overwrite or not st.S_ISREG(kind):
        raise ValidationErrors([("path", f"{folder.join(name)} already exists", errno.EEXIST)])
    return True


class _Receiver:
    def __init__(
        self, app: ServerApi, job: Job, expected: int | None, folder: Dir, data_dir: Path
    ) -> None:
        self.app = app
        self.job = job
        self.expected = expected
        self.folder = folder
        self.data_dir = data_dir
        self.received = 0

    def report(self) -> None:
        percent = min(99.0, 100 * self.received / self.expected) if self.expected else None
        self.job.set_progress(percent, f"Received {self.received} bytes")

    async def save(self, source: UploadedFile, name: str, mode: int, overwrite: bool) -> None:
        """Write to a temporary name beside the target, fsync, then rename: atomic. The
        temporary name is journalled, so a crash leaves no stray file behind."""
        folder = self.folder
        existed = await in_thread(_exists, folder, name, overwrite)
        with journalled_temp(self.data_dir, folder, name) as tmp:
            with await in_thread(folder.create, tmp) as out:
                async for chunk in source.chunks():
                    await asyncio.to_thread(out.write, chunk)
                    self.received += len(chunk)
                    self.report()
                await in_thread(_sync, out, mode)
            # The temporary file is not reported (by its name); the rename is this job's.
            with writing(self.app, folder.join(name)):
                try:
                    await in_thread(folder.rename, tmp, name, overwrite)
                except FileExistsError:
                    # Created meanwhile by someone else: theirs is kept.
                    raise ValidationErrors(
                        [("path", f"{folder.join(name)} already exists", errno.EEXIST)]
                    ) from None
                await announce_written(
                    self.app, folder.join(name), self.job.id, created=not existed
                )


def _sync(f: BinaryIO, mode: int) -> None:
    f.flush()
    os.fchmod(f.fileno(), mode & 0o777)
    os.fsync(f.fileno())


@registry.method(
    params=[Param("path", PATH), Param("options", PUT_OPTIONS, required=False, default={})],
    returns={"type": "array", "items": {"type": "string"}},
    job=JobOptions(
        pipes=frozenset({"input"}),
        abortable=True,
        lock=_lock("filesystem.put", 0),
        lock_queue_size=None,
        description=lambda args: f"Receiving {args[0]}",
    ),
)
async def put(ctx: CallContext, job: Job, path: str, options: dict[str, Any]) -> list[str]:
    """Write uploaded file(s) atomically: to ``path``, or into it by name when it is a
    directory. Upload through ``POST /_upload``. Returns the paths written."""
    pipe = job.pipes.input
    assert pipe is not None
    where = _roots(ctx).locate("path", path)
    folder, fixed = await asyncio.to_thread(_destination, where)
    try:
        receiver = _Receiver(ctx.app, job, pipe.expected_bytes, folder, ctx.config.data_dir)
        overwrite = bool(options.get("overwrite", False))
        written: list[str] = []
        async for source in pipe:
            if written and fixed is not None:
                raise ValidationErrors(
                    [("path", "Several files need an existing directory", errno.ENOTDIR)]
                )
            name = fixed or _safe_name(source.filename)
            try:
                await receiver.save(source, name, options.get("mode", 0o644), overwrite)
            except OSError as e:
                raise CallError(f"{folder.join(name)}: {e.strerror}", e.errno) from None
            written.append(folder.join(name))
    finally:
        folder.close()
    if not written:
        raise ValidationErrors([("file", "No file was uploaded", errno.ENOENT)])
    return written
