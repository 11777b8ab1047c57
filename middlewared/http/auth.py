"""Credentials of an HTTP request: Basic, Bearer API key, Token, or ?auth_token=."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

from aiohttp import web

from middlewared.app import Middleware
from middlewared.auth.credentials import Credentials, Identity
from middlewared.errors import Busy
from middlewared.http import unixsock
from middlewared.http.errors import http_error
from middlewared.http.websocket import client_address


def _refuse(reason: str) -> web.HTTPException:
    return http_error(
        web.HTTPUnauthorized, reason, headers={"WWW-Authenticate": 'Basic realm="middlewared"'}
    )


async def _check(app: Middleware, scheme: str, value: str) -> Identity | None:
    if scheme == "basic":
        try:
            username, _, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return await app.directory.check_password(username, password)
    if scheme == "bearer":
        return app.directory.check_api_key(value)
    if scheme == "token":
        return app.tokens.login(value)
    return None


def cross_site(request: web.Request) -> bool:
    """A browser's request from another site's page. A form there can POST here without a
    preflight, and the browser adds the Basic credentials it cached for this origin."""
    origin = request.headers.get("Origin")
    if origin is None or request.method in ("GET", "HEAD"):
        return False
    return urlsplit(origin).netloc != request.host


async def authenticate(request: web.Request, app: Middleware) -> Credentials:
    """The caller's credentials, or a 401 (429 when this address failed too often). A peer
    of the local socket that is root there needs none. A browser's request sent from
    another site's page (not a GET) is refused (403) whatever it carries: the browser would
    add credentials it cached for this server (``/_upload``, the REST facade)."""
    if cross_site(request):
        raise http_error(web.HTTPForbidden, "Cross-origin request refused")
    peer = unixsock.peer_identity(app.directory, app.config.transports, request.transport)
    if peer is not None and not (
        "Authorization" in request.headers or "auth_token" in request.query
    ):
        creds = app.directory.resolve(peer)
        if creds is not None:
            return creds
    header = request.headers.get("Authorization")
    query_token = request.query.get("auth_token")
    if header:
        scheme, _, value = header.partition(" ")
        scheme, value = scheme.lower(), value.strip()
    elif query_token:
        scheme, value = "token", query_token
    else:
        raise _refuse("No credentials: use Basic, Bearer <api key>, Token <token> or ?auth_token=")
    remote = client_address(request)
    try:
        # Counted before anything is checked: concurrent requests cannot all be checked.
        ticket = app.throttle.begin(remote)
        identity = await _check(app, scheme, value)
    except Busy as e:
        raise http_error(web.HTTPTooManyRequests, e.reason) from None
    creds = app.directory.resolve(identity) if identity is not None else None
    if creds is None:
        raise _refuse("Invalid credentials")
    app.throttle.succeeded(remote, ticket)
    return creds
