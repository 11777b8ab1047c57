"""Client-side errors and the decoding of JSON-RPC error objects into the server's exceptions."""

from __future__ import annotations

import errno as _errno
import re
from typing import Any, TypeVar

from middlewared import jsonc
from middlewared.errors import (
    CODE_TO_CLASS,
    ENOMETHOD,
    ENOTAUTHENTICATED,
    Busy,
    CallError,
    MethodNotFound,
    MiddlewareError,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    RpcCode,
    ValidationErrors,
    errname,
)

__all__ = [
    "CallError",
    "CallTimeout",
    "ClientClosed",
    "ClientError",
    "ConnectFailed",
    "ConnectionLost",
    "LoginFailed",
    "MethodNotFound",
    "MiddlewareError",
    "NotConnected",
    "ValidationErrors",
    "errname",
    "error_from_http",
    "error_from_record",
    "error_from_rpc",
]


class ClientError(MiddlewareError):
    """An error the client itself detected (no reply from the server carried it)."""

    default_errno = _errno.EFAULT

    def __init__(self, reason: str, errno: int | None = None) -> None:
        super().__init__(reason, errno)


class ConnectFailed(ClientError):
    """The WebSocket could not be opened (refused, unreachable, bad handshake)."""

    default_errno = _errno.ECONNREFUSED


class ConnectionLost(ClientError):
    """The connection dropped while a call was in flight; the call is not retried."""

    default_errno = _errno.ECONNRESET

    def __init__(self, reason: str = "Connection lost") -> None:
        super().__init__(reason)


class NotConnected(ClientError):
    """No connection is open (reconnecting for too long, or it gave up)."""

    default_errno = _errno.ENOTCONN

    def __init__(self, reason: str = "Not connected") -> None:
        super().__init__(reason)


class ClientClosed(NotConnected):
    """The client was closed by its owner."""

    def __init__(self, reason: str = "Client closed") -> None:
        super().__init__(reason)


class CallTimeout(ClientError):
    """No reply within the call's timeout (the server may still run the call)."""

    default_errno = _errno.ETIMEDOUT


class LoginFailed(ClientError):
    """The server refused the credentials."""

    default_errno = _errno.EACCES

    def __init__(self, reason: str = "Login failed", errno: int | None = None) -> None:
        super().__init__(reason, errno)


# A method call error (-32001) is rebuilt as the subclass its errno stands for.
ERRNO_TO_CLASS: dict[int, type[MiddlewareError]] = {
    ENOTAUTHENTICATED: NotAuthenticated,
    _errno.EACCES: PermissionDenied,
    _errno.ENOENT: NotFound,
    _errno.EBUSY: Busy,
}


_E = TypeVar("_E", bound=MiddlewareError)


def _build(cls: type[_E], reason: str, errno: int | None, extra: Any) -> _E:
    # Subclasses narrow __init__ (NotFound takes only a reason), so fill the base fields directly.
    exc = cls.__new__(cls)
    MiddlewareError.__init__(exc, reason, errno, extra)
    return exc


def _validation(reason: str, extra: Any) -> ValidationErrors:
    errors: list[tuple[str, str, int]] = []
    for item in extra if isinstance(extra, list) else []:
        if isinstance(item, list | tuple) and len(item) >= 2:
            err = item[2] if len(item) > 2 and isinstance(item[2], int) else _errno.EINVAL
            errors.append((str(item[0]), str(item[1]), err))
    exc = ValidationErrors(errors)
    if reason and not errors:
        exc.reason = reason
        exc.args = (reason,)
    return exc


