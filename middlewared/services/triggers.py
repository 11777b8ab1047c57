"""trigger.*: create, query, change, pause, resume, launch and delete triggers, and list the
jobs each started (PROTOCOL.md section 9). Everything a trigger does is an ordinary job."""

from __future__ import annotations

import copy
import errno
from collections.abc import AsyncIterator
from typing import Any

from middlewared import jsonc
from middlewared.auth.credentials import Credentials
from middlewared.auth.ratelimit import LoginThrottler
from middlewared.config import LoginThrottle
from middlewared.context import CallContext
from middlewared.errors import CallError, MiddlewareError, NotFound, ValidationErrors
from middlewared.jobs.query import query_jobs
from middlewared.karajo.mapping import KARAJO_HOOKS, KARAJO_RUN
from middlewared.query import query
from middlewared.registry import Param, Registry
from middlewared.routes import HttpRequest, HttpResponse, Route
from middlewared.services.core import app_of
from middlewared.services.schemas import QUERY_PARAMS
from middlewared.triggers.engine import TriggerEngine
from middlewared.triggers.model import TYPES, Trigger
from middlewared.triggers.parse import collections_of, derive, normalise
from middlewared.triggers.webhooks import ReplayGuard, WebhookRefused, verify

registry = Registry("trigger", "Triggers: jobs that start by themselves")
registry.collection("trigger.query", "Triggers: added, changed, removed", open_to_all=True)

STRING = {"type": "string"}
NAMES = {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 32}
DATA_FIELDS: dict[str, Any] = {
    "type": {"enum": sorted(TYPES)},
    "arguments": {"type": "string", "maxLength": 4096},
    "method": {"type": "string", "minLength": 1},
    "params": {"type": "array"},
    "description": {"type": "string", "maxLength": 1024},
    "debounce": {"type": ["string", "null"]},
    "pass_event": {"type": "boolean"},
    "options": {
        "type": "object",
        "properties": {
            "missed": {"enum": ["skip", "once"]},
            "overlap": {"enum": ["queue", "skip", "allow"]},
            "timezone": {"type": ["string", "null"]},
        },
        "additionalProperties": False,
    },
    "auth": {
        "type": ["object", "null"],
        "properties": {
            "kind": {"enum": ["hmac-sha256", "github", "sourcehut", "none"]},
            "secret": {"type": ["string", "null"]},
            "header": {"type": ["string", "null"]},
            "timestamp_header": {"type": ["string", "null"]},
            "tolerance": {"type": "integer"},
            "path": {"type": ["string", "null"]},
            "public_key": {"type": ["string", "null"]},
        },
        "additionalProperties": False,
    },
    "notify_on_success": NAMES,
    "notify_on_failure": NAMES,
}
CREATE = {
    "type": "object",
    # Created paused: nothing fires until trigger.resume (no window between create and pause).
    "properties": {**DATA_FIELDS, "paused": {"type": "boolean"}},
    "required": ["type", "method"],
    "additionalProperties": False,
}
UPDATE = {"type": "object", "properties": DATA_FIELDS, "additionalProperties": False}
TID = {"type": "integer", "minimum": 1}


def _engine(ctx: CallContext) -> TriggerEngine:
    return app_of(ctx).triggers


def _mine(creds: Credentials, trigger: Trigger) -> bool:
    """Full administrators see every trigger; others their own (a restricted key: only those
    it made)."""
    if creds.full_admin:
        return True
    if not creds.owns(trigger.owner_id):
        return False
    return not creds.restricted_key or trigger.owner_key == creds.api_key_id


def _get(ctx: CallContext, trigger_id: int) -> Trigger:
    trigger = _engine(ctx).triggers.get(trigger_id)
    if trigger is None or not _mine(ctx.user, trigger):
        raise NotFound(f"Trigger {trigger_id} does not exist")
    return trigger


def _changeable(ctx: CallContext, trigger_id: int) -> Trigger:
    """A trigger the API may change or delete: not one the --config file declares (the
    file would put it back at the next reload)."""
    trigger = _get(ctx, trigger_id)
    if trigger.managed is not None:
        kind = trigger.managed["kind"]
        raise CallError(
            f"Trigger {trigger_id} belongs to {kind} {trigger_id}: change it with {kind}.update",
            errno.EPERM,
        )
    if trigger.declared is not None:
        raise CallError(
            f"Trigger {trigger_id} is declared in the configuration file as "
            f"{trigger.declared!r}: change it there, then reload (SIGHUP)",
            errno.EPERM,
        )
    return trigger


