"""A small JSON-RPC client over aiohttp WebSockets, the same for every contender."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from bench.loads.common import Auth

NOTIFICATION = '{"jsonrpc":"2.0","method"'
OnNote = Callable[[str], None]


class RpcError(RuntimeError):
    pass


class Conn:
    """One connection: calls matched to replies by id; notifications handed over raw."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, on_note: OnNote | None = None) -> None:
        self.ws = ws
        self.on_note = on_note
        self.closed = False
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    break
                data: str = msg.data
                if data.startswith(NOTIFICATION):
                    if self.on_note is not None:
                        self.on_note(data)
                    continue
                reply = orjson.loads(data)
                fut = self._pending.pop(reply.get("id"), None)
                if fut is not None and not fut.done():
                    if "error" in reply:
                        fut.set_exception(RpcError(str(reply["error"])))
                    else:
                        fut.set_result(reply.get("result"))
        finally:
            self.closed = True
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(RpcError("connection closed"))

    async def request(self, method: str, *params: Any) -> asyncio.Future[Any]:
        """Send a call; the returned future resolves with its result."""
        msg_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        frame = {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": list(params)}
        await self.ws.send_str(orjson.dumps(frame).decode())
        return fut

    async def call(self, method: str, *params: Any, timeout: float = 60.0) -> Any:
        return await asyncio.wait_for(await self.request(method, *params), timeout)

    def stall(self) -> None:
        """Stop reading: aiohttp then stops taking bytes off the socket once its buffer is
        full, so the server sees a subscriber that never reads."""
        self._reader.cancel()

    async def detach(self) -> aiohttp.ClientWebSocketResponse:
        """Stop the reader and hand the socket over (for tight loops that read themselves)."""
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
        return self.ws

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()


def session() -> aiohttp.ClientSession:
    """One client session, no connection limit (scenarios hold thousands)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))


async def connect(http: aiohttp.ClientSession, url: str, on_note: OnNote | None = None) -> Conn:
    ws = await http.ws_connect(url, max_msg_size=0, autoping=True, compress=0)
    return Conn(ws, on_note)


async def open_many(
    http: aiohttp.ClientSession,
    url: str,
    count: int,
    auth: Auth | None,
    subscribe: bool = False,
    on_note: Callable[[int], OnNote] | None = None,
    batch: int = 100,
) -> list[Conn]:
    """``count`` logged-in connections (the first by password, the rest by token, since a
    password check costs the server ~30 ms of scrypt), optionally subscribed to jobs."""
    conns: list[Conn] = []
    token: str | None = None

    async def one(i: int) -> Conn:
        conn = await connect(http, url, on_note(i) if on_note else None)
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
