"""``auth.login_ex`` with ``"mechanism": "SCRAM"``: TrueNAS 26's API key exchange, two
calls on one connection. The first counts against the login throttle; an unknown user or
key gets a decoy exchange (a salt that stays the same for that name while the server runs),
so a refusal looks the same whether the key exists or not: AUTH_ERR at the final message.
An exchange lives 60 seconds and a connection holds one."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from middlewared.auth import scram
from middlewared.auth.credentials import Identity
from middlewared.auth.scram import ScramFailed, ScramSecrets, ServerExchange
from middlewared.context import CallContext
from middlewared.services.core import app_of, session

log = logging.getLogger(__name__)

EXCHANGE_SECONDS = 60.0
AUTH_ERR = {"response_type": "AUTH_ERR"}
# Decoy salts: stable per name within this process, unrelated to any real key.
_DECOY = secrets.token_bytes(32)


@dataclass
class Pending:
    exchange: ServerExchange
    identity: Identity | None
    ticket: Any
    remote: str
    deadline: float


def first(ctx: CallContext, rfc_str: str) -> dict[str, Any]:
    app = app_of(ctx)
    conn = session(ctx)
    conn.scram = None
    remote = conn.remote
    ticket = app.throttle.begin(remote)
    try:
        message = scram.parse_client_first(rfc_str)
    except ScramFailed as e:
        log.warning("login failed from %s (scram: %s)", remote, e)
        return AUTH_ERR
    binding: bytes | None = None
    if message.binding is not None:
        if not conn.tls or app.tls_end_point is None:
            log.warning("login failed from %s (scram: channel binding asked without TLS)", remote)
            return AUTH_ERR
        binding = app.tls_end_point
    found = app.directory.scram_key(message.username, message.api_key_id)
    keys, identity = found if found is not None else (_decoy(message.username, message), None)
    exchange = ServerExchange(message, keys, binding)
    conn.scram = Pending(exchange, identity, ticket, remote, time.monotonic() + EXCHANGE_SECONDS)
    return {
        "response_type": "SCRAM_RESPONSE",
        "scram_type": "SERVER_FIRST_RESPONSE",
        "rfc_str": exchange.server_first,
        "user_info": None,
    }


def final(ctx: CallContext, rfc_str: str, me: Callable[[CallContext], Any]) -> dict[str, Any]:
    app = app_of(ctx)
    conn = session(ctx)
    pending: Pending | None = conn.scram
    conn.scram = None
    if pending is None or time.monotonic() > pending.deadline:
        log.warning("login failed from %s (scram: no exchange under way)", conn.remote)
        app.throttle.begin(conn.remote)  # counted as an attempt of its own
        return AUTH_ERR
    try:
        answer = pending.exchange.final(rfc_str)
    except ScramFailed as e:
        log.warning("login failed from %s (scram: %s)", pending.remote, e)
        return AUTH_ERR
    creds = conn.login(pending.identity) if pending.identity is not None else None
    if creds is None:
        log.warning("login failed from %s (scram: unknown key)", pending.remote)
        return AUTH_ERR
    app.throttle.succeeded(pending.remote, pending.ticket)
    log.info("login of %s from %s (scram)", creds.username, pending.remote)
    return {
        "response_type": "SCRAM_RESPONSE",
        "scram_type": "SERVER_FINAL_RESPONSE",
        "rfc_str": answer,
        "user_info": me(ctx),
    }


def _decoy(username: str, message: scram.ClientFirst) -> ScramSecrets:
    name = f"{username}:{message.api_key_id}".encode()
    salt = hmac.digest(_DECOY, name, hashlib.sha256)
    junk = secrets.token_bytes(scram.KEY_BYTES)
    return ScramSecrets(salt, scram.DEFAULT_ITERATIONS, junk, junk)
