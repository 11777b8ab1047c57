"""The REST facade ``/api/v2.0/`` (TrueNAS's v2.0 REST) and its OpenAPI document: each
request is authenticated, then is one call through the one call path (``Calls.call``) with
the caller's credentials, so allow-lists, access levels and param validation apply as they
do over the WebSocket."""

from __future__ import annotations

import errno
import logging
from typing import Any

from aiohttp import web

from middlewared import jsonc
from middlewared.app import Middleware
from middlewared.errors import (
    ENOMETHOD,
    ENOTAUTHENTICATED,
    InternalError,
    InvalidRequest,
    MethodNotFound,
    MiddlewareError,
    ParseError,
    TooManyCalls,
    ValidationErrors,
    errname,
)
from middlewared.http import openapi
from middlewared.http.auth import authenticate, cross_site
from middlewared.http.keys import MIDDLEWARE
from middlewared.http.restmap import PREFIX, Kind, NoRoute, Router, build_operations
from middlewared.http.restparams import request_params
from middlewared.rpc.errors import error_object

log = logging.getLogger(__name__)

ROUTER = web.AppKey("rest_router", Router)

# Errnos of call errors that have an HTTP status of their own; any other call error is 422.
ERRNO_STATUS = {
    ENOTAUTHENTICATED: 401,
    errno.EACCES: 403,
    errno.EPERM: 403,
    errno.ENOENT: 404,
    ENOMETHOD: 404,
    errno.EBUSY: 409,
}
# Errnos of the refusals raised as HTTP statuses before any call (credentials, body size).
STATUS_ERRNO = {
    401: ENOTAUTHENTICATED,
    403: errno.EACCES,
    404: errno.ENOENT,
    413: errno.EFBIG,
    429: errno.EBUSY,
}


def status_of(exc: MiddlewareError) -> int:
    """The HTTP status of a call's error (README, "REST facade")."""
    if isinstance(exc, ValidationErrors):
        return 422
    if isinstance(exc, ParseError | InvalidRequest):
        return 400
    if isinstance(exc, MethodNotFound):
        return 404
    if isinstance(exc, TooManyCalls):
        return 429
    if isinstance(exc, InternalError):
        return 500
    return ERRNO_STATUS.get(exc.errno, 422)


def error_response(
    status: int, data: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    """The JSON-RPC ``error.data`` (error, errname, reason, extra, trace) and the status."""
    return web.Response(
        status=status,
        text=jsonc.dumps({**data, "status": status}),
        content_type="application/json",
        headers=headers,
    )


def refusal(
    status: int, reason: str, code: int, headers: dict[str, str] | None = None
) -> web.Response:
    data = {"error": code, "errname": errname(code), "reason": reason, "extra": None, "trace": None}
    return error_response(status, data, headers)


def _from_http(e: web.HTTPException) -> web.Response:
    """A refusal raised as an HTTP exception (401, 429, 413), in the facade's error shape."""
    reason = e.reason
    try:
        body = jsonc.loads(e.text or "")
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            reason = body["error"]
    except (jsonc.JSONDecodeError, ValueError):
        pass
    headers = {k: v for k, v in e.headers.items() if k.lower() == "www-authenticate"}
    return refusal(e.status, reason, STATUS_ERRNO.get(e.status, errno.EINVAL), headers)


def _encoded(result: Any, method: str) -> web.Response:
    try:
        text = jsonc.dumps(result)
    except jsonc.EncodeError as e:
        log.error("REST %s: result cannot be sent as JSON (%s)", method, e)
        return refusal(500, f"The result of {method} cannot be sent as JSON", errno.EFAULT)
    return web.Response(text=text, content_type="application/json")


async def rest_handler(request: web.Request) -> web.StreamResponse:
    app = request.app[MIDDLEWARE]
    if cross_site(request):
        return refusal(403, "Cross-origin request refused", errno.EACCES)
    try:
        creds = await authenticate(request, app)
    except web.HTTPException as e:
        return _from_http(e)
    path = request.raw_path.partition("?")[0][len(PREFIX) :]
    try:
        op, ident = request.app[ROUTER].match(request.method, path)
    except NoRoute as e:
        if e.allowed:
            reason = f"{request.method} is not allowed here; use {', '.join(e.allowed)}"
            return refusal(405, reason, errno.EINVAL, {"Allow": ", ".join(e.allowed)})
        return refusal(404, f"No REST route {PREFIX}{path}", ENOMETHOD)
    try:
        body = await request.read() if op.kind is Kind.PARAMS else b""
    except web.HTTPException as e:
        return _from_http(e)
    try:
        # Refused before the params are read: a caller learns nothing of a method it may
        # not call.
        app.calls.check(op.method, creds)
        params = request_params(op, ident, request.query, body)
        result = await app.calls.call(op.method, params, creds, legacy_jobs=True, origin="rest")
    except MiddlewareError as e:
        return error_response(status_of(e), e.error_data())
    except Exception as e:
        # The method's own bug (error_object logs it): not the caller's fault.
        return error_response(500, error_object(e, op.method, with_trace=False)["data"])
    return _encoded(result, op.method)


async def openapi_handler(request: web.Request) -> web.StreamResponse:
    """The OpenAPI 3.1 document of the routes of the methods the caller may call."""
    app = request.app[MIDDLEWARE]
    try:
        creds = await authenticate(request, app)
    except web.HTTPException as e:
        return _from_http(e)
    methods = await app.calls.call("core.get_methods", [], creds, origin="rest")
    return web.Response(
        text=jsonc.dumps(openapi.document(request.app[ROUTER].operations, methods)),
        content_type="application/json",
    )


def mount(web_app: web.Application, app: Middleware) -> None:
    """Serve ``/api/v2.0/``: its routes are made once, from the methods mounted at start."""
    web_app[ROUTER] = Router(build_operations(m.spec for m in app.methods))
    web_app.router.add_get(f"{PREFIX}/openapi.json", openapi_handler)
    # Any character, a newline too: an id may have one (percent-encoded).
    web_app.router.add_route("*", PREFIX + r"/{tail:[\s\S]*}", rest_handler)
