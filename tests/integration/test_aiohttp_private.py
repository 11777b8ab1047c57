"""Our reach into aiohttp's private parts (middlewared/http/aiohttp_private.py), tried against
the aiohttp installed: when a release moves what it relies on, these fail and say what."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from middlewared.http.aiohttp_private import GuardedWebSocketResponse
from middlewared.http.frameguard import FixedLimit, FrameGuard
from tests.rawws import RawWs, ws_frame

LIMIT = 100


async def _nothing(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response()


async def test_the_private_parts_are_where_we_reach() -> None:
    release = f"aiohttp {aiohttp.__version__}"
    params = list(inspect.signature(web.WebSocketResponse._post_start).parameters)
    assert params == ["self", "request", "protocol", "writer"], (
        f"{release}: WebSocketResponse._post_start(request, protocol, writer) changed: {params}"
    )
    handler = web.Server(_nothing)()
    assert handler._message_tail == b"", f"{release}: RequestHandler._message_tail is gone"
    assert handler._payload_parser is None, f"{release}: RequestHandler._payload_parser is gone"
    ws = web.WebSocketResponse()
    assert hasattr(ws, "_reader"), f"{release}: WebSocketResponse._reader is gone"


@dataclass
class Echo:
    host: str
    port: int


async def _echo(request: web.Request) -> web.WebSocketResponse:
    ws = GuardedWebSocketResponse(FrameGuard(FixedLimit(LIMIT)))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await ws.send_str(msg.data)
    return ws


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    app = web.Application()
    app.router.add_get("/api/current", _echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield Echo(host, port)
    await runner.cleanup()


def _close_code_after(srv: Echo, then: bytes, more: bytes = b"") -> int | None:
    raw = RawWs(srv).handshake(then)
    try:
        raw.sock.sendall(more)
        return raw.close_code()
    finally:
        raw.close()


async def test_frames_with_the_upgrade_pass_the_guard(echo: Echo) -> None:
    unmasked = ws_frame(b"hello", masked=False)
    assert await asyncio.to_thread(_close_code_after, echo, unmasked) == 1002
    too_big = ws_frame(b"x" * 10, declared=LIMIT + 1)
    assert await asyncio.to_thread(_close_code_after, echo, too_big) == 1009


async def test_the_guard_stays_in_front_of_the_reader(echo: Echo) -> None:
    def exchange() -> tuple[tuple[int, bytes], int | None]:
        raw = RawWs(echo).handshake(ws_frame(b"hello"))
        try:
            first = raw.read_frame()
            raw.sock.sendall(ws_frame(b"a" * 60, fin=False) + ws_frame(b"b" * 41, 0, fin=False))
            return first, raw.close_code()
        finally:
            raw.close()

    echoed, code = await asyncio.to_thread(exchange)
    assert echoed == (1, b"hello")
    assert code == 1009
