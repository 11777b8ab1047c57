"""GET /api/current: upgrade to a WebSocket and feed its frames to a Session."""

from __future__ import annotations

import logging
import warnings

from aiohttp import WSMsgType, web

from middlewared.app import Middleware
from middlewared.http.keys import MIDDLEWARE
from middlewared.http.wsframes import text_frame
from middlewared.ws.session import Session

log = logging.getLogger(__name__)


# Several frames go out in one vectored write; past this many buffered bytes the writer
# waits for the socket to drain (aiohttp's own sends do the same).
DRAIN_ABOVE = 64 * 1024
# aiohttp marks StreamResponse.drain() deprecated for HTTP bodies; it is the public way to
# wait for a WebSocket's transport, and its behaviour is what is wanted here.
warnings.filterwarnings("ignore", message="drain method is deprecated", category=DeprecationWarning)


class AiohttpTransport:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.ws = ws
        self.request = request

    async def send(self, frame: str) -> None:
        await self.ws.send_str(frame)

    async def send_many(self, frames: list[str]) -> None:
        """The frames in one write (one system call, not one each): a subscriber that fell
        behind gets what waited for it at the cost of a single send."""
        if len(frames) == 1:
            await self.ws.send_str(frames[0])
            return
        transport = self.request.transport
        if transport is None or transport.is_closing() or self.ws.closed:
            raise ConnectionResetError("Cannot write to closing transport")
        transport.writelines([piece for frame in frames for piece in text_frame(frame)])
        if transport.get_write_buffer_size() > DRAIN_ABOVE:
            await self.ws.drain()

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
        await session.close()
    return ws
