"""core.*: ping, options, introspection, jobs (query, subscribe, abort, wait, bulk)."""

from __future__ import annotations

import asyncio
import errno
import os
import time
from typing import TYPE_CHECKING, Any, cast

from middlewared import jsonc
from middlewared.context import CallContext, SessionApi
from middlewared.errors import CallError, MiddlewareError, NotFound, ValidationErrors
from middlewared.jobs.engine import JobAborted
from middlewared.jobs.job import Job
from middlewared.jobs.query import query_jobs
from middlewared.registry import Access, JobOptions, Param, Registry
from middlewared.rpc.schema import schema_for_docs
from middlewared.services.schemas import JOB_ID, QUERY_PARAMS

if TYPE_CHECKING:
    from middlewared.app import Middleware

registry = Registry("core", "The server itself: jobs, events, introspection")


def stored_failure(record: dict[str, Any]) -> MiddlewareError:
    """The error an ended job failed with, rebuilt from its record with its class."""
    info = record.get("exc_info") or {}
    reason = record.get("error") or f"Job {record['id']} {record['state']}"
    if info.get("type") == "VALIDATION" and info.get("extra"):
        return ValidationErrors([(f, m, e) for f, m, e in info["extra"]])
    if info.get("type") == "JobAborted" or record.get("state") == "ABORTED":
        return JobAborted(reason)
    return CallError(reason, info.get("errno"), info.get("extra"))


async def visible_job(ctx: CallContext, job_id: int) -> tuple[Job | None, dict[str, Any] | None]:
    """The live job or the stored record of ``job_id`` if the caller may see it (ENOENT
    otherwise: what exists is not revealed)."""
    app = app_of(ctx)
    live = app.jobs.get_live(job_id)
    if live is not None:
        if app.visibility.job(ctx.user, live.owner_id, live.method, live.key_id):
            return live, None
        raise NotFound(f"Job {job_id} does not exist")
    found = await app.job_store.ref(job_id)
    if found is None or not app.visibility.job(ctx.user, *found):
        raise NotFound(f"Job {job_id} does not exist")
    return None, await app.job_store.get(job_id)


def app_of(ctx: CallContext) -> Middleware:
    """The server a core method runs in (``ctx.app`` with its full type)."""
    return cast("Middleware", ctx.app)


def session(ctx: CallContext) -> SessionApi:
    if ctx.session is None:
        raise CallError("This method needs a connection")
    return ctx.session


@registry.method(returns={"type": "string", "const": "pong"}, access=Access.PUBLIC)
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
    access=Access.PUBLIC,
)
async def set_options(ctx: CallContext, options: dict[str, Any]) -> dict[str, Any]:
    """Set this connection's options and return those in effect.

    ``legacy_jobs``: answer a job call at once with the job id. ``py_exceptions`` is
    accepted and ignored. ``tracebacks``: include tracebacks in errors (admins only).
    """
    return session(ctx).set_options(options)


@registry.method(returns={"type": "object"}, access=Access.SELF)
async def get_methods(ctx: CallContext) -> dict[str, Any]:
    """Every method the caller may call: description, params and result schemas, job flags,
    access level."""
    app = app_of(ctx)
    methods: dict[str, Any] = {}
    for mounted in sorted(app.methods, key=lambda m: m.spec.name):
        spec = mounted.spec
        name = spec.name
        if spec.access is Access.PRIVATE:
            continue
        try:
            app.calls.check(name, ctx.credentials)
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
                "retry": None
                if spec.job.retry is None
                else {"max_attempts": spec.job.retry.max_attempts},
            },
            "public": spec.access is Access.PUBLIC,
            "access": spec.access.value,
        }
    return methods


@registry.method(params=QUERY_PARAMS, access=Access.SELF)
async def get_jobs(ctx: CallContext, filters: list[Any], options: dict[str, Any]) -> Any:
    """Query jobs (live and stored) with the filter grammar. Full administrators see every
    job; anyone else their own jobs of the methods their allow-list grants."""
    return await query_jobs(app_of(ctx), ctx.user, filters, options)


@registry.method(
    params=[Param("name", {"type": "string", "minLength": 1})],
    returns={"type": "string"},
    access=Access.SELF,
)
async def subscribe(ctx: CallContext, name: str) -> str:
    """Subscribe to an event source (``core.get_jobs`` or ``*``); returns the subscription id.
    Events are filtered as ``core.get_jobs`` filters jobs."""
    return session(ctx).subscribe(name)


@registry.method(
    params=[Param("id", {"type": "string"})], returns={"type": "null"}, access=Access.SELF
)
async def unsubscribe(ctx: CallContext, sub_id: str) -> None:
    """End a subscription."""
    session(ctx).unsubscribe(sub_id)


