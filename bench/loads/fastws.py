"""A small JSON-RPC client over picows WebSockets (compiled, callback-driven), the same for
every contender: the load costs a fraction of what the server spends, so it does not set the
pace (its CPU is reported beside each figure all the same)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

NOTIFICATION = b'{"jsonrpc":"2.0","method"'
OnNote = Callable[[bytes], None]
# Frames the loads take: replies and events, and the store's pages of thousands of ids.
MAX_FRAME = 256 * 1024 * 1024


class RpcError(RuntimeError):
    pass


class Conn(WSListener):
    """One connection: calls matched to replies by id; notifications handed over raw. A load
    that drives its own tight loop sets ``tap``: every text message goes there instead."""

    def __init__(self, on_note: OnNote | None = None) -> None:
        super().__init__()
        self.on_note = on_note
        self.tap: Callable[[bytes], None] | None = None
        self.closed = False
        self.transport: WSTransport | None = None
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._parts: list[bytes] = []

    # --- picows callbacks ---------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.CONTINUATION:
            if frame.fin and not self._parts:
                self._message(frame.get_payload_as_bytes())
            elif frame.fin:
                self._message(b"".join([*self._parts, frame.get_payload_as_bytes()]))
                self._parts.clear()
            else:
                self._parts.append(frame.get_payload_as_bytes())
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(RpcError("connection closed"))
        self._pending.clear()
        if not self.gone.done():
            self.gone.set_result(None)

    # --- the client ---------------------------------------------------------------------

    def _message(self, data: bytes) -> None:
        if self.tap is not None:
            self.tap(data)
            return
        if data.startswith(NOTIFICATION):
            if self.on_note is not None:
                self.on_note(data)
            return
        reply = orjson.loads(data)
        fut = self._pending.pop(reply.get("id"), None)
        if fut is not None and not fut.done():
            if "error" in reply:
                fut.set_exception(RpcError(orjson.dumps(reply["error"]).decode()))
            else:
                fut.set_result(reply.get("result"))

    def send(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise RpcError("connection closed")
        self.transport.send(WSMsgType.TEXT, data)

    async def request(self, method: str, *params: Any) -> asyncio.Future[Any]:
        """Send a call; the returned future resolves with its result."""
        msg_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        frame = {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": list(params)}
        self.send(orjson.dumps(frame))
        return fut

    async def call(self, method: str, *params: Any, timeout: float = 60.0) -> Any:
        return await asyncio.wait_for(await self.request(method, *params), timeout)

    def stall(self) -> None:
        """Stop reading: the kernel's buffers fill, so the server sees a subscriber that
        never reads."""
        if self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    async def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.disconnect(graceful=False)
        await asyncio.wait_for(asyncio.shield(self.gone), 10)


async def connect(url: str, on_note: OnNote | None = None) -> Conn:
    _transport, conn = await ws_connect(
        lambda: Conn(on_note), url, max_frame_size=MAX_FRAME, websocket_handshake_timeout=30
    )
    assert isinstance(conn, Conn)
    return conn


async def open_many(
    url: str,
    count: int,
    auth: dict[str, str] | None,
    subscribe: bool = False,
    on_note: Callable[[int], OnNote] | None = None,
    batch: int = 100,
) -> list[Conn]:
    """``count`` logged-in connections (the first by password, the rest by token, since a
    password check costs the server ~30 ms of scrypt), optionally subscribed to jobs."""
    conns: list[Conn] = []
    token: str | None = None

    async def one(i: int) -> Conn:
        conn = await connect(url, on_note(i) if on_note else None)
        if auth is not None:
            if token is None:
                ok = await conn.call("auth.login", auth["user"], auth["password"])
            else:
                ok = await conn.call("auth.login_with_token", token)
            if ok is not True:
                raise RpcError(f"login refused: {ok!r}")
        if subscribe:
            await conn.call("core.subscribe", "core.get_jobs")
        return conn

    if count:
        conns.append(await one(0))
        if auth is not None:
            token = await conns[0].call("auth.generate_token", 86400, False)
    for start in range(len(conns), count, batch):
        stop = min(count, start + batch)
        conns += await asyncio.gather(*(one(i) for i in range(start, stop)))
    return conns


async def close_all(conns: list[Conn]) -> None:
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
