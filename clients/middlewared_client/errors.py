"""Client-side errors and the decoding of JSON-RPC error objects into the server's exceptions."""

from __future__ import annotations

import errno as _errno
from typing import Any, TypeVar

from middlewared.errors import (
    CODE_TO_CLASS,
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
