"""core.*: ping, options, introspection, jobs (query, subscribe, abort, wait, bulk)."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from typing import TYPE_CHECKING, Any, cast

from middlewared.context import CallContext, SessionApi
from middlewared.errors import CallError, MiddlewareError, ValidationErrors
from middlewared.jobs.job import Job
from middlewared.jobs.query import query_jobs
from middlewared.registry import JobOptions, Param, Registry
from middlewared.rpc.schema import redact, schema_for_docs
from middlewared.services.schemas import JOB_ID, QUERY_PARAMS

if TYPE_CHECKING:
    from middlewared.app import Middleware

registry = Registry("core", "The server itself: jobs, events, introspection")


def stored_failure(record: dict[str, Any]) -> MiddlewareError:
    """The error an ended job failed with, rebuilt from its record."""
    info = record.get("exc_info") or {}
    reason = record.get("error") or f"Job {record['id']} {record['state']}"
    if info.get("type") == "VALIDATION" and info.get("extra"):
        return ValidationErrors([(f, m, e) for f, m, e in info["extra"]])
    return CallError(reason, info.get("errno"), info.get("extra"))


def server(ctx: CallContext) -> Middleware:
    return cast("Middleware", ctx.app)


def session(ctx: CallContext) -> SessionApi:
    if ctx.session is None:
        raise CallError("This method needs a connection")
    return ctx.session


@registry.method(returns={"type": "string", "const": "pong"}, public=True)
async def ping(ctx: CallContext) -> str:
    """Answer "pong": a liveness check that works before login."""
    return "pong"


@registry.method(
    params=[
        Param(
            "options",
            {
                "type": "object",
                "properties": {
                    "legacy_jobs": {"type": "boolean"},
                    "private_methods": {"type": "boolean"},
                    "py_exceptions": {"type": "boolean"},
                    "tracebacks": {"type": "boolean"},
                },
                "additionalProperties": False,
            },
        )
    ],
    returns={"type": "object"},
    public=True,
)
async def set_options(ctx: CallContext, options: dict[str, Any]) -> dict[str, Any]:
    """Set this connection's options and return those in effect.

    ``legacy_jobs``: answer a job call at once with the job id. ``py_exceptions`` is
    accepted and ignored. ``tracebacks``: include tracebacks in errors (admins only).
    """
    return session(ctx).set_options(options)


@registry.method(returns={"type": "object"}, authenticated=True)
async def get_methods(ctx: CallContext) -> dict[str, Any]:
    """Every method the caller may call: description, params and result schemas, job flags."""
    app = server(ctx)
    methods: dict[str, Any] = {}
    for name, mounted in sorted(app.dispatcher.methods.items()):
        spec = mounted.spec
        if spec.private:
            continue
        try:
            app.dispatcher.resolve(name, ctx.credentials)
        except MiddlewareError:
            continue
        methods[name] = {
            "description": spec.doc,
            "params": schema_for_docs(spec.params),
            "returns": spec.returns,
            "job": spec.job is not None,
            "job_options": None
            if spec.job is None
            else {
                "lock": spec.job.lock if isinstance(spec.job.lock, str) else None,
                "lock_queue_size": spec.job.lock_queue_size,
                "logs": spec.job.logs,
                "transient": spec.job.transient,
                "abortable": spec.job.abortable,
                "timeout": spec.job.timeout,
                "pipes": sorted(spec.job.pipes),
            },
            "public": spec.public,
        }
    return methods


@registry.method(params=QUERY_PARAMS, authenticated=True)
async def get_jobs(ctx: CallContext, filters: list[Any], options: dict[str, Any]) -> Any:
    """Query jobs (live and stored) with the filter grammar; users see only their own."""
    return await query_jobs(server(ctx), ctx.user, filters, options)


@registry.method(
    params=[Param("name", {"type": "string", "minLength": 1})],
    returns={"type": "string"},
    authenticated=True,
)
async def subscribe(ctx: CallContext, name: str) -> str:
    """Subscribe to an event source (``core.get_jobs`` or ``*``); returns the subscription id."""
    return session(ctx).subscribe(name)


@registry.method(
    params=[Param("id", {"type": "string"})], returns={"type": "null"}, authenticated=True
)
async def unsubscribe(ctx: CallContext, sub_id: str) -> None:
    """End a subscription."""
    session(ctx).unsubscribe(sub_id)


@registry.method(params=[Param("id", JOB_ID)], returns={"type": "null"}, authenticated=True)
async def job_abort(ctx: CallContext, job_id: int) -> None:
    """Abort a waiting job, or a running one that is abortable."""
    server(ctx).jobs.abort(job_id, ctx.user)


@registry.method(
    params=[Param("id", JOB_ID)],
    job=JobOptions(abortable=True, lock_queue_size=None, description="Waiting for a job"),
    authenticated=True,
)
async def job_wait(ctx: CallContext, job: Job, job_id: int) -> Any:
    """Wait for another job to end, mirroring its progress; returns its result."""
    app = server(ctx)
    target = app.jobs.live.get(job_id)
    if target is None or not ctx.user.may_read(target.credentials.username):
        record = await app.job_store.get(job_id)
        if record is None or not ctx.user.may_read(record["credentials"]["data"]["username"]):
            raise CallError(f"Job {job_id} does not exist", errno.ENOENT)
        if record["state"] == "SUCCESS":
            return record["result"]
        raise stored_failure(record)
    job.set_description(f"Waiting for job {job_id} ({target.method})")

    def mirror(src: Job) -> None:
        p = src.progress
        job.set_progress(p["percent"], p["description"], p["extra"])

    target.watchers.append(mirror)
    mirror(target)
    try:
        return await target.wait()
    finally:
        target.watchers.remove(mirror)


@registry.method(
    params=[
        Param("method", {"type": "string"}),
        # Hidden in the job record: the inner calls may carry secrets of their own.
        Param("params", {"type": "array", "items": {"type": "array"}}, secret=True),
        Param("description", {"type": ["string", "null"]}, required=False),
    ],
    returns={"type": "array"},
    job=JobOptions(lock_queue_size=None, description="Bulk call"),
    authenticated=True,
)
async def bulk(
    ctx: CallContext, job: Job, method: str, params: list[list[Any]], description: str | None
) -> list[dict[str, Any]]:
    """Call ``method`` once per entry of ``params`` (each a params list), one after another.

    Returns one ``{"job_id", "result", "error"}`` per call; a failure does not stop the rest.
    """
    app = server(ctx)
    if description:
        job.set_description(description)
    statuses: list[dict[str, Any]] = []
    for i, args in enumerate(params):
        status: dict[str, Any] = {"job_id": None, "result": None, "error": None}
        try:
            mounted = app.dispatcher.resolve(method, ctx.user)
            bound = mounted.binder.bind(args)
            if mounted.spec.job is None:
                status["result"] = await mounted.spec.func(ctx, *bound)
            else:
                sub = await app.jobs.submit(
                    mounted.spec, bound, redact(bound, mounted.spec.params), ctx.user
                )
                status["job_id"] = sub.id
                status["result"] = await sub.wait()
        except MiddlewareError as e:
            status["error"] = e.reason
            status["errno"] = e.errno
        except Exception as e:
            status["error"] = str(e) or type(e).__name__
        statuses.append(status)
        job.set_progress(100 * (i + 1) / max(1, len(params)), f"{i + 1} of {len(params)}")
    return statuses


@registry.method(returns={"type": "object"}, admin_only=True)
async def stats(ctx: CallContext) -> dict[str, Any]:
    """What the server holds now: connections, subscriptions, live jobs, asyncio tasks,
    open file descriptors and resident memory (to check that nothing leaks)."""
    app = server(ctx)
    return {
        "sessions": app.session_count(),
        "subscriptions": app.bus.subscriber_count(),
        "live_jobs": len(app.jobs.live),
        "downloads": len(app.transfers.downloads),
        "spool_bytes": app.transfers.quota.used,
        "tasks": len(asyncio.all_tasks()),
        "fds": _count_fds(),
        "rss_bytes": _rss(),
        "uptime_seconds": time.time() - app.started,
    }


def _count_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def _rss() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
