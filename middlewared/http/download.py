"""GET /_download/{job_id}?auth_token=T: a job's output, streamed (unbuffered) or served from
its spool file with HEAD and Range support (buffered, log files)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from middlewared.app import Middleware
from middlewared.http.errors import http_error
from middlewared.http.keys import MIDDLEWARE
from middlewared.jobs.job import JobState
from middlewared.transfers import Download

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")


def content_disposition(filename: str) -> str:
    """RFC 6266 with an RFC 5987 ``filename*`` so any name survives."""
    fallback = _UNSAFE.sub("_", filename) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _lookup(request: web.Request, app: Middleware) -> tuple[Download, str]:
    try:
        job_id = int(request.match_info["job_id"])
    except ValueError:
        raise http_error(web.HTTPNotFound, "No such download") from None
    dl = app.transfers.downloads.get(job_id)
    if dl is None:
        if app.transfers.is_expired(job_id):
            raise http_error(web.HTTPGone, f"The download of job {job_id} has expired")
        raise http_error(web.HTTPNotFound, f"No download for job {job_id}")
    token = request.query.get("auth_token", "")
    found = app.tokens.peek(token) if token else None
    if found is None or found.purpose != "download" or found.job_id != job_id:
        raise http_error(web.HTTPUnauthorized, "Invalid or already used download token")
    # The token's user or key may have been revoked since it was issued.
    if app.directory.resolve(found.identity) is None:
        raise http_error(web.HTTPUnauthorized, "The credentials of this download were revoked")
    return dl, token


async def download_handler(request: web.Request) -> web.StreamResponse:
    app = request.app[MIDDLEWARE]
    dl, token = _lookup(request, app)
    headers = {"Content-Disposition": content_disposition(dl.filename)}
    if dl.pipe is not None and not dl.buffered:
        return await _stream(request, app, dl, token, headers)
    return await _file(request, app, dl, token, headers)


async def _stream(
    request: web.Request, app: Middleware, dl: Download, token: str, headers: dict[str, str]
) -> web.StreamResponse:
    headers["Content-Type"] = "application/octet-stream"
    if request.method == "HEAD":
        return web.Response(headers=headers)
    job = dl.job
    if job is not None and job.ended and job.state is not JobState.SUCCESS:
        raise http_error(web.HTTPConflict, f"Job {job.id} {job.state.value}: {job.error}")
    if dl.started or app.tokens.use(token, "download", dl.job_id) is None:
        raise http_error(web.HTTPUnauthorized, "Invalid or already used download token")
    app.transfers.start(dl)
    pipe = dl.pipe
    assert pipe is not None
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    try:
        while chunk := await pipe.read():
            await response.write(chunk)
        if pipe.error is not None:
            # Headers are gone already: cut the connection so a client cannot take a
            # partial stream for the whole file.
            log.warning("job %d failed during its download: %s", dl.job_id, pipe.error)
            raise ConnectionAbortedError(pipe.error)
    finally:
        await pipe.detach()
        app.transfers.expire(dl.job_id)
    await response.write_eof()
    return response


async def _file(
    request: web.Request, app: Middleware, dl: Download, token: str, headers: dict[str, str]
) -> web.StreamResponse:
    job = dl.job
    if job is not None:
        # Buffered output can be fetched once the job is over.
        with contextlib.suppress(Exception):
            await asyncio.shield(job.done)
        if job.state is not JobState.SUCCESS:
            raise http_error(web.HTTPConflict, f"Job {job.id} {job.state.value}: {job.error}")
    path = dl.path if dl.path is not None else dl.pipe.spool_path if dl.pipe else None
    size = None if path is None else await asyncio.to_thread(_size, path)
    if path is None or size is None:
        raise http_error(web.HTTPGone, "The output is no longer available")
    headers["Content-Type"] = "application/octet-stream"
    response = web.FileResponse(path, headers=headers)
    await response.prepare(request)
    if request.method == "GET" and _reaches_end(request, size):
        # The whole file (or its last range, on a resumed download) has been sent.
        app.tokens.use(token, "download", dl.job_id)
    return response


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _reaches_end(request: web.Request, size: int) -> bool:
    try:
        rng = request.http_range
    except ValueError:
        return False
    return rng.stop is None or rng.stop >= size