async def validated(ctx: CallContext, trigger: Trigger) -> Trigger:
    """Check everything at create time: its method (the owner may call it, the params bind),
    its arguments, the collections its rules name."""
    app = app_of(ctx)
    data = trigger.data
    try:
        mounted = app.calls.check(data["method"], ctx.user)
    except MiddlewareError as e:
        raise ValidationErrors([("method", e.reason, e.errno)]) from None
    if mounted.spec.job is None:
        raise ValidationErrors([("method", f"{data['method']} is not a job", errno.EINVAL)])
    if mounted.spec.job.pipes:
        raise ValidationErrors(
            [("method", f"{data['method']} needs a pipe: a trigger cannot start it", errno.EINVAL)]
        )
    params = list(data["params"])
    if data["pass_event"] and data["type"] in ("@event", "@webhook"):
        params.append({"trigger_id": trigger.id, "fired_at": None, "events": []})
    try:
        mounted.binder.bind(params)
    except ValidationErrors as e:
        raise ValidationErrors([(f"params.{f}", m, n) for f, m, n in e.errors]) from None
    derive(trigger, app.config.triggers.allow_unsigned_webhooks)
    unknown = sorted(c for c in collections_of(trigger) if not app.collections.exists(c))
    if unknown:
        raise ValidationErrors([("arguments", f"unknown collection {unknown[0]!r}", errno.ENOENT)])
    path = trigger.hook_path
    other = _engine(ctx).find_hook(path) if path else None
    if other is not None and other.id != trigger.id:
        raise ValidationErrors([("auth.path", f"/hooks/{path} is taken", errno.EEXIST)])
    return trigger


@registry.method(params=[Param("data", CREATE, secret=True)], returns={"type": "object"})
async def create(ctx: CallContext, data: dict[str, Any]) -> dict[str, Any]:
    """Create a trigger that starts ``method(*params)`` as the caller, on a schedule, on
    events, on a signed webhook or on demand (PROTOCOL.md section 9). Everything is checked
    now: a bad trigger is refused with -32602 naming the field."""
    engine = _engine(ctx)
    trigger = Trigger(
        id=engine.allocate_id(),
        data=normalise(data),
        owner_id=ctx.user.user_id,
        owner_key=ctx.user.api_key_id,
        created=int(engine.clock.now() * 1000),
        paused=bool(data.get("paused", False)),
    )
    await engine.add(await validated(ctx, trigger))
    return engine.record(trigger)


@registry.method(params=QUERY_PARAMS, name="query")
async def query_triggers(ctx: CallContext, filters: list[Any], options: dict[str, Any]) -> Any:
    """Query the triggers the caller may see (TrueNAS's filter grammar)."""
    engine = _engine(ctx)
    records = [engine.record(t) for t in engine.triggers.values() if _mine(ctx.user, t)]
    return query(records, filters, options)


@registry.method(params=[Param("id", TID)], returns={"type": "object"})
async def get_instance(ctx: CallContext, trigger_id: int) -> dict[str, Any]:
    """One trigger."""
    record: dict[str, Any] = _engine(ctx).record(_get(ctx, trigger_id))
    return record


@registry.method(
    params=[Param("id", TID), Param("data", UPDATE, secret=True)], returns={"type": "object"}
)
async def update(ctx: CallContext, trigger_id: int, data: dict[str, Any]) -> dict[str, Any]:
    """Change a trigger; its state and history stay. A secret given as ``"********"`` (what
    queries show) keeps the one it had."""
    engine = _engine(ctx)
    trigger = _changeable(ctx, trigger_id)
    merged = {**copy.deepcopy(trigger.data), **data}
    auth = data.get("auth")
    if isinstance(auth, dict) and auth.get("secret") == "********":
        merged["auth"] = {**auth, "secret": (trigger.data.get("auth") or {}).get("secret")}
    new = Trigger(
        id=trigger.id,
        data=normalise(merged),
        owner_id=trigger.owner_id,
        owner_key=trigger.owner_key,
        created=trigger.created,
    )
    await engine.replace(trigger, await validated(ctx, new))
    return engine.record(new)


@registry.method(params=[Param("id", TID)], returns={"type": "boolean"})
async def delete(ctx: CallContext, trigger_id: int) -> bool:
    """Delete a trigger; the jobs it started stay."""
    await _engine(ctx).delete(_changeable(ctx, trigger_id))
    return True


REASON = {"type": ["string", "null"], "minLength": 1, "maxLength": 1024}


