"""A plugin for the notifier tests: tells named notifiers of a job's end, as the trigger
engine does, so mail and webhook delivery can be driven over the wire."""

from __future__ import annotations

from typing import Any

from middlewared.context import CallContext
from middlewared.registry import Access, Param, Registry
from middlewared.services.core import app_of

registry = Registry("notifytest", "Notifier test helpers")


@registry.method(
    params=[
        Param("job_id", {"type": "integer", "minimum": 1}),
        Param("names", {"type": "array", "items": {"type": "string"}}),
        Param("counter", {"type": "integer"}, required=False, default=1),
        Param("subject_name", {"type": "string"}, required=False, default="nightly"),
    ],
    returns={"type": "null"},
    access=Access.ADMIN,
)
async def notify(
    ctx: CallContext, job_id: int, names: list[str], counter: int, subject_name: str
) -> None:
    """Tell ``names`` of the end of job ``job_id`` (its record and log); returns once every
    delivery ended, never with a delivery's error."""
    notifiers = app_of(ctx).notifiers
    job: dict[str, Any] = await ctx.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
    log_text = await notifiers.read_log(job.get("logs_path"))
    await notifiers.notify(
        names, job=job, counter=counter, subject_name=subject_name, log_text=log_text
    )
