"""auth.*: password, API key and token logins (TrueNAS's and its newer login_ex), tokens."""

from __future__ import annotations

import logging
from typing import Any

from middlewared.auth.credentials import Credentials
from middlewared.context import CallContext
from middlewared.errors import Busy
from middlewared.registry import Param, Registry
from middlewared.services.core import server, session

log = logging.getLogger(__name__)

registry = Registry("auth", "Authentication")

MECHANISMS = ["PASSWORD_PLAIN", "API_KEY_PLAIN", "TOKEN_PLAIN"]
STRING = {"type": "string"}


def _remote(ctx: CallContext) -> str:
    return ctx.session.remote if ctx.session is not None else "internal"


def _throttle_check(ctx: CallContext) -> None:
    app = server(ctx)
    remote = _remote(ctx)
    if app.throttle.blocked(remote):
        wait = app.throttle.retry_after(remote)
        raise Busy(f"Too many failed logins from this address; retry in {wait:.0f} seconds")


def _finish(ctx: CallContext, credentials: Credentials | None, what: str) -> bool:
    app = server(ctx)
    remote = _remote(ctx)
    if credentials is None:
        app.throttle.failed(remote)
        log.warning("login failed from %s (%s)", remote, what)
        return False
    session(ctx).login(credentials)
    log.info("login of %s from %s (%s)", credentials.username, remote, what)
    return True


async def _password(ctx: CallContext, username: str, password: str) -> bool:
    _throttle_check(ctx)
    creds = await server(ctx).directory.check_password(username, password)
    return _finish(ctx, creds, f"password, user {username}")


def _api_key(ctx: CallContext, key: str, username: str | None = None) -> bool:
    _throttle_check(ctx)
    creds = server(ctx).directory.check_api_key(key, username)
    return _finish(ctx, creds, "api key")


def _token(ctx: CallContext, token: str) -> bool:
    _throttle_check(ctx)
    return _finish(ctx, server(ctx).tokens.login(token), "token")


@registry.method(
    params=[
        Param("username", STRING),
        Param("password", STRING, secret=True),
        Param("otp_token", {"type": ["string", "null"]}, required=False, secret=True),
    ],
    returns={"type": "boolean"},
    public=True,
)
async def login(ctx: CallContext, username: str, password: str, otp_token: str | None) -> bool:
    """Log this connection in with a user name and password. False when they are wrong."""
    return await _password(ctx, username, password)


@registry.method(
    params=[Param("api_key", STRING, secret=True)], returns={"type": "boolean"}, public=True
)
async def login_with_api_key(ctx: CallContext, api_key: str) -> bool:
    """Log in with an API key (``<id>-<secret>``)."""
    return _api_key(ctx, api_key)


@registry.method(
    params=[Param("token", STRING, secret=True)], returns={"type": "boolean"}, public=True
)
async def login_with_token(ctx: CallContext, token: str) -> bool:
    """Log in with a token from ``auth.generate_token``."""
    return _token(ctx, token)


@registry.method(returns={"type": "array", "items": STRING}, public=True)
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
        "login_options": {"type": "object"},
    },
    "required": ["mechanism"],
}


@registry.method(
    params=[Param("data", LOGIN_EX, secret=True)], returns={"type": "object"}, public=True
)
async def login_ex(ctx: CallContext, data: dict[str, Any]) -> dict[str, Any]:
    """TrueNAS's newer login: ``{"mechanism": "PASSWORD_PLAIN", "username", "password"}``,
    ``{"mechanism": "API_KEY_PLAIN", "username", "api_key"}`` or
    ``{"mechanism": "TOKEN_PLAIN", "token"}``. Answers ``response_type`` SUCCESS or AUTH_ERR."""
    mechanism = data["mechanism"]
    if mechanism == "PASSWORD_PLAIN":
        ok = await _password(ctx, data.get("username", ""), data.get("password", ""))
    elif mechanism == "API_KEY_PLAIN":
        ok = _api_key(ctx, data.get("api_key", ""), data.get("username"))
    else:
        ok = _token(ctx, data.get("token", ""))
    if not ok:
        return {"response_type": "AUTH_ERR"}
    return {"response_type": "SUCCESS", "user_info": _me(ctx)}


def _me(ctx: CallContext) -> dict[str, Any]:
    creds = session(ctx).credentials or ctx.user
    user = server(ctx).directory.by_name(creds.username)
    return {
        "pw_name": creds.username,
        "username": creds.username,
        "full_name": user.full_name if user else "",
        "admin": creds.admin,
        "allowlist": ["*"] if creds.admin else list(creds.allowlist),
        "credentials": creds.record(),
    }


@registry.method(returns={"type": "object"}, authenticated=True)
async def me(ctx: CallContext) -> dict[str, Any]:
    """Who this connection is logged in as."""
    return _me(ctx)


@registry.method(returns={"type": "boolean"}, authenticated=True)
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
    returns=STRING,
    authenticated=True,
)
async def generate_token(ctx: CallContext, ttl: int, single_use: bool) -> str:
    """A token that logs in as the caller (``auth.login_with_token``, ``?auth_token=``)."""
    return server(ctx).tokens.issue(ctx.user, ttl, single_use)
