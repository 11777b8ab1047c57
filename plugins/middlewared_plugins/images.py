"""image.thumbnail: cozy-stack's thumbnail worker, on a file under the roots."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import CallError, ValidationErrors
from middlewared.jobs.job import Job
from middlewared.registry import JobOptions, Param, Registry
from middlewared.roots import Dir, Location, Roots, in_thread, refusal

from .fileevents import announce_written, writing
from .filesystem import PATH
from .tempfiles import journalled_temp
from .thumbnails import DEFAULT_MAX_PIXELS, SIZES, Thumb, Unusable, render

log = logging.getLogger(__name__)

registry = Registry("image", "cozy-stack's thumbnail worker")

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
# Decoding and resizing run here, never on the event loop; two at a time (the jobs' own
# limit), apart from the threads that serve file I/O.
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="thumbnail")

OPTIONS = {
    "type": "object",
    "properties": {
        "dest": {
            **PATH,
            "description": "directory to write into (made if missing); default: "
            "a .thumbs folder beside the image",
        },
        "keep_alpha": {
            "type": "boolean",
            "description": "write PNG (not JPEG, on white) where the image has transparency",
        },
        "max_pixels": {
            "type": "integer",
            "minimum": 1,
            "maximum": DEFAULT_MAX_PIXELS,
            "description": f"refuse larger images (width x height); default {DEFAULT_MAX_PIXELS}",
        },
        "max_bytes": {
            "type": "integer",
            "minimum": 1,
            "maximum": DEFAULT_MAX_BYTES,
            "description": f"refuse larger files; default {DEFAULT_MAX_BYTES}",
        },
    },
    "additionalProperties": False,
}
RESULT = {
    "type": "object",
    "properties": {name: {"type": "string"} for name, *_ in reversed(SIZES)},
    "required": [name for name, *_ in reversed(SIZES)],
}


def _render(where: Location, options: dict[str, Any]) -> list[Thumb]:
    max_bytes = options.get("max_bytes", DEFAULT_MAX_BYTES)
    with where.open_read() as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise Unusable(f"File of {size} bytes is over the limit of {max_bytes}", errno.EFBIG)
        return render(
            f, bool(options.get("keep_alpha")), options.get("max_pixels", DEFAULT_MAX_PIXELS)
        )


def _dest_dir(where: Location) -> Dir:
    """The destination directory, made if missing (its parent must exist)."""
    with where.parent() as parent:
        try:
            parent.mkdir(where.name)
        except FileExistsError:
            pass
        except OSError as e:
            raise refusal(where.field, e, parent=True) from None
        try:
            return parent.subdir([where.name])
        except OSError as e:
            raise refusal(where.field, e) from None


def _write(folder: Dir, tmp: str, data: bytes) -> None:
    with folder.create(tmp, 0o644) as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


# What a trigger with ``pass_event`` gives as the last argument: the events that fired it
# (``filesystem.files`` events carry the file's path as their ``id``).
TRIGGER_EVENTS = {
    "type": "object",
    "properties": {
        "trigger_id": {"type": "integer"},
        "events": {
            "type": "array",
            "items": {"type": "object", "properties": {"id": PATH}, "required": ["id"]},
        },
    },
    "required": ["events"],
}


@registry.method(
    params=[
        Param(
            "path",
            {"anyOf": [PATH, TRIGGER_EVENTS]},
            description="the image, or a trigger's events (pass_event) naming images",
        ),
        Param("options", OPTIONS, required=False, default={}),
    ],
    returns=RESULT,
    job=JobOptions(
        max_concurrency=2,
        timeout=30.0,
        description=lambda args: f"Thumbnails of {_named(args[0])}",
    ),
)
async def thumbnail(
    ctx: CallContext, job: Job, path: str | dict[str, Any], options: dict[str, Any]
) -> dict[str, str]:
    """Write the image's thumbnails as cozy-stack makes them: tiny 96x96 (cropped square),
    small 640x480, medium 1280x720, large 1920x1080 (fit inside, never upscaled), EXIF
    orientation applied, metadata stripped, as ``<name>.<size>.jpg`` (``.png`` when
    ``keep_alpha`` and the image has transparency) in ``options.dest`` or ``.thumbs`` beside
    the image; an existing thumbnail is replaced. Returns the path of each size.

    ``path`` may also be what a trigger with ``pass_event`` gives (``{"events": [...]}``,
    e.g. of ``@event filesystem.files:CREATED:image/jpeg,image/png:mime``): every image
    the events name gets its thumbnails, and the result names the last one's."""
    if isinstance(path, str):
        return await _thumbnail(ctx, job, path, options)
    paths = list(dict.fromkeys(str(event["id"]) for event in path["events"]))
    if not paths:
        raise ValidationErrors([("path", "the trigger's events name no image", errno.EINVAL)])
    result: dict[str, str] = {}
    for number, image in enumerate(paths, 1):
        job.set_progress(None, f"Image {number} of {len(paths)}: {image}")
        result = await _thumbnail(ctx, job, image, options)
    return result


def _named(path: Any) -> str:
    return path if isinstance(path, str) else "the images a trigger heard of"


async def _thumbnail(
    ctx: CallContext, job: Job, path: str, options: dict[str, Any]
) -> dict[str, str]:
    roots = Roots(ctx.config.roots)
    where = roots.locate("path", path)
    dest = roots.locate("options.dest", options.get("dest") or f"{where.path}/../.thumbs")
    loop = asyncio.get_running_loop()
    job.set_progress(0, "Decoding")
    try:
        thumbs = await loop.run_in_executor(_POOL, _render, where, options)
    except Unusable as e:
        raise ValidationErrors([("path", f"{where.path}: {e.reason}", e.code)]) from None
    except MemoryError:
        raise CallError(f"{where.path}: not enough memory to decode", errno.ENOMEM) from None
    job.set_progress(50, "Writing")
    folder = await asyncio.to_thread(_dest_dir, dest)
    written: dict[str, str] = {}
    try:
        for thumb in thumbs:
            name = f"{where.name}.{thumb.size}.{thumb.extension}"
            target = folder.join(name)
            with (
                writing(ctx.app, target),
                journalled_temp(ctx.config.data_dir, folder, name) as tmp,
            ):
                try:
                    await in_thread(_write, folder, tmp, thumb.data)
                    await in_thread(folder.rename, tmp, name)
                except OSError as e:
                    raise CallError(f"{target}: {e.strerror}", e.errno or errno.EIO) from None
                await announce_written(ctx.app, target, job.id)
            written[thumb.size] = target
    finally:
        folder.close()
    log.info("thumbnails of %s written to %s (job %d)", where.path, folder.path, job.id)
    # Smallest first, as cozy-stack lists them.
    return {name: written[name] for name, *_ in reversed(SIZES)}
