"""auth.*: password, API key and token logins (TrueNAS's and its newer login_ex), tokens."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from middlewared.auth.credentials import Identity
from middlewared.context import CallContext
from middlewared.registry import Access, Param, Registry
from middlewared.services import otp_login, scram_login
from middlewared.services.core import app_of, session

log = logging.getLogger(__name__)

registry = Registry("auth", "Authentication")

MECHANISMS = ["PASSWORD_PLAIN", "API_KEY_PLAIN", "TOKEN_PLAIN", "SCRAM"]
STRING = {"type": "string"}


def _remote(ctx: CallContext) -> str:
    return ctx.session.remote if ctx.session is not None else "internal"


async def _login(
    ctx: CallContext, what: str, check: Callable[[], Awaitable[Identity | None]]
) -> bool:
    """One login attempt: counted against the throttle before anything is checked (so
    attempts made at once cannot all be checked), taken back when it succeeds."""
    app = app_of(ctx)
    # A login needs a connection to log in: refused before anything is counted or checked
    # (through core.bulk it would be a password oracle outside the per-address throttle).
    session(ctx)
    remote = _remote(ctx)
    ticket = app.throttle.begin(remote)
    identity = await check()
    creds = session(ctx).login(identity) if identity is not None else None
    if creds is None:
        log.warning("login failed from %s (%s)", remote, what)
        return False
    app.throttle.succeeded(remote, ticket)
    log.info("login of %s from %s (%s)", creds.username, remote, what)
    return True


async def _password(
    ctx: CallContext, username: str, password: str, otp_token: str | None = None
) -> bool:
    """A password login; with two-factor on for the user, ``otp_token`` must be its code."""
    app = app_of(ctx)

    async def check() -> Identity | None:
        identity = await app.directory.check_password(username, password)
        if identity is None or not otp_login.needs_code(app, identity):
            return identity
        return identity if await otp_login.code_ok(app, identity, otp_token) else None

    return await _login(ctx, f"password, user {username}", check)


async def _password_ex(ctx: CallContext, username: str, password: str) -> dict[str, Any]:
    """auth.login_ex's password login: OTP_REQUIRED when the user must give a code."""
    app = app_of(ctx)
    session(ctx)
    remote = _remote(ctx)
    ticket = app.throttle.begin(remote)
    identity = await app.directory.check_password(username, password)
    if identity is None:
        log.warning("login failed from %s (password, user %s)", remote, username)
        return {"response_type": "AUTH_ERR"}
    if otp_login.needs_code(app, identity):
        return otp_login.ask(ctx, identity, ticket, username)
    creds = session(ctx).login(identity)
    if creds is None:
        return {"response_type": "AUTH_ERR"}
    app.throttle.succeeded(remote, ticket)
    log.info("login of %s from %s (password)", creds.username, remote)
    return {"response_type": "SUCCESS", "user_info": _me(ctx)}


async def _api_key(ctx: CallContext, key: str, username: str | None = None) -> bool:
    async def check() -> Identity | None:
        return app_of(ctx).directory.check_api_key(key, username)

    ok = await _login(ctx, "api key", check)
    if ok:
        # A key made before SCRAM gets its secrets now (once).
        await app_of(ctx).directory.add_scram(key)
    return ok


async def _token(ctx: CallContext, token: str) -> bool:
    async def check() -> Identity | None:
        return app_of(ctx).tokens.login(token)

    return await _login(ctx, "token", check)


@registry.method(
    params=[
        Param("username", STRING),
        Param("password", STRING, secret=True),
        Param("otp_token", {"type": ["string", "null"]}, required=False, secret=True),
    ],
    returns={"type": "boolean"},
    access=Access.PUBLIC,
)
async def login(ctx: CallContext, username: str, password: str, otp_token: str | None) -> bool:
    """Log this connection in with a user name and password (and ``otp_token``, the user's
    two-factor code, when two-factor is on and the user has a secret). False when wrong."""
    return await _password(ctx, username, password, otp_token)


@registry.method(
    params=[Param("api_key", STRING, secret=True)],
    returns={"type": "boolean"},
    access=Access.PUBLIC,
)
async def login_with_api_key(ctx: CallContext, api_key: str) -> bool:
    """Log in with an API key (``<id>-<secret>``)."""
    return await _api_key(ctx, api_key)


@registry.method(
    params=[Param("token", STRING, secret=True)], returns={"type": "boolean"}, access=Access.PUBLIC
)
async def login_with_token(ctx: CallContext, token: str) -> bool:
    """Log in with a token from ``auth.generate_token``."""
    return await _token(ctx, token)


@registry.method(returns={"type": "array", "items": STRING}, access=Access.PUBLIC)
async def mechanism_choices(ctx: CallContext) -> list[str]:
    """The mechanisms ``auth.login_ex`` accepts."""
    return list(MECHANISMS)


LOGIN_EX = {
    "type": "object",
    "properties": {
        "mechanism": {"enum": MECHANISMS},
        "username": STRING,
        "password": STRING,
        "api_key": STRING,
        "token": STRING,
        "scram_type": {"enum": ["CLIENT_FIRST_MESSAGE", "CLIENT_FINAL_MESSAGE"]},
        "rfc_str": {"type": "string", "maxLength": 4096},
        "login_options": {"type": "object"},
    },
    "required": ["mechanism"],
}


