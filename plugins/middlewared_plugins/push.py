"""push.*: Web Push (cozy's push worker): subscriptions of browsers and devices, and
``push.send`` to one of them, encrypted (RFC 8291) and signed with the server's VAPID key
(RFC 8292), posted to its push service (RFC 8030)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from middlewared.context import CallContext, ServerApi
from middlewared.errors import CallError, NotFound, ValidationErrors
from middlewared.jobs.job import Job
from middlewared.query import query
from middlewared.registry import JobOptions, Param, Registry

from . import webpush
from .pushsubs import PublicResolver, Subscription, SubscriptionFile, endpoint_refusal

log = logging.getLogger(__name__)

registry = Registry("push", "Web Push notifications (RFC 8030, 8291, 8292)")

SETTINGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        # VAPID's sub: how a push service reaches whoever runs this server.
        "contact": {"type": "string", "maxLength": 254, "pattern": r"^(mailto:|https://)\S+$"},
        # Lets http:// and loopback endpoints through (a local push service, for tests).
        "allow_insecure_endpoints": {"type": "boolean"},
        # How long a push service keeps a message for a device that is offline (TTL).
        "ttl": {"type": "integer", "minimum": 0, "maximum": 2419200},
    },
    "additionalProperties": False,
}
SETTINGS_DEFAULTS: dict[str, Any] = {
    "contact": "mailto:root@localhost",
    "allow_insecure_endpoints": False,
    "ttl": 86400,
}
registry.declare_settings(SETTINGS_SCHEMA, SETTINGS_DEFAULTS)

# cozy's push worker: one attempt of at most 10 s (the post itself gets a little less).
TIMEOUT = 10.0
POST_TIMEOUT = 8.0
B64URL = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[A-Za-z0-9_=-]+$"}
SUBSCRIPTION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "endpoint": {"type": "string", "minLength": 1, "maxLength": 2048},
        "keys": {
            "type": "object",
            "properties": {"p256dh": B64URL, "auth": B64URL},
            "required": ["p256dh", "auth"],
        },
        "expirationTime": {"type": ["number", "null"]},
    },
    "required": ["endpoint", "keys"],
}
CLIENT_ID = {"type": "string", "minLength": 1, "maxLength": 64}
MESSAGE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "client_id": CLIENT_ID,
        "title": {"type": "string", "maxLength": 1000},
        "message": {"type": "string", "maxLength": 3000},
        "data": {"type": "object", "additionalProperties": {"type": "string"}},
        "priority": {"enum": ["high", "normal"]},
        # RFC 8030 section 5.4: at most 32 characters of the base64url alphabet.
        "topic": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,32}$"},
        "sound": {"type": "string", "maxLength": 200},
    },
    "required": ["client_id", "title", "message"],
    "additionalProperties": False,
}
RECORD: dict[str, Any] = {
    "type": "object",
    "properties": {
        "client_id": {"type": "string"},
        "username": {"type": "string"},
        "endpoint": {"type": "string"},
        "created": {"type": "object"},
    },
}
QUERY_PARAMS = [
    Param("filters", {"type": "array"}, required=False, default=[]),
    Param("options", {"type": "object"}, required=False, default={}),
]


@dataclass
class _State:
    vapid: webpush.Vapid
    subs: SubscriptionFile


_states: weakref.WeakKeyDictionary[Any, _State] = weakref.WeakKeyDictionary()


def _load(app: ServerApi) -> _State:
    folder = app.config.data_dir / "push"
    subs = SubscriptionFile(folder / "subscriptions.json")
    subs.load()
    return _State(webpush.Vapid(webpush.load_or_create_key(folder / "vapid_private.pem")), subs)


@registry.lifespan
async def _keys(app: ServerApi) -> AsyncIterator[None]:
    # Made on first start and kept; never logged, never in a record.
    _states[app] = await asyncio.to_thread(_load, app)
    try:
        yield
    finally:
        _states.pop(app, None)


def _state(ctx: CallContext) -> _State:
    return _states[ctx.app]


def _visible(ctx: CallContext, sub: Subscription | None) -> bool:
    """A user reaches their own subscriptions; full administrators reach every one."""
    return sub is not None and (ctx.user.full_admin or sub.owner_id == ctx.user.user_id)


@registry.method(returns={"type": "string"})
async def vapid_public_key(ctx: CallContext) -> str:
    """The server's VAPID public key (base64url, uncompressed P-256 point): the
    ``applicationServerKey`` a browser's ``pushManager.subscribe`` takes."""
    return _state(ctx).vapid.public_key


@registry.method(params=[Param("subscription", SUBSCRIPTION, secret=True)], returns=CLIENT_ID)
async def subscribe(ctx: CallContext, subscription: dict[str, Any]) -> str:
    """Keep a browser's ``PushSubscription`` (its JSON: ``endpoint``, ``keys.p256dh``,
    ``keys.auth``) for the caller; returns its ``client_id`` for push.send. The same endpoint
    subscribed again by the same user keeps its id and takes the new keys. The endpoint must
    be ``https://`` on a public address (``http://`` and loopback only when the setting
    ``push.allow_insecure_endpoints`` is on); 100 subscriptions per user."""
    settings = ctx.settings()
    endpoint, keys = subscription["endpoint"], subscription["keys"]
    why = endpoint_refusal(endpoint, settings["allow_insecure_endpoints"])
    if why:
        raise ValidationErrors([("subscription.endpoint", why, errno.EINVAL)])
    why = webpush.check_subscription_keys(keys["p256dh"], keys["auth"])
    if why:
        raise ValidationErrors([("subscription.keys", why, errno.EINVAL)])
    creds = ctx.user
    sub = await _state(ctx).subs.add(
        creds.user_id, creds.username, endpoint, keys["p256dh"], keys["auth"]
    )
    if sub is None:
        raise CallError("Too many push subscriptions for this user", errno.EDQUOT)
    log.info("push subscription %s of %s kept", sub.client_id, creds.username)
    return sub.client_id


