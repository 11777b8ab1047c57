"""GET /api/current: upgrade to a WebSocket and feed its frames to a Session."""

from __future__ import annotations

import logging

from aiohttp import WSMsgType, web

from middlewared.app import Middleware
from middlewared.http.keys import MIDDLEWARE, SESSIONS
from middlewared.ws.session import Session

log = logging.getLogger(__name__)


class AiohttpTransport:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request

    async def send(self, frame: str) -> None:
        await self.ws.send_str(frame)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, message=reason.encode())

    def abort(self) -> None:
        if self.request.transport is not None:
            self.request.transport.abort()


def client_address(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else "unknown"


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    app: Middleware = request.app[MIDDLEWARE]
    limits = app.config.limits
    # aiohttp enforces the larger (after-login) limit and closes with 1009 past it;
    # the session enforces the smaller one before login.
    ws = web.WebSocketResponse(
        max_msg_size=limits.max_frame + 1, heartbeat=None, compress=False, timeout=2.0
    )
    await ws.prepare(request)
    session = Session(app, AiohttpTransport(ws, request), client_address(request))
    session.start()
    request.app[SESSIONS].add(session)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await session.on_text(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await session.on_binary()
            elif msg.type is WSMsgType.ERROR:
                log.info("session %s: %s", session.remote, ws.exception())
                break
    finally:
        request.app[SESSIONS].discard(session)
        await session.close()
    return ws