def error_from_rpc(error: Any, method: str | None = None) -> MiddlewareError:
    """Turn a JSON-RPC ``error`` object into the exception the server raised.

    The server's formatted traceback, when present, is attached as a note.
    """
    if not isinstance(error, dict):
        return CallError(str(error))
    code = error.get("code")
    data = error.get("data")
    data = data if isinstance(data, dict) else {}
    reason = data.get("reason")
    if not isinstance(reason, str):
        reason = str(error.get("message") or "Unknown error")
    err = data.get("error")
    errno = err if isinstance(err, int) and not isinstance(err, bool) else None
    extra = data.get("extra")

    exc: MiddlewareError
    if code == RpcCode.INVALID_PARAMS:
        exc = _validation(reason, extra)
    elif code == RpcCode.METHOD_NOT_FOUND:
        missing = _build(MethodNotFound, reason, errno, extra)
        missing.method = method or ""
        exc = missing
    elif code == RpcCode.CALL_ERROR and errno in ERRNO_TO_CLASS:
        exc = _build(ERRNO_TO_CLASS[errno], reason, errno, extra)
    else:
        cls = CODE_TO_CLASS.get(code, CallError) if isinstance(code, int) else CallError
        exc = _build(cls, reason, errno, extra)

    trace = data.get("trace")
    if isinstance(trace, dict) and isinstance(trace.get("formatted"), str):
        exc.add_note(f"Remote traceback ({trace.get('class', '?')}):\n{trace['formatted']}")
    return exc


# An HTTP refusal of /_upload or /_download carries no errno unless it names one.
HTTP_ERRNOS: dict[int, int] = {
    400: _errno.EINVAL,
    401: ENOTAUTHENTICATED,
    403: _errno.EACCES,
    404: _errno.ENOENT,
    405: _errno.EINVAL,
    409: _errno.EFAULT,
    410: _errno.ENOENT,
    413: _errno.EFBIG,
    422: _errno.EINVAL,
    429: _errno.EBUSY,
}
_NO_METHOD = re.compile(r"Method '(?P<method>.*)' does not exist")
_ERRNOS_BY_NAME = {name: code for code, name in _errno.errorcode.items()}


def _errno_by_name(name: Any) -> int | None:
    if not isinstance(name, str):
        return None
    return {"ENOMETHOD": ENOMETHOD, "ENOTAUTHENTICATED": ENOTAUTHENTICATED}.get(
        name, _ERRNOS_BY_NAME.get(name)
    )


def _http_body(body: bytes) -> dict[str, Any]:
    try:
        data = jsonc.loads(body)
    except jsonc.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def error_from_http(status: int, body: bytes, method: str | None = None) -> MiddlewareError:
    """Turn a refusal of ``/_upload`` or ``/_download`` (``{"error", "status"}``) into an error."""
    data = _http_body(body)
    reason = data.get("error")
    if not isinstance(reason, str) or not reason:
        reason = f"HTTP {status}: {body[:200].decode(errors='replace').strip()}".rstrip(": ")
    errno = _errno_by_name(data.get("errname")) or HTTP_ERRNOS.get(status, _errno.EFAULT)
    extra = data.get("extra")
    if isinstance(extra, list) and extra and errno == _errno.EINVAL:
        return _validation(reason, extra)
    missing = _NO_METHOD.fullmatch(reason) if status == 422 else None
    if missing is not None:
        exc = _build(MethodNotFound, reason, ENOMETHOD, None)
        exc.method = method or missing["method"]
        return exc
    cls = ERRNO_TO_CLASS.get(errno, CallError)
    return _build(cls, reason, errno, extra if isinstance(extra, list) else None)


def error_from_record(record: dict[str, Any]) -> MiddlewareError | None:
    """The error a FAILED or ABORTED job record carries (``None`` for other states)."""
    state = record.get("state")
    if state not in ("FAILED", "ABORTED"):
        return None
    reason = record.get("error")
    reason = reason if isinstance(reason, str) and reason else f"Job {state}"
    info = record.get("exc_info")
    info = info if isinstance(info, dict) else {}
    errno = info.get("errno")
    errno = errno if isinstance(errno, int) and not isinstance(errno, bool) else None
    if state == "ABORTED" and errno is None:
        errno = _errno.ECANCELED
    extra = info.get("extra")
    if info.get("type") == "VALIDATION":
        return _validation(reason, extra)
    cls = ERRNO_TO_CLASS.get(errno, CallError) if errno is not None else CallError
    return _build(cls, reason, errno, extra if isinstance(extra, list) else None)