@registry.method(params=[Param("client_id", CLIENT_ID)], returns={"type": "boolean"})
async def unsubscribe(ctx: CallContext, client_id: str) -> bool:
    """Forget a subscription (the caller's own; administrators: any)."""
    state = _state(ctx)
    if not _visible(ctx, state.subs.subs.get(client_id)):
        raise NotFound(f"No push subscription {client_id!r}")
    await state.subs.remove(client_id)
    log.info("push subscription %s removed by %s", client_id, ctx.user.username)
    return True


@registry.method(
    params=QUERY_PARAMS, returns={"type": ["array", "object", "integer"]}, name="query"
)
async def query_subscriptions(ctx: CallContext, filters: list[Any], options: dict[str, Any]) -> Any:
    """The caller's subscriptions (administrators: everyone's): ``client_id``, ``username``,
    ``endpoint``, ``created``; never their keys."""
    subs = _state(ctx).subs.subs.values()
    return query([s.record() for s in subs if _visible(ctx, s)], filters, options)


def _payload(options: dict[str, Any]) -> bytes:
    fields = ("title", "message", "data", "priority", "topic", "sound")
    return json.dumps({k: options[k] for k in fields if k in options}).encode()


def _headers(options: dict[str, Any], authorization: str, ttl: int) -> dict[str, str]:
    headers = {
        "TTL": str(ttl),
        "Content-Encoding": "aes128gcm",
        "Content-Type": "application/octet-stream",
        "Urgency": options.get("priority", "normal"),
        "Authorization": authorization,
    }
    if "topic" in options:
        headers["Topic"] = options["topic"]
    return headers


async def _post(url: str, body: bytes, headers: dict[str, str], insecure: bool) -> tuple[int, str]:
    connector = aiohttp.TCPConnector(resolver=PublicResolver(insecure))
    timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        # No redirect is followed: it could lead anywhere, inside the network too.
        async with session.post(url, data=body, headers=headers, allow_redirects=False) as r:
            return r.status, (await r.text(errors="replace"))[:200]


@registry.method(
    params=[Param("options", MESSAGE)],
    returns={"type": "object", "properties": {"status": {"type": "integer"}}},
    job=JobOptions(
        logs=True, timeout=TIMEOUT, description=lambda args: f"Push to {args[0]['client_id']}"
    ),
)
async def send(ctx: CallContext, job: Job, options: dict[str, Any]) -> dict[str, Any]:
    """Send a notification to subscription ``client_id`` (the caller's own; administrators:
    any), as cozy's push worker: ``title``, ``message``, ``data`` (strings), ``priority``
    (``high`` or ``normal``: the ``Urgency`` header), ``topic`` (the ``Topic`` header: a
    newer message with it replaces an undelivered one), ``sound``. The payload is their
    JSON, encrypted for the subscription. A 404 or 410 from the push service removes the
    subscription; the job then fails with ENOENT. Returns the push service's status."""
    state, settings = _state(ctx), ctx.settings()
    client_id = options["client_id"]
    sub = state.subs.subs.get(client_id)
    if sub is None or not _visible(ctx, sub):
        raise NotFound(f"No push subscription {client_id!r}")
    insecure = settings["allow_insecure_endpoints"]
    why = endpoint_refusal(sub.endpoint, insecure)
    if why:
        raise CallError(f"Push subscription {client_id}: {why}", errno.EACCES)
    payload = _payload(options)
    if len(payload) > webpush.MAX_PAYLOAD:
        raise ValidationErrors(
            [
                (
                    "options",
                    f"The notification takes more than {webpush.MAX_PAYLOAD} bytes",
                    errno.EFBIG,
                )
            ]
        )
    body = webpush.encrypt(
        payload, webpush.b64url_decode(sub.p256dh), webpush.b64url_decode(sub.auth)
    )
    authorization = state.vapid.authorization(sub.endpoint, settings["contact"])
    job.set_progress(50, f"Posting to {webpush.origin(sub.endpoint)}")
    try:
        status, text = await _post(
            sub.endpoint, body, _headers(options, authorization, settings["ttl"]), insecure
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise CallError(
            f"Push service {webpush.origin(sub.endpoint)} unreachable: {e}", errno.EAGAIN
        ) from None
    job.log(f"push service answered {status}")
    if status in (404, 410):
        await state.subs.remove(client_id)
        log.info("push subscription %s removed: its push service answered %d", client_id, status)
        raise CallError(
            f"Push subscription {client_id} is gone ({status}); it was removed", errno.ENOENT
        )
    if not 200 <= status < 300:
        code = errno.EAGAIN if status == 429 or status >= 500 else errno.EREMOTEIO
        raise CallError(f"Push service answered {status}: {text}", code)
    job.set_progress(100, "Sent")
    return {"status": status}
