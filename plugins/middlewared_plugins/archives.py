"""archive.zip and archive.unzip: cozy-stack's zip and unzip workers, on files under the
roots."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import zipfile
from typing import Any, BinaryIO

from middlewared.context import CallContext
from middlewared.errors import CallError, ValidationErrors
from middlewared.jobs.job import Job
from middlewared.registry import JobOptions, Param, Registry
from middlewared.roots import Dir, Roots, in_thread, refusal

from .blocking import run_blocking
from .fileevents import announce_written, writing
from .filesystem import PATH
from .tempfiles import journalled_temp
from .unzipping import MAX_NUMBER, Extraction
from .zipcheck import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ENTRIES,
    DEFAULT_MAX_RATIO,
    Entry,
    Limits,
    Refused,
    check,
    numbered,
)
from .zipping import Source, plan, write

log = logging.getLogger(__name__)

registry = Registry("archive", "cozy-stack's zip and unzip workers")

MAX_FILES = 10_000
NAME = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^/\\x00]+$"}
ZIP_OPTIONS = {
    "type": "object",
    "properties": {
        "files": {
            "type": "object",
            "additionalProperties": PATH,
            "description": "path in the zip -> path of a file, or of a directory whose tree "
            "goes under that name (symlinks left out)",
        },
        "dir": {**PATH, "description": "directory the zip is written to"},
        "filename": {**NAME, "description": "the zip's name; numbered (name (2).zip) if taken"},
    },
    "required": ["files", "dir", "filename"],
    "additionalProperties": False,
}


def _limit(default: float, what: str, integer: bool = True) -> dict[str, Any]:
    return {
        "type": "integer" if integer else "number",
        "minimum": 1,
        "maximum": default,
        "description": f"{what}; default (and most) {default:g}",
    }


UNZIP_OPTIONS = {
    "type": "object",
    "properties": {
        "zip": {**PATH, "description": "the zip archive"},
        "destination": {**PATH, "description": "an existing directory to extract into"},
        "max_entries": _limit(DEFAULT_MAX_ENTRIES, "refuse archives with more entries"),
        "max_bytes": _limit(DEFAULT_MAX_BYTES, "refuse archives with more bytes uncompressed"),
        "max_ratio": _limit(
            DEFAULT_MAX_RATIO, "refuse entries of 1 MiB or more compressed more than this", False
        ),
    },
    "required": ["zip", "destination"],
    "additionalProperties": False,
}


def _zip_lock(args: Any) -> str:
    return f"archive.zip:{args[0].get('dir')}/{args[0].get('filename')}"


def _place(folder: Dir, tmp: str, name: str) -> str:
    for n in range(1, MAX_NUMBER):
        candidate = numbered(name, n)
        try:
            folder.rename(tmp, candidate, replace=False)
        except FileExistsError:
            continue
        return candidate
    raise OSError(errno.EEXIST, f"No free name for {name}", folder.join(name))


def _prepare_zip(roots: Roots, options: dict[str, Any]) -> tuple[list[Source], Dir]:
    sources = plan(roots, options["files"])
    where = roots.locate("dir", options["dir"])
    return sources, where.open_dir()


@registry.method(
    name="zip",
    params=[Param("options", ZIP_OPTIONS)],
    returns={"type": "string", "description": "the path of the zip written"},
    job=JobOptions(
        lock=_zip_lock,
        abortable=True,
        timeout=600.0,
        description=lambda args: f"Zip into {args[0].get('dir')}/{args[0].get('filename')}",
    ),
)
async def zip_(ctx: CallContext, job: Job, options: dict[str, Any]) -> str:
    """Write a zip of ``files`` (name in the zip -> path; a directory adds its tree) as
    ``filename`` in ``dir``, streaming with byte progress; ZIP64 where sizes need it, names
    in UTF-8. A name already taken is never replaced: the zip is numbered ``name (2).zip``.
    Returns the zip's path."""
    name = options["filename"]
    if name in (".", ".."):
        raise ValidationErrors([("filename", "Not a file name", errno.EINVAL)])
    if not 1 <= len(options["files"]) <= MAX_FILES:
        raise ValidationErrors([("files", f"Give 1 to {MAX_FILES} files", errno.EINVAL)])
    sources, folder = await asyncio.to_thread(_prepare_zip, Roots(ctx.config.roots), options)
    total = sum(s.stat.st_size for s in sources if not s.is_dir)
    try:
        with journalled_temp(ctx.config.data_dir, folder, name) as tmp:
            try:
                await run_blocking(
                    job, total, "Zipped", lambda p, s: write(folder, tmp, sources, p, s)
                )
                final = await in_thread(_place, folder, tmp, name)
            except OSError as e:
                raise CallError(f"{folder.join(name)}: {e.strerror}", e.errno or errno.EIO) from e
    finally:
        folder.close()
    path = folder.join(final)
    await announce_written(ctx.app, path, job.id)
    job.set_progress(100, f"Zipped {total} bytes in {len(sources)} entries")
    log.info("archive.zip wrote %s: %d entries (job %d)", path, len(sources), job.id)
    return path