@registry.method(
    params=[Param("id", TID), Param("reason", REASON, required=False)], returns={"type": "object"}
)
async def pause(ctx: CallContext, trigger_id: int, reason: str | None) -> dict[str, Any]:
    """Stop firing until resumed (``trigger.launch`` still runs it); ``reason``, when given,
    is kept in ``current_state.last_error`` until then."""
    engine = _engine(ctx)
    trigger = _get(ctx, trigger_id)
    await engine.pause(trigger, reason)
    return engine.record(trigger)


@registry.method(params=[Param("id", TID)], returns={"type": "object"})
async def resume(ctx: CallContext, trigger_id: int) -> dict[str, Any]:
    """Fire again (a schedule from now on: runs missed while paused are not made up)."""
    engine = _engine(ctx)
    trigger = _get(ctx, trigger_id)
    trigger.state["last_error"] = None
    await engine.resume(trigger)
    return engine.record(trigger)


@registry.method(params=[Param("id", TID)], returns={"type": "integer"})
async def launch(ctx: CallContext, trigger_id: int) -> int:
    """Run the trigger once now, whatever its schedule, paused or not; returns the job id."""
    job = await _engine(ctx).launch(_get(ctx, trigger_id))
    return int(job.id)


@registry.method(params=[Param("id", TID), *QUERY_PARAMS[1:]])
async def jobs(ctx: CallContext, trigger_id: int, options: dict[str, Any]) -> Any:
    """The jobs a trigger started, newest first (the caller sees those it may see)."""
    _get(ctx, trigger_id)
    options = {"order_by": ["-id"], **options}
    return await query_jobs(
        app_of(ctx), ctx.user, [["origin", "=", f"trigger:{trigger_id}"]], options
    )


# -- webhooks: POST /hooks/{id} and /hooks/{path} -------------------------------------------

# Request headers never passed to a job (credentials a proxy may add).
PRIVATE_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


@registry.lifespan
async def webhooks(app: Any) -> AsyncIterator[None]:
    """Serve the webhook route, with the body limit the server was given."""
    limits = app.config.triggers
    throttle = LoginThrottler(
        LoginThrottle(limits.webhook_max_failures, app.config.login_throttle.window_seconds)
    )
    replays = ReplayGuard()

    async def hook(request: HttpRequest) -> HttpResponse:
        return await _hook(app, throttle, replays, request)

    async def karajo_hook(request: HttpRequest) -> HttpResponse:
        return await _hook(app, throttle, replays, request, karajo=True)

    app.add_route(Route("POST", "/hooks/{key:.+}", hook, max_body=limits.max_webhook_body))
    # karajo's own URL of a [job] with a path: the same webhook, for karajo's callers.
    app.add_route(
        Route("POST", f"{KARAJO_RUN}/{{key:.+}}", karajo_hook, max_body=limits.max_webhook_body)
    )
    yield


def _refuse(status: int, reason: str) -> HttpResponse:
    return HttpResponse(status, json={"error": reason, "status": status})


async def _hook(
    app: Any,
    throttle: LoginThrottler,
    replays: ReplayGuard,
    request: HttpRequest,
    karajo: bool = False,
) -> HttpResponse:
    """What section 9 answers: 202, or 403/404/409/413/429 with a JSON reason."""
    if throttle.blocked(request.remote):
        return _refuse(429, "Too many failed webhook signatures from this address")
    engine = app.triggers
    key = request.match["key"]
    trigger = engine.find_hook(key)
    if karajo and (key.isdigit() or not _from_karajo(trigger)):
        trigger = None
    if trigger is None:
        return _refuse(404, "No such webhook")
    assert trigger.auth is not None
    try:
        verify(trigger.auth, trigger.id, request.headers, request.body, engine.clock.now(), replays)
    except WebhookRefused as e:
        throttle.failed(request.remote)
        return _refuse(e.status, e.reason)
    if trigger.paused:
        return _refuse(409, "The trigger is paused")
    payload = {
        "headers": {k: v for k, v in request.headers.items() if k.lower() not in PRIVATE_HEADERS},
        "body": _body(request.body),
    }
    try:
        answer = await engine.webhook(trigger, payload)
    except MiddlewareError as e:
        status = 429 if e.errno == errno.EBUSY else 409
        return _refuse(status, e.reason)
    return HttpResponse(202, json=answer)


def _from_karajo(trigger: Trigger | None) -> bool:
    return trigger is not None and (trigger.declared or "").startswith(KARAJO_HOOKS)


def _body(raw: bytes) -> Any:
    """The body as the job gets it: parsed when it is JSON, else text."""
    try:
        return jsonc.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
