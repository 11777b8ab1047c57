"""The JSON-RPC ``error`` object for whatever a call raised."""

from __future__ import annotations

import logging
import traceback
from typing import Any

from middlewared.errors import CallError, MiddlewareError

log = logging.getLogger(__name__)


def error_object(exc: BaseException, name: str, with_trace: bool) -> dict[str, Any]:
    """The JSON-RPC ``error`` for any exception a call raised; unexpected ones are logged."""
    if not isinstance(exc, MiddlewareError):
        log.error("method %s failed unexpectedly", name, exc_info=exc)
        exc_reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        wrapped: MiddlewareError = CallError(exc_reason)
    else:
        wrapped = exc
    trace = None
    if with_trace:
        trace = {
            "class": type(exc).__name__,
            "frames": [],
            "formatted": "".join(traceback.format_exception(exc)),
            "repr": repr(exc),
        }
    return wrapped.to_rpc_error(trace)
