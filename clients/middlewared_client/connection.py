"""One open WebSocket: sends calls, matches replies by id, hands notifications on."""

from __future__ import annotations

import asyncio
import errno as _errno
import itertools
import logging
import uuid
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from middlewared import jsonc
from middlewared.errors import MiddlewareError
from middlewared_client.endpoints import Endpoint, tls_context
from middlewared_client.errors import (
    CallTimeout,
    ConnectFailed,
    ConnectionLost,
    error_from_rpc,
)
from middlewared_client.options import ClientOptions

log = logging.getLogger(__name__)

NotificationHandler = Callable[[str, Any], None]


def _connect_error(url: str, exc: Exception) -> ConnectFailed:
    if isinstance(exc, TimeoutError):
        return ConnectFailed(f"Timed out connecting to {url}", _errno.ETIMEDOUT)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return ConnectFailed(f"Cannot connect to {url}: {reason}", exc.errno or None)
    return ConnectFailed(f"Cannot connect to {url}: {exc}", _errno.EPROTO)


class Connection:
    """A WebSocket with its calls in flight; a drop fails them with ``ConnectionLost``."""

    def __init__(self, ws: ClientConnection, on_notification: NotificationHandler) -> None:
        self._ws = ws
        self._on_notification = on_notification
        self._pending: dict[str, tuple[str, asyncio.Future[Any]]] = {}
        self._prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)
        self._close_error: Callable[[], MiddlewareError] = self._lost
        self._close_reason = ""
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="middlewared-client-reader")

    @classmethod
    async def open(
        cls, url: str, options: ClientOptions, on_notification: NotificationHandler
    ) -> Connection:
        try:
            endpoint = Endpoint.parse(url)
            if endpoint.unix_path is not None:
                ws = await unix_connect(
                    endpoint.unix_path,
                    endpoint.ws_url,
                    max_size=options.max_size,
                    open_timeout=options.connect_timeout,
                    ping_interval=options.ping_interval,
                )
            else:
                ws = await connect(
                    url,
                    max_size=options.max_size,
                    open_timeout=options.connect_timeout,
                    ping_interval=options.ping_interval,
                    ssl=tls_context(options.cafile) if endpoint.secure else None,
                )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI, ValueError) as exc:
            raise _connect_error(url, exc) from exc
        return cls(ws, on_notification)

    def next_id(self) -> str:
        # Unique across connections: job events carry call ids from every client.
        return f"{self._prefix}-{next(self._ids)}"

    async def send_call(self, call_id: str, method: str, params: list[Any]) -> asyncio.Future[Any]:
        """Send one request; the future settles with its reply."""
        if self.closed.is_set():
            raise self._close_error()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = (method, future)
        frame = {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params}
        try:
            await self._ws.send(jsonc.dumps(frame))
        except ConnectionClosed as exc:
            self._pending.pop(call_id, None)
            raise self._close_error() from exc
        except BaseException:
            self._pending.pop(call_id, None)
            raise
        return future

    async def call(self, method: str, params: list[Any], reply_timeout: float | None = None) -> Any:
        """Send one request and wait for its reply."""
        call_id = self.next_id()
        future = await self.send_call(call_id, method, params)
        try:
            async with asyncio.timeout(reply_timeout):
                return await future
        except TimeoutError:
            raise CallTimeout(f"No reply to {method} within {reply_timeout} s") from None
        finally:
            self._pending.pop(call_id, None)

    async def close(self, error: Callable[[], MiddlewareError] | None = None) -> None:
        """Close the socket; calls still in flight fail with ``error()``."""
        if error is not None:
            self._close_error = error
        await self._ws.close()
        await asyncio.wait([self._reader])

    def _lost(self) -> MiddlewareError:
        reason = f"Connection lost: {self._close_reason}" if self._close_reason else None
        return ConnectionLost(reason) if reason else ConnectionLost()

    async def _read(self) -> None:
        try:
            async for frame in self._ws:
                self._on_frame(frame)
        except ConnectionClosed as exc:
            log.info("connection closed: %s", exc)
            self._close_reason = str(exc)
        except Exception as exc:
            log.exception("connection reader failed")
            self._close_reason = f"{type(exc).__name__}: {exc}"
        finally:
            if not self._close_reason and self._ws.close_code is not None:
                self._close_reason = f"closed with code {self._ws.close_code}"
                self._close_reason += f" ({self._ws.close_reason})" if self._ws.close_reason else ""
            pending, self._pending = self._pending, {}
            for _method, future in pending.values():
                if not future.done():
                    future.set_exception(self._close_error())
            self.closed.set()

    def _on_frame(self, frame: str | bytes) -> None:
        try:
            message = jsonc.loads(frame)
        except jsonc.JSONDecodeError:
            log.warning("ignored a frame that is not JSON")
            return
        for item in message if isinstance(message, list) else [message]:
            if not isinstance(item, dict):
                continue
            if "id" in item and ("result" in item or "error" in item):
                self._on_reply(item)
            elif isinstance(item.get("method"), str):
                try:
                    self._on_notification(item["method"], item.get("params"))
                except Exception:
                    log.exception("notification handler failed on %s", item["method"])

    def _on_reply(self, reply: dict[str, Any]) -> None:
        call_id = reply["id"]
        entry = self._pending.pop(call_id, None) if isinstance(call_id, str) else None
        if entry is None:
            if "error" in reply:
                log.warning("error for no call in flight: %s", error_from_rpc(reply["error"]))
            return
        method, future = entry
        if future.done():
            return
        if "error" in reply:
            future.set_exception(error_from_rpc(reply["error"], method))
        else:
            future.set_result(reply["result"])
