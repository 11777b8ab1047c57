"""GET /_download/{job_id}?auth_token=T: a job's output, streamed (unbuffered) or served from
its spool file with HEAD and Range support (buffered, log files)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from pathlib import Path
from typing import BinaryIO, NoReturn
from urllib.parse import quote

from aiohttp import web

from middlewared import jsonc
from middlewared.app import Middleware
from middlewared.http.errors import http_error
from middlewared.http.keys import MIDDLEWARE
from middlewared.jobs.job import JobState
from middlewared.transfers import Download

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")
# Read from the spool file and written to the client in pieces this big.
CHUNK = 256 * 1024


def content_disposition(filename: str) -> str:
    """RFC 6266 with an RFC 5987 ``filename*`` so any name survives."""
    fallback = _UNSAFE.sub("_", filename) or "download"
    # A name that is not UTF-8 (lone surrogates) is shown with U+FFFD where it is not.
    shown = jsonc.replace_surrogates(filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(shown, safe='')}"


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
    try:
        # Headers wait for the first chunk: a job that fails before writing anything gets
        # a clear 409, not a 200 with an empty body.
        chunk = await pipe.read()
        if not chunk and pipe.error is not None:
            raise http_error(web.HTTPConflict, f"Job {dl.job_id} failed: {pipe.error}")
        response = web.StreamResponse(headers=headers)
        await response.prepare(request)
        while chunk:
            await response.write(chunk)
            chunk = await pipe.read()
        if pipe.error is not None:
            # Headers are gone already: cut the connection (a reset, not a clean close) so
            # a client cannot take a partial stream for the whole file.
            log.warning("job %d failed during its download: %s", dl.job_id, pipe.error)
            _cut(request, pipe.error)
    finally:
        await pipe.detach()
        app.transfers.expire(dl.job_id)
    await response.write_eof()
    return response


async def _file(
    request: web.Request, app: Middleware, dl: Download, token: str, headers: dict[str, str]
) -> web.StreamResponse:
    """Buffered output and log files: HEAD, Range, and the token's rule (README, "Files in
    and out of jobs"): one request at a time; spent once the file's last byte has been sent,
    or by a request that does not continue where the previous one stopped."""
    job = dl.job
    if job is not None:
        # Buffered output can be fetched once the job is over.
        with contextlib.suppress(Exception):
            await asyncio.shield(job.done)
        if job.state is not JobState.SUCCESS:
            raise http_error(web.HTTPConflict, f"Job {job.id} {job.state.value}: {job.error}")
    path = dl.path if dl.path is not None else dl.pipe.spool_path if dl.pipe else None
    opened = None if path is None else await asyncio.to_thread(_open, path)
    if opened is None:
        raise http_error(web.HTTPGone, "The output is no longer available")
    with opened as f:
        size = os.fstat(f.fileno()).st_size
        start, end = _byte_range(request, size)
        headers["Content-Type"] = "application/octet-stream"
        headers["Accept-Ranges"] = "bytes"
        if request.method == "HEAD":
            return await _head(request, headers, size)
        if dl.active:
            raise http_error(
                web.HTTPConflict,
                f"The download of job {dl.job_id} is being sent to another request; "
                "its token serves one request at a time",
            )
        # The token may have been spent while this request waited for the job.
        if app.tokens.peek(token) is None:
            raise http_error(web.HTTPUnauthorized, "Invalid or already used download token")
        last_use = dl.begin(start, end)
        if last_use:
            app.tokens.use(token, "download", dl.job_id)
        try:
            return await _send(request, dl, f, (start, end, size), headers)
        finally:
            dl.active = False
            if last_use or dl.stopped_at == size:
                app.tokens.use(token, "download", dl.job_id)
                app.transfers.used_up(dl)


async def _head(request: web.Request, headers: dict[str, str], size: int) -> web.StreamResponse:
    response = web.StreamResponse(headers=headers)
    response.content_length = size
    await response.prepare(request)
    await response.write_eof()
    return response


async def _send(
    request: web.Request,
    dl: Download,
    f: BinaryIO,
    span: tuple[int, int, int],
    headers: dict[str, str],
) -> web.StreamResponse:
    """Bytes [start, end) of the file; ``dl`` counts what has been written."""
    start, end, size = span
    whole = (start, end) == (0, size) and "Range" not in request.headers
    response = web.StreamResponse(status=200 if whole else 206, headers=headers)
    response.content_length = end - start
    if not whole:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    await response.prepare(request)
    await asyncio.to_thread(f.seek, start)
    position = start
    while position < end:
        chunk = await asyncio.to_thread(f.read, min(CHUNK, end - position))
        if not chunk:
            _cut(request, f"job {dl.job_id}: the spool file shrank")
        await response.write(chunk)
        position += len(chunk)
        dl.sent(len(chunk))
    await response.write_eof()
    return response


def _cut(request: web.Request, reason: str) -> NoReturn:
    """End a response whose headers are sent with a reset, not a clean close: aiohttp alone
    may leave the client waiting for the rest of a body that never comes."""
    if request.transport is not None:
        request.transport.abort()
    raise ConnectionAbortedError(reason)


def _open(path: Path) -> BinaryIO | None:
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None


def _byte_range(request: web.Request, size: int) -> tuple[int, int]:
    """The bytes [start, end) a request asks for (the whole file without Range); 416 for
    a range past the end, a malformed one or several."""
    try:
        rng = request.http_range
    except ValueError as e:
        raise _unsatisfiable(size, f"Bad Range header: {e}") from None
    start, stop = rng.start, rng.stop
    if start is None and stop is None:
        return 0, size
    if start is None or start < 0:  # a suffix: the last -start bytes
        start, stop = max(0, size + (start or 0)), None
    end = size if stop is None else min(stop, size)
    if start >= end:
        raise _unsatisfiable(size, f"Range not satisfiable: the file has {size} bytes")
    return start, end


def _unsatisfiable(size: int, reason: str) -> web.HTTPException:
    return http_error(
        web.HTTPRequestRangeNotSatisfiable, reason, headers={"Content-Range": f"bytes */{size}"}
    )