@registry.method(params=[Param("id", JOB_ID)], returns={"type": "null"}, access=Access.SELF)
async def job_abort(ctx: CallContext, job_id: int) -> None:
    """Abort a waiting job, or a running one that is abortable (a job the caller may see)."""
    app = app_of(ctx)
    target = app.jobs.get_live(job_id)
    if target is None or not app.visibility.job(
        ctx.user, target.owner_id, target.method, target.key_id
    ):
        raise NotFound(f"Job {job_id} is not running")
    if target.ended:
        raise NotFound(f"Job {job_id} is not running")
    app.jobs.abort(target)


@registry.method(
    params=[Param("id", JOB_ID)],
    job=JobOptions(abortable=True, lock_queue_size=None, description="Waiting for a job"),
    access=Access.SELF,
)
async def job_wait(ctx: CallContext, job: Job, job_id: int) -> Any:
    """Wait for another job to end, mirroring its progress; returns its result."""
    app = app_of(ctx)
    target, record = await visible_job(ctx, job_id)
    if target is None:
        assert record is not None
        if record["state"] == "SUCCESS":
            return await _stored_result(app, record)
        raise stored_failure(record)
    if _waits_for(target, job):
        raise CallError(
            f"Job {job.id} cannot wait for job {job_id}: it would wait for itself",
            errno.EDEADLK,
        )
    job.waiting_for = target
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
        job.waiting_for = None


def _waits_for(target: Job, job: Job) -> bool:
    """Whether ``target`` is ``job`` or (through other core.job_wait jobs) waits for it."""
    seen: set[int] = set()
    current: Job | None = target
    while current is not None and current.id not in seen:
        if current is job:
            return True
        seen.add(current.id)
        current = current.waiting_for
    return False


async def _stored_result(app: Middleware, record: dict[str, Any]) -> Any:
    """A stored job's result, from its file when it was too large for the record."""
    if record.get("result_size") is None:
        return record["result"]
    path = app.job_files.result(record["id"])
    try:
        text = await asyncio.to_thread(path.read_text, "utf-8")
    except FileNotFoundError:
        raise CallError(
            f"The result of job {record['id']} is no longer kept", errno.ENOENT
        ) from None
    return jsonc.loads(text)


@registry.method(
    params=[
        Param("method", {"type": "string"}),
        # Hidden in the job record: the inner calls may carry secrets of their own.
        Param("params", {"type": "array", "items": {"type": "array"}}, secret=True),
        Param("description", {"type": ["string", "null"]}, required=False),
    ],
    returns={"type": "array"},
    job=JobOptions(lock_queue_size=None, description="Bulk call"),
    access=Access.SELF,
)
async def bulk(
    ctx: CallContext, job: Job, method: str, params: list[list[Any]], description: str | None
) -> list[dict[str, Any]]:
    """Call ``method`` once per entry of ``params`` (each a params list), one after another.

    Returns one ``{"job_id", "result", "error"}`` per call; a failure does not stop the rest.
    """
    app = app_of(ctx)
    limit = app.config.limits.max_bulk_calls
    if len(params) > limit:
        raise ValidationErrors(
            [("params", f"{len(params)} calls: at most {limit} in one bulk", errno.EINVAL)]
        )
    if description:
        job.set_description(description)
    statuses: list[dict[str, Any]] = []
    for i, args in enumerate(params):
        status: dict[str, Any] = {"job_id": None, "result": None, "error": None}
        try:
            # Through the one call path, as the caller's credentials stand now.
            outcome = await app.calls.call(
                method, args, ctx.user, origin=f"bulk:{job.id}", return_job=True
            )
            if isinstance(outcome, Job):
                status["job_id"] = outcome.id
                status["result"] = await outcome.wait()
            else:
                status["result"] = outcome
        except MiddlewareError as e:
            status["error"] = e.reason
            status["errno"] = e.errno
        except Exception as e:
            status["error"] = str(e) or type(e).__name__
        statuses.append(status)
        job.set_progress(100 * (i + 1) / max(1, len(params)), f"{i + 1} of {len(params)}")
    return statuses


@registry.method(returns={"type": "object"}, access=Access.ADMIN)
async def stats(ctx: CallContext) -> dict[str, Any]:
    """What the server holds now: connections, subscriptions, live jobs, asyncio tasks,
    open file descriptors and resident memory (to check that nothing leaks)."""
    app = app_of(ctx)
    return {
        "sessions": app.session_count(),
        "subscriptions": app.bus.subscriber_count(),
        "live_jobs": len(app.jobs.live),
        "listeners": [listener.stats() for listener in app.bus.listeners],
        "disabled_plugins": dict(app.plugins.disabled),
        "tokens": len(app.tokens),
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
