"""hook.*: what the hook scripts of ``--trigger-dir`` did (README: Hook scripts)."""

from __future__ import annotations

from typing import Any

from middlewared.context import CallContext
from middlewared.hooks.record import KEPT_RUNS
from middlewared.registry import Access, Param, Registry
from middlewared.services.core import app_of

registry = Registry("hook", "Hook scripts: executables in --trigger-dir named after events")

RUN = {
    "type": "object",
    "properties": {
        "script": {"type": "string"},
        "event": {"type": "string"},
        "args": {"type": "array", "items": {"type": "string"}},
        "exit_code": {"type": ["integer", "null"]},
        "duration": {"type": "number"},
        "started": {"type": "object"},
        "timed_out": {"type": "boolean"},
        "output_tail": {"type": "string"},
        "output_bytes": {"type": "integer"},
        "error": {"type": ["string", "null"]},
    },
}


@registry.method(
    params=[
        Param(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": KEPT_RUNS},
            required=False,
            default=100,
            description=f"runs to list, newest first (at most {KEPT_RUNS} are kept)",
        )
    ],
    returns={"type": "array", "items": RUN},
    access=Access.ADMIN,
)
async def runs(ctx: CallContext, limit: int) -> list[dict[str, Any]]:
    """The last hook runs, newest first: ``{script, event, args, exit_code, duration,
    started, timed_out, output_tail, output_bytes, error}``. ``exit_code`` is minus the
    signal that ended the script (a run past ``--trigger-timeout`` gets SIGTERM, then
    SIGKILL); ``output_tail`` is the last 4 KiB of its stdout and stderr; ``error`` says
    why a run never started. Empty without ``--trigger-dir``. Administrators only: the
    arguments show what callers did."""
    return app_of(ctx).hooks.runs(limit)


@registry.method(
    returns={
        "type": "object",
        "properties": {
            "directory": {"type": ["string", "null"]},
            "on_api": {"type": "boolean"},
            "running": {"type": "integer"},
            "waiting": {"type": "integer"},
            "finished": {"type": "integer"},
            "dropped": {"type": "integer"},
        },
    },
    access=Access.ADMIN,
)
async def status(ctx: CallContext) -> dict[str, Any]:
    """Hook scripts now: ``{directory, on_api, running, waiting, finished, dropped}``.
    ``dropped`` counts runs never made because their script's waiting runs were at their
    bound (10,000 each, 64 MiB of arguments and stdin over all); each drop is logged."""
    return app_of(ctx).hooks.status()
