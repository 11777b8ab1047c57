"""worker.*: the limits of each job method, as cozy-stack's ``jobs.workers`` config has
them (administrators): ``concurrency`` (0 disables the method), ``max_exec_count``
(attempts), ``timeout`` (seconds an attempt may run) and ``rate`` (calls per user per
hour)."""

from __future__ import annotations

import errno
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import ValidationErrors
from middlewared.jobs.limits import NAMESPACE
from middlewared.registry import Access, Param, Registry
from middlewared.services.core import app_of

registry = Registry("worker", "Limits of the job methods (cozy-stack's workers)")

LIMITS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "concurrency": {"type": ["integer", "null"], "minimum": 0, "maximum": 10_000},
        "max_exec_count": {"type": "integer", "minimum": 1, "maximum": 100},
        "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 7 * 86400},
        "rate": {"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000},
    },
    "additionalProperties": False,
}
registry.declare_settings({"type": "object", "additionalProperties": LIMITS}, {})


def _job_methods(ctx: CallContext) -> dict[str, Any]:
    app = app_of(ctx)
    found = {m.spec.name: m.spec for m in app.methods if m.spec.job is not None}
    return dict(sorted(found.items()))


@registry.method(returns={"type": "object"}, access=Access.ADMIN)
async def config(ctx: CallContext) -> dict[str, Any]:
    """Every job method's limits as they apply now: ``{method: {"concurrency",
    "max_exec_count", "timeout", "rate"}}`` (``null``: no bound)."""
    workers = app_of(ctx).workers
    return {name: workers.limits(spec).record() for name, spec in _job_methods(ctx).items()}


@registry.method(
    params=[Param("method", {"type": "string", "minLength": 1}), Param("data", LIMITS)],
    returns={"type": "object"},
    access=Access.ADMIN,
)
async def update(ctx: CallContext, method: str, data: dict[str, Any]) -> dict[str, Any]:
    """Change a job method's limits (the fields given; ``null`` lifts a bound;
    ``concurrency`` 0 disables the method). Jobs already queued keep the limits they were
    made with. Returns the method's limits as they now apply."""
    app = app_of(ctx)
    spec = _job_methods(ctx).get(method)
    if spec is None:
        raise ValidationErrors([("method", f"{method!r} is not a job method", errno.EINVAL)])
    current = app.get_settings(NAMESPACE).get(method, {})
    await app.set_settings(NAMESPACE, {method: {**current, **data}})
    limits: dict[str, Any] = app.workers.limits(spec).record()
    return limits
