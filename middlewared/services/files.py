"""core.download and core.job_download_logs: URLs through which a job's output is fetched."""

from __future__ import annotations

import errno
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import ValidationErrors
from middlewared.jobs.pipes import Pipes
from middlewared.registry import Param, Registry
from middlewared.rpc.schema import redact
from middlewared.services.core import server
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
        "minItems": 2,
        "maxItems": 2,
        "description": "[job_id, url]",
    },
    authenticated=True,
)
async def download(
    ctx: CallContext, method: str, args: list[Any], filename: str, buffered: bool
) -> list[Any]:
    """Start ``method`` with an output pipe; returns ``[job_id, url]``.

    The URL's token is single-use and bound to this job. Unbuffered output must be fetched
    within the configured deadline (60 s) or the job is aborted; buffered output is spooled
    to disk and kept for an hour after the job ends.
    """
    app = server(ctx)
    mounted = app.dispatcher.resolve(method, ctx.user)
    spec = mounted.spec
    if spec.job is None or "output" not in spec.job.pipes:
        raise ValidationErrors([("method", f"{method} produces no download", errno.EINVAL)])
    bound = mounted.binder.bind(args)
    pipe = app.transfers.output_pipe(buffered, ctx.user.username)
    job = await app.jobs.submit(
        spec, bound, redact(bound, spec.params), ctx.user, pipes=Pipes(output=pipe)
    )
    ttl = app.config.transfers.download_keep_seconds + 24 * 3600.0
    token = app.tokens.issue(ctx.user, ttl, True, job.id, "download")
    app.transfers.register(job, filename, buffered, pipe)
    return [job.id, _url(job.id, token)]


@registry.method(
    params=[
        Param("id", JOB_ID),
        Param("filename", {**FILENAME, "type": ["string", "null"]}, required=False, default=None),
    ],
    returns={"type": "string"},
    authenticated=True,
)
async def job_download_logs(ctx: CallContext, job_id: int, filename: str | None) -> str:
    """A download URL (single-use token) for a job's log file."""
    app = server(ctx)
    record = await app.job_store.get(job_id)
    live = app.jobs.live.get(job_id)
    owner = (
        live.credentials.username
        if live is not None
        else (record or {}).get("credentials", {}).get("data", {}).get("username")
    )
    if (record is None and live is None) or not ctx.user.may_read(owner):
        raise ValidationErrors([("id", f"Job {job_id} does not exist", errno.ENOENT)])
    path = app.config.logs_dir / f"{job_id}.log"
    if not path.exists():
        raise ValidationErrors([("id", f"Job {job_id} has no logs", errno.ENOENT)])
    token = app.tokens.issue(
        ctx.user, app.config.transfers.download_keep_seconds, True, job_id, "download"
    )
    app.transfers.register_file(job_id, filename or f"job_{job_id}.log", path)
    return _url(job_id, token)
