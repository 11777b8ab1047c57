"""core.download, core.job_download_logs and core.job_download_result: URLs through which
a job's output, log or large result is fetched."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import MiddlewareError, ValidationErrors
from middlewared.jobs.pipes import Pipes
from middlewared.registry import Access, Param, Registry
from middlewared.services.core import app_of, visible_job
from middlewared.services.schemas import JOB_ID

registry = Registry("core", "File transfers")

FILENAME = {"type": "string", "minLength": 1, "maxLength": 255}


def _url(job_id: int, token: str) -> str:
    return f"/_download/{job_id}?auth_token={token}"


@registry.method(
    params=[
        Param("method", {"type": "string"}),
        Param("args", {"type": "array"}),
        Param("filename", FILENAME),
        Param("buffered", {"type": "boolean"}, required=False, default=False),
    ],
    returns={
        "type": "array",
        "items": {"type": ["integer", "string"]},
        # writeOnly: the URL holds a token, the caller's alone (never shown to hook scripts).
        "writeOnly": True,
        "minItems": 2,
        "maxItems": 2,
        "description": "[job_id, url]",
    },
    access=Access.SELF,
)
async def download(
    ctx: CallContext, method: str, args: list[Any], filename: str, buffered: bool
) -> list[Any]:
    """Start ``method`` with an output pipe; returns ``[job_id, url]``.

    The URL's token is single-use and bound to this job. Unbuffered output must be fetched
    within the configured deadline (60 s) or the job is aborted; buffered output is spooled
    to disk and kept for an hour after the job ends.
    """
    app = app_of(ctx)
    mounted = app.calls.check(method, ctx.user)
    if mounted.spec.job is None or "output" not in mounted.spec.job.pipes:
        raise ValidationErrors([("method", f"{method} produces no download", errno.EINVAL)])
    pipe = app.transfers.output_pipe(buffered, ctx.user.username)
    try:
        job = await app.calls.start(
            method,
            args,
            ctx.user,
            pipes=Pipes(output=pipe),
            origin="download",
            message_id=ctx.message_id,
        )
    except MiddlewareError:
        pipe.discard()
        raise
    ttl = app.config.transfers.download_keep_seconds + 24 * 3600.0
    token = app.tokens.issue(ctx.user, ttl, True, job.id, "download")
    app.transfers.register(job, filename, buffered, pipe)
    return [job.id, _url(job.id, token)]


@registry.method(
    params=[
        Param("id", JOB_ID),
        Param("filename", {**FILENAME, "type": ["string", "null"]}, required=False, default=None),
    ],
    returns={"type": "string", "writeOnly": True},
    access=Access.SELF,
)
async def job_download_logs(ctx: CallContext, job_id: int, filename: str | None) -> str:
    """A download URL (single-use token) for the log file of a job the caller may see."""
    app = app_of(ctx)
    return await _serve_file(
        ctx, job_id, app.job_files.log(job_id), filename or f"job_{job_id}.log", "logs"
    )


@registry.method(
    params=[
        Param("id", JOB_ID),
        Param("filename", {**FILENAME, "type": ["string", "null"]}, required=False, default=None),
    ],
    returns={"type": "string", "writeOnly": True},
    access=Access.SELF,
)
async def job_download_result(ctx: CallContext, job_id: int, filename: str | None) -> str:
    """A download URL (single-use token) for the result of a job the caller may see, as
    JSON: for results too large for the job's record (its ``result_size`` is set)."""
    app = app_of(ctx)
    return await _serve_file(
        ctx, job_id, app.job_files.result(job_id), filename or f"job_{job_id}.json", "result"
    )


async def _serve_file(ctx: CallContext, job_id: int, path: Path, filename: str, what: str) -> str:
    app = app_of(ctx)
    try:
        await visible_job(ctx, job_id)
    except MiddlewareError:
        raise ValidationErrors([("id", f"Job {job_id} does not exist", errno.ENOENT)]) from None
    if not await asyncio.to_thread(path.exists):
        raise ValidationErrors([("id", f"Job {job_id} has no {what} file", errno.ENOENT)])
    token = app.tokens.issue(
        ctx.user, app.config.transfers.download_keep_seconds, True, job_id, "download"
    )
    app.transfers.register_file(job_id, filename, path)
    return _url(job_id, token)
