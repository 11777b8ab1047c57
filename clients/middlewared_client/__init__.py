"""Python client of middlewared: ``AsyncClient`` (asyncio), ``Client`` (blocking) and ``midclt``."""

from __future__ import annotations

from middlewared.errors import (
    CallError,
    MethodNotFound,
    MiddlewareError,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    ValidationErrors,
)
from middlewared_client.aclient import AsyncClient, Connecting
from middlewared_client.client import Client, SyncJobHandle
from middlewared_client.errors import (
    CallTimeout,
    ClientClosed,
    ClientError,
    ConnectFailed,
    ConnectionLost,
    LoginFailed,
    NotConnected,
    error_from_rpc,
)
from middlewared_client.jobs import JobHandle, JobProgress
from middlewared_client.options import ClientOptions, Credentials, ReconnectPolicy

__all__ = [
    "AsyncClient",
    "CallError",
    "CallTimeout",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientOptions",
    "ConnectFailed",
    "Connecting",
    "ConnectionLost",
    "Credentials",
    "JobHandle",
    "JobProgress",
    "LoginFailed",
    "MethodNotFound",
    "MiddlewareError",
    "NotAuthenticated",
    "NotConnected",
    "NotFound",
    "PermissionDenied",
    "ReconnectPolicy",
    "SyncJobHandle",
    "ValidationErrors",
    "error_from_rpc",
]
