"""The one exception tree of middlewared and its mapping to JSON-RPC codes and errnos."""

from __future__ import annotations

import errno as _errno
from enum import IntEnum
from typing import Any

# TrueNAS's own errnos, beside the POSIX ones.
ENOMETHOD = 201
ENOTAUTHENTICATED = 207

_EXTRA_ERRNAMES = {ENOMETHOD: "ENOMETHOD", ENOTAUTHENTICATED: "ENOTAUTHENTICATED"}


def errname(code: int) -> str:
    """Symbolic name of an errno (``EINVAL``), including TrueNAS's own."""
    return _EXTRA_ERRNAMES.get(code) or _errno.errorcode.get(code) or f"E{code}"


class RpcCode(IntEnum):
    """The JSON-RPC error codes middlewared emits; no others are ever used."""

    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    TOO_MANY_CONCURRENT_CALLS = -32000
    CALL_ERROR = -32001


RPC_MESSAGES: dict[int, str] = {
    RpcCode.PARSE_ERROR: "Parse error",
    RpcCode.INVALID_REQUEST: "Invalid Request",
    RpcCode.METHOD_NOT_FOUND: "Method does not exist",
    RpcCode.INVALID_PARAMS: "Invalid params",
    RpcCode.INTERNAL_ERROR: "Internal error",
    RpcCode.TOO_MANY_CONCURRENT_CALLS: "Too many concurrent calls",
    RpcCode.CALL_ERROR: "Method call error",
}

ErrorExtra = list[list[Any]] | None


class MiddlewareError(Exception):
    """Base of every error that is reported to a caller."""

    rpc_code: RpcCode = RpcCode.CALL_ERROR
    default_errno: int = _errno.EFAULT

    def __init__(self, reason: str, errno: int | None = None, extra: ErrorExtra = None) -> None:
        self.errno = self.default_errno if errno is None else errno
        # A caller is always told something: an empty reason gets the error's name.
        self.reason = reason or f"{errname(self.errno)}: no reason given"
        super().__init__(self.reason)
        self.extra = extra

    def __str__(self) -> str:
        return f"[{errname(self.errno)}] {self.reason}"

    def error_data(self, trace: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``error.data`` object: always all five keys."""
        return {
            "error": self.errno,
            "errname": errname(self.errno),
            "reason": self.reason,
            "extra": self.extra,
            "trace": trace,
        }

    def to_rpc_error(self, trace: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "code": int(self.rpc_code),
            "message": RPC_MESSAGES[self.rpc_code],
            "data": self.error_data(trace),
        }


class CallError(MiddlewareError):
    """The operation failed (the caller's input was fine)."""


class ParseError(MiddlewareError):
    rpc_code = RpcCode.PARSE_ERROR
    default_errno = _errno.EINVAL


class InvalidRequest(MiddlewareError):
    rpc_code = RpcCode.INVALID_REQUEST
    default_errno = _errno.EINVAL


class MethodNotFound(MiddlewareError):
    rpc_code = RpcCode.METHOD_NOT_FOUND
    default_errno = ENOMETHOD

    def __init__(self, method: str) -> None:
        super().__init__(f"Method {method!r} does not exist")
        self.method = method


class InternalError(MiddlewareError):
    rpc_code = RpcCode.INTERNAL_ERROR
    default_errno = _errno.EFAULT


class TooManyCalls(MiddlewareError):
    rpc_code = RpcCode.TOO_MANY_CONCURRENT_CALLS
    default_errno = _errno.EBUSY


class NotAuthenticated(CallError):
    default_errno = ENOTAUTHENTICATED

    def __init__(self, reason: str = "Not authenticated") -> None:
        super().__init__(reason)


class PermissionDenied(CallError):
    default_errno = _errno.EACCES

    def __init__(self, reason: str = "Not permitted") -> None:
        super().__init__(reason)


class NotFound(CallError):
    default_errno = _errno.ENOENT

    def __init__(self, reason: str = "Not found") -> None:
        super().__init__(reason)


class Busy(CallError):
    default_errno = _errno.EBUSY


class ValidationErrors(MiddlewareError):
    """The caller's input was wrong; ``extra`` lists ``[field, message, errno]``."""

    rpc_code = RpcCode.INVALID_PARAMS
    default_errno = _errno.EINVAL

    def __init__(self, errors: list[tuple[str, str, int]] | None = None) -> None:
        self.errors: list[tuple[str, str, int]] = list(errors or [])
        super().__init__(self._reason(), _errno.EINVAL, self._extra())

    def add(self, field: str, message: str, errno: int = _errno.EINVAL) -> None:
        self.errors.append((field, message, errno))
        self.reason = self._reason()
        self.extra = self._extra()
        self.args = (self.reason,)

    def _reason(self) -> str:
        return "; ".join(f"{f}: {m}" if f else m for f, m, _ in self.errors) or "Invalid params"

    def _extra(self) -> list[list[Any]]:
        return [[f, m, e] for f, m, e in self.errors]

    def __bool__(self) -> bool:
        return bool(self.errors)


def validation_error(field: str, message: str, errno: int = _errno.EINVAL) -> ValidationErrors:
    """One validation error, as TrueNAS plugins raise it."""
    return ValidationErrors([(field, message, errno)])


# Where an error code comes back to the client, this rebuilds the exception class.
CODE_TO_CLASS: dict[int, type[MiddlewareError]] = {
    RpcCode.PARSE_ERROR: ParseError,
    RpcCode.INVALID_REQUEST: InvalidRequest,
    RpcCode.INTERNAL_ERROR: InternalError,
    RpcCode.TOO_MANY_CONCURRENT_CALLS: TooManyCalls,
    RpcCode.CALL_ERROR: CallError,
}