@registry.method(
    params=[Param("data", LOGIN_EX, secret=True)], returns={"type": "object"}, access=Access.PUBLIC
)
async def login_ex(ctx: CallContext, data: dict[str, Any]) -> dict[str, Any]:
    """TrueNAS's newer login: ``{"mechanism": "PASSWORD_PLAIN", "username", "password"}``,
    ``{"mechanism": "API_KEY_PLAIN", "username", "api_key"}`` or
    ``{"mechanism": "TOKEN_PLAIN", "token"}``. Answers ``response_type`` SUCCESS or AUTH_ERR.

    ``{"mechanism": "SCRAM", "scram_type": "CLIENT_FIRST_MESSAGE" | "CLIENT_FINAL_MESSAGE",
    "rfc_str"}``: TrueNAS 26's SCRAM-SHA-512 exchange for API keys (the key never crosses
    the wire), answered with ``SCRAM_RESPONSE`` (``scram_type`` ``SERVER_FIRST_RESPONSE``
    then ``SERVER_FINAL_RESPONSE`` with ``user_info``) or ``AUTH_ERR``; bound to the TLS
    certificate (``p=tls-server-end-point``) when the client asks, over TLS only."""
    mechanism = data["mechanism"]
    if mechanism == "SCRAM":
        rfc_str = data.get("rfc_str", "")
        if data.get("scram_type") == "CLIENT_FIRST_MESSAGE":
            return scram_login.first(ctx, rfc_str)
        if data.get("scram_type") == "CLIENT_FINAL_MESSAGE":
            return scram_login.final(ctx, rfc_str, _me)
        return {"response_type": "AUTH_ERR"}
    if mechanism == "PASSWORD_PLAIN":
        return await _password_ex(ctx, data.get("username", ""), data.get("password", ""))
    if mechanism == "API_KEY_PLAIN":
        ok = await _api_key(ctx, data.get("api_key", ""), data.get("username"))
    else:
        ok = await _token(ctx, data.get("token", ""))
    if not ok:
        return {"response_type": "AUTH_ERR"}
    return {"response_type": "SUCCESS", "user_info": _me(ctx)}


LOGIN_EX_CONTINUE = {
    "type": "object",
    "properties": {
        "mechanism": {"enum": ["OTP_TOKEN"]},
        "otp_token": {"type": "string", "maxLength": 16},
    },
    "required": ["mechanism", "otp_token"],
    "additionalProperties": False,
}


@registry.method(
    params=[Param("data", LOGIN_EX_CONTINUE, secret=True)],
    returns={"type": "object"},
    access=Access.PUBLIC,
)
async def login_ex_continue(ctx: CallContext, data: dict[str, Any]) -> dict[str, Any]:
    """Finish a password login that answered OTP_REQUIRED: ``{"mechanism": "OTP_TOKEN",
    "otp_token"}`` (the user's current two-factor code; a code is good once). Answers
    SUCCESS with ``user_info``, or AUTH_ERR (the login must then start again)."""
    return await otp_login.finish(ctx, data["otp_token"], _me)


def _me(ctx: CallContext) -> dict[str, Any]:
    # Over the WebSocket the session's credentials (a login_ex just made them); over REST,
    # the request's.
    creds = (ctx.session.credentials if ctx.session is not None else None) or ctx.user
    app = app_of(ctx)
    user = app.directory.users.get(creds.user_id) if creds.user_id is not None else None
    return {
        "id": creds.user_id,
        "pw_name": creds.username,
        "username": creds.username,
        "full_name": user.full_name if user else "",
        "admin": creds.admin,
        "allowlist": ["*"] if creds.admin else list(creds.allowlist),
        "key_allowlist": None if creds.key_allowlist is None else list(creds.key_allowlist),
        # A command run's token: the command's allow list narrows the rest.
        "scope": None if creds.scope is None else list(creds.scope),
        "full_admin": creds.full_admin,
        "credentials": creds.record(),
    }


@registry.method(returns={"type": "object"}, access=Access.SELF)
async def me(ctx: CallContext) -> dict[str, Any]:
    """Who this connection is logged in as."""
    return _me(ctx)


@registry.method(returns={"type": "boolean"}, access=Access.SELF)
async def logout(ctx: CallContext) -> bool:
    """Log this connection out; it stays open."""
    session(ctx).logout()
    return True


@registry.method(
    params=[
        Param(
            "ttl", {"type": "integer", "minimum": 1, "maximum": 86400}, required=False, default=600
        ),
        Param("single_use", {"type": "boolean"}, required=False, default=False),
    ],
    # writeOnly: the caller's alone, never shown to logs nor hook scripts.
    returns={**STRING, "writeOnly": True},
    access=Access.SELF,
)
async def generate_token(ctx: CallContext, ttl: int, single_use: bool) -> str:
    """A token that logs in as the caller (``auth.login_with_token``, ``?auth_token=``), with
    the caller's rights as they stand when it is used (it dies with its user or key). It
    never outlives what the caller logged in with: a token minted from a token or from an
    expiring API key ends no later than that one."""
    return app_of(ctx).tokens.issue(ctx.user, ttl, single_use)
