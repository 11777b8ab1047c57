"""log.print: cozy-stack's log worker, a message written to the server log and the job log."""

from __future__ import annotations

import logging
import re

from middlewared.context import CallContext
from middlewared.jobs.job import Job
from middlewared.registry import JobOptions, Param, Registry

log = logging.getLogger(__name__)

registry = Registry("log", "cozy-stack's log worker")

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _one_line(text: str) -> str:
    """``text`` with control characters escaped: a caller cannot forge other log lines."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


@registry.method(
    name="print",
    params=[
        Param("message", {"type": "string", "maxLength": 65536}),
        Param(
            "level",
            {"enum": list(LEVELS)},
            required=False,
            default="INFO",
            description="the server log's level for the message",
        ),
    ],
    returns={"type": "null"},
    job=JobOptions(logs=True, timeout=1.0, description=lambda args: "Log a message"),
)
async def print_(ctx: CallContext, job: Job, message: str, level: str = "INFO") -> None:
    """Write ``message`` to the server log at ``level`` (naming the job and its caller, control
    characters escaped so it stays one line) and to the job's log."""
    log.log(
        getattr(logging, level),
        "log.print (job %d, %s): %s",
        job.id,
        ctx.user.username,
        _one_line(message),
    )
    job.log(f"{level} {message}")
