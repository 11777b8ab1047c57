"""POST /_upload: multipart ``data`` (JSON method and params) then ``file`` parts, streamed
into a new job's input pipe; answers ``{"job_id": N}`` once the upload is accepted."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import BodyPartReader, MultipartReader, web

from middlewared import jsonc
from middlewared.app import Middleware
from middlewared.auth.credentials import Credentials
from middlewared.errors import MethodNotFound, MiddlewareError, PermissionDenied, errname
from middlewared.http.auth import authenticate
from middlewared.http.errors import PartsOutOfOrder, PayloadTooLarge, error_body, http_error
from middlewared.http.keys import MIDDLEWARE
from middlewared.jobs.job import Job
from middlewared.jobs.pipes import InputPipe, Pipes
from middlewared.jobs.spool import SpoolFull

log = logging.getLogger(__name__)

MAX_DATA_PART = 1024 * 1024
# Read from the request in pieces this big (aiohttp waits to fill a piece).
PIECE = 256 * 1024


async def _data_part(reader: MultipartReader) -> tuple[str, Any]:
    part = await reader.next()
    if part is None:
        raise http_error(web.HTTPBadRequest, "Empty upload: expected a 'data' part then files")
    if not isinstance(part, BodyPartReader) or part.name != "data":
        raise http_error(PartsOutOfOrder, "The first part must be 'data'")
    raw = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        raw += chunk
        if len(raw) > MAX_DATA_PART:
            raise http_error(PayloadTooLarge, "The 'data' part is too large")
    try:
        data = jsonc.loads(bytes(raw))
    except jsonc.JSONDecodeError as e:
        raise http_error(web.HTTPBadRequest, f"The 'data' part is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("method"), str):
        raise http_error(web.HTTPBadRequest, '\'data\' must be {"method": ..., "params": [...]}')
    params = data.get("params", [])
    if not isinstance(params, list | dict):
        raise http_error(web.HTTPBadRequest, "'params' must be an array or an object")
    return data["method"], params


async def _start_job(
    app: Middleware, creds: Credentials, method: str, params: Any, pipe: InputPipe
) -> Job:
    """The upload's job, through the one call path (its refusals as HTTP statuses)."""
    try:
        return await app.calls.start(
            method, params, creds, pipes=Pipes(input=pipe), origin="upload"
        )
    except MethodNotFound:
        raise http_error(
            web.HTTPUnprocessableEntity, f"Method {method!r} does not exist", errname="ENOMETHOD"
        ) from None
    except PermissionDenied as e:
        raise http_error(web.HTTPForbidden, e.reason) from None
    except MiddlewareError as e:
        raise http_error(
            web.HTTPUnprocessableEntity, e.reason, errname=e.error_data()["errname"], extra=e.extra
        ) from None


class Stalled(Exception):
    """The client sent nothing for the idle timeout."""


class IdleTimer:
    """A deadline pushed back each time the client sends something (one timer, no task).

    It is moved at most every TOUCH_STEP seconds (moving an asyncio timer costs a new timer
    handle; an upload touches it thousands of times a second), so the client is cut off
    after between ``seconds - TOUCH_STEP`` and ``seconds`` of silence.
    """

    TOUCH_STEP = 0.1

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._loop = asyncio.get_running_loop()
        self._timeout: asyncio.Timeout | None = None
        self._moved = self._loop.time()

    async def __aenter__(self) -> IdleTimer:
        self._timeout = asyncio.timeout(self.seconds)
        await self._timeout.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self._timeout is not None
        try:
            await self._timeout.__aexit__(*exc)
        except TimeoutError:
            raise Stalled() from None

    def touch(self) -> None:
        assert self._timeout is not None
        now = self._loop.time()
        if now - self._moved >= self.TOUCH_STEP:
            self._moved = now
            self._timeout.reschedule(now + self.seconds)


async def _receive(reader: MultipartReader, pipe: InputPipe, limit: int, idle: IdleTimer) -> int:
    """Stream every ``file`` part into the pipe; returns the number of files."""
    total = 0
    count = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name != "file":
            raise http_error(PartsOutOfOrder, "After 'data', only 'file' parts may follow")
        count += 1
        f = await pipe.new_file(part.filename or f"file{count}")
        while chunk := await part.read_chunk(PIECE):
            idle.touch()
            total += len(chunk)
            if total > limit:
                raise http_error(PayloadTooLarge, f"Upload larger than the limit of {limit} bytes")
            await f.append(chunk)
        await f.finish()
    if count == 0:
        raise http_error(web.HTTPBadRequest, "No 'file' part was sent")
    if not reader.at_eof():
        raise http_error(web.HTTPBadRequest, "Truncated multipart body: no closing boundary")
    return count


async def _cut_off(request: web.Request, reason: str) -> web.StreamResponse:
    """408, then close: aiohttp would otherwise linger to read a body that is not coming."""
    status = web.HTTPRequestTimeout.status_code
    response = web.Response(
        text=error_body(status, reason), status=status, content_type="application/json"
    )
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


async def upload_handler(request: web.Request) -> web.StreamResponse:
    app = request.app[MIDDLEWARE]
    creds = await authenticate(request, app)
    limit = app.config.transfers.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise http_error(PayloadTooLarge, f"Upload larger than the limit of {limit} bytes")
    if not request.content_type.startswith("multipart/"):
        raise http_error(web.HTTPBadRequest, "Expected multipart/form-data")
    idle_seconds = app.config.transfers.upload_idle_seconds
    stalled = f"Upload stalled: nothing received for {idle_seconds:g} s"
    try:
        async with IdleTimer(idle_seconds):
            reader = await request.multipart()
            method, params = await _data_part(reader)
    except ValueError as e:
        raise http_error(web.HTTPBadRequest, f"Malformed multipart body: {e}") from None
    except Stalled:
        return await _cut_off(request, stalled)
    pipe = app.transfers.input_pipe(creds.username)
    pipe.expected_bytes = request.content_length
    job = await _start_job(app, creds, method, params, pipe)
    app.hooks.watch_upload(job)
    try:
        async with IdleTimer(idle_seconds) as idle:
            count = await _receive(reader, pipe, limit, idle)
    except Stalled:
        log.warning("job %d: %s", job.id, stalled)
        await pipe.close(stalled)
        return await _cut_off(request, stalled)
    except web.HTTPException as e:
        await pipe.close(f"Upload refused: {e.reason}")
        raise
    except SpoolFull as e:
        log.warning("job %d: upload refused: %s", job.id, e.reason)
        await pipe.close(f"Upload refused: {e.reason}")
        raise http_error(web.HTTPInsufficientStorage, e.reason, errname=errname(e.errno)) from None
    except ValueError as e:
        await pipe.close("Upload refused: malformed multipart body")
        raise http_error(web.HTTPBadRequest, f"Malformed multipart body: {e}") from None
    except BaseException as e:
        log.warning("job %d: upload interrupted (%s)", job.id, type(e).__name__)
        await pipe.close("Upload interrupted")
        raise
    await pipe.close()
    log.info("job %d: upload of %d file(s) accepted", job.id, count)
    return web.json_response({"job_id": job.id})