def _open_archive(
    roots: Roots, options: dict[str, Any], limits: Limits
) -> tuple[BinaryIO, zipfile.ZipFile, list[Entry], Dir]:
    f = roots.locate("zip", options["zip"]).open_read()
    try:
        try:
            archive = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, EOFError, ValueError) as e:
            raise ValidationErrors([("zip", f"Not a zip archive: {e}", errno.EINVAL)]) from None
        try:
            entries = check(archive.infolist(), limits)
        except Refused as e:
            raise ValidationErrors([("zip", e.reason, e.code)]) from None
        dest = roots.locate("destination", options["destination"])
        try:
            return f, archive, entries, dest.open_dir()
        except ValidationErrors:
            raise
        except OSError as e:
            raise refusal("destination", e) from None
    except BaseException:
        f.close()
        raise


async def _extract(job: Job, extraction: Extraction, entries: list[Entry]) -> list[str]:
    total = sum(e.info.file_size for e in entries)
    try:
        await run_blocking(job, total, "Unzipped", lambda p, s: extraction.extract(entries, p, s))
    except Refused as e:
        raise ValidationErrors([("zip", e.reason, e.code)]) from None
    return await in_thread(extraction.move_into_place, entries)


@registry.method(
    params=[Param("options", UNZIP_OPTIONS)],
    returns={"type": "array", "items": {"type": "string"}},
    job=JobOptions(
        abortable=True,
        timeout=600.0,
        description=lambda args: f"Unzip {args[0].get('zip')}",
    ),
)
async def unzip(ctx: CallContext, job: Job, options: dict[str, Any]) -> list[str]:
    """Extract ``zip`` into the directory ``destination``, streaming with byte progress.
    Refused before anything is written, naming the entry: names that escape the
    destination (``..``, absolute, drive letters), symbolic links, more entries than
    ``max_entries``, more bytes than ``max_bytes``, an entry of 1 MiB or more compressed
    over ``max_ratio``; an entry found larger than its declared size stops the extraction.
    Entries are written into a temporary folder inside the destination and moved into
    place at the end (removed on any failure); a top-level name already taken is numbered
    ``name (2).ext``, never replaced. Returns the paths written."""
    limits = Limits(
        options.get("max_entries", DEFAULT_MAX_ENTRIES),
        options.get("max_bytes", DEFAULT_MAX_BYTES),
        options.get("max_ratio", DEFAULT_MAX_RATIO),
    )
    roots = Roots(ctx.config.roots)
    f, archive, entries, dest = await asyncio.to_thread(_open_archive, roots, options, limits)
    tmp = f".unzip.{secrets.token_hex(6)}.part"
    try:
        with writing(ctx.app, dest.join(tmp)):
            try:
                extraction = await in_thread(Extraction, archive, dest, tmp)
            except OSError as e:
                raise CallError(f"Cannot write into {dest.path}: {e.strerror}", e.errno) from e
            try:
                written = await _extract(job, extraction, entries)
            except OSError as e:
                raise CallError(f"Unzip into {dest.path}: {e.strerror}", e.errno) from e
            finally:
                await in_thread(extraction.remove)
                extraction.close()
    finally:
        with contextlib.suppress(Exception):
            archive.close()
        f.close()
        dest.close()
    for path in written:
        await announce_written(ctx.app, path, job.id)
    log.info("archive.unzip wrote %d entries into %s (job %d)", len(written), dest.path, job.id)
    return written
