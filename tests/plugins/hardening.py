"""A plugin for the foundation and hardening tests: large results, a first-class listener,
a lifespan, retries, settings, a route and a collection of its own."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from typing import Any

from middlewared.context import CallContext
from middlewared.errors import CallError
from middlewared.events.bus import ADDED, Event
from middlewared.events.listeners import Listener
from middlewared.jobs.job import Job
from middlewared.registry import Access, JobOptions, Param, Registry, RetryPolicy
from middlewared.routes import HttpRequest, HttpResponse, Route

registry = Registry("hard", "Foundation and hardening test helpers")

INT = {"type": "integer", "minimum": 0}
NAME = {"type": "string"}

# What the listener saw: (collection, msg, id, state) in order.
_seen: list[tuple[str, str, Any, Any]] = []
# Set by the lifespan once its start-up is over.
_ready = {"lifespan": False}
_attempts: dict[str, int] = {}


async def _record(event: Event) -> None:
    state = (event.fields or {}).get("state")
    _seen.append((event.collection, event.msg, event.id, state))


@registry.lifespan
async def lifespan(app: Any) -> AsyncIterator[None]:
    app.listen(Listener("hard-recorder", ["core.get_jobs", "hard.things"], _record))
    # Start-up that takes a few loop turns: recovered jobs must not start before it ends.
    for _ in range(20):
        await asyncio.sleep(0)
    _ready["lifespan"] = True
    yield
    _ready["lifespan"] = False


registry.declare_settings(
    {
        "properties": {
            "colour": {"enum": ["red", "green", "blue"]},
            "level": {"type": "integer", "minimum": 0, "maximum": 10},
        },
        "additionalProperties": False,
    },
    {"colour": "red", "level": 1},
)

registry.collection("hard.things", "Things the test publishes", open_to_all=True)


async def _echo(request: HttpRequest) -> HttpResponse:
    who = request.credentials.username if request.credentials else None
    return HttpResponse(
        202, json={"id": request.match["id"], "body": request.body.decode(), "who": who}
    )


registry.route(Route("POST", "/hard/echo/{id}", _echo, authenticated=True, max_body=1024))


@registry.method(params=[Param("size", INT)], job=JobOptions())
async def big(ctx: CallContext, job: Job, size: int) -> str:
    """A result of ``size`` characters."""
    return "x" * size


@registry.method(returns={"type": "array"})
async def seen(ctx: CallContext) -> list[Any]:
    """What the in-process listener received, in order."""
    return [list(item) for item in _seen]


@registry.method(params=[Param("id", INT), Param("name", NAME)])
async def publish(ctx: CallContext, thing_id: int, name: str) -> None:
    """Publish an ADDED on the plugin's collection."""
    ctx.app.publish(Event("hard.things", ADDED, thing_id, {"name": name}, everyone=True))


@registry.method(returns={"type": "object"})
async def settings(ctx: CallContext) -> dict[str, Any]:
    """This plugin's settings, read as a plugin reads them."""
    return ctx.settings()


@registry.method(
    params=[Param("gate", NAME)], job=JobOptions(retry_on_restart=True, abortable=True)
)
async def after_lifespan(ctx: CallContext, job: Job, gate: str) -> bool:
    """Whether the plugin's lifespan had finished starting when this job started; then
    wait on ``gate`` (set again by each server run through hard.open)."""
    ready = _ready["lifespan"]
    job.set_progress(50, f"lifespan ready: {ready}")
    await _gates.setdefault(gate, asyncio.Event()).wait()
    return ready


_gates: dict[str, asyncio.Event] = {}


@registry.method(params=[Param("gate", NAME)])
async def open(ctx: CallContext, gate: str) -> None:
    """Open a gate of hard.after_lifespan."""
    _gates.setdefault(gate, asyncio.Event()).set()


@registry.method(
    params=[Param("name", NAME), Param("failures", INT)],
    job=JobOptions(retry=RetryPolicy(max_attempts=3, base_delay=0.05, max_delay=0.2)),
)
async def flaky(ctx: CallContext, job: Job, name: str, failures: int) -> int:
    """Fail ``failures`` times (EAGAIN), then return the attempt that succeeded."""
    _attempts[name] = _attempts.get(name, 0) + 1
    if _attempts[name] <= failures:
        raise CallError(f"attempt {job.attempt} failed", errno.EAGAIN)
    return job.attempt


@registry.method(params=[Param("method", NAME)])
async def call_as_caller(ctx: CallContext, method: str) -> Any:
    """Call ``method`` with the caller's own credentials."""
    return await ctx.call(method)


@registry.method(params=[Param("method", NAME)], access=Access.SELF)
async def call_as_server(ctx: CallContext, method: str) -> Any:
    """Try to call ``method`` as the server: refused, this plugin is not built in."""
    return await ctx.call_as_server(method)
