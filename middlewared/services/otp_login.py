"""Passwords with a second factor, TrueNAS's way. ``auth.login_ex`` with the right password
of a user who must give a code answers ``OTP_REQUIRED`` and keeps that half-login on the
connection for 60 seconds; ``auth.login_ex_continue`` with the code finishes it. The
attempt counts against the login throttle until the code is right; a wrong code ends it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from middlewared.auth.credentials import Identity
from middlewared.context import CallContext
from middlewared.services.core import app_of, session
from middlewared.services.twofactor import settings_of

log = logging.getLogger(__name__)

PENDING_SECONDS = 60.0
AUTH_ERR = {"response_type": "AUTH_ERR"}


@dataclass
class Pending:
    identity: Identity
    ticket: Any
    remote: str
    deadline: float


def needs_code(app: Any, identity: Identity) -> bool:
    """Two-factor is on and this user has a secret (API keys and tokens never need one)."""
    if not settings_of(app)["enabled"] or identity.user_id is None:
        return False
    user = app.directory.users.get(identity.user_id)
    return user is not None and user.twofactor is not None


async def code_ok(app: Any, identity: Identity, code: str | None) -> bool:
    if not code or identity.user_id is None:
        return False
    window = int(settings_of(app)["window"])
    ok: bool = await app.directory.use_code(identity.user_id, code, window)
    return ok


def ask(ctx: CallContext, identity: Identity, ticket: Any, username: str) -> dict[str, Any]:
    conn = session(ctx)
    deadline = time.monotonic() + PENDING_SECONDS
    conn.otp = Pending(identity, ticket, conn.remote, deadline)
    log.info("login of %s from %s: password right, two-factor code asked", username, conn.remote)
    return {"response_type": "OTP_REQUIRED", "username": username}


async def finish(ctx: CallContext, code: str, me: Callable[[CallContext], Any]) -> dict[str, Any]:
    app = app_of(ctx)
    conn = session(ctx)
    pending: Pending | None = conn.otp
    conn.otp = None
    if pending is None or time.monotonic() > pending.deadline:
        app.throttle.begin(conn.remote)  # an attempt of its own
        log.warning("login failed from %s (two-factor code with no login under way)", conn.remote)
        return AUTH_ERR
    if not await code_ok(app, pending.identity, code):
        log.warning("login failed from %s (wrong or used two-factor code)", pending.remote)
        return AUTH_ERR
    creds = conn.login(pending.identity)
    if creds is None:
        return AUTH_ERR
    app.throttle.succeeded(pending.remote, pending.ticket)
    log.info("login of %s from %s (password and two-factor code)", creds.username, pending.remote)
    return {"response_type": "SUCCESS", "user_info": me(ctx)}
