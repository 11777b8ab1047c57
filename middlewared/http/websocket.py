"""GET /api/current: upgrade to a WebSocket and feed its frames to a Session."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable

from aiohttp import WSMsgType, web

from middlewared.app import Middleware
from middlewared.http import unixsock
from middlewared.http.aiohttp_private import GuardedWebSocketResponse
from middlewared.http.frameguard import FixedLimit, FrameGuard
from middlewared.http.keys import ADMISSION, MIDDLEWARE
from middlewared.http.wsframes import text_frame
from middlewared.ws.session import Session

log = logging.getLogger(__name__)

# Documented: the connection did not log in within --login-timeout.
CLOSE_LOGIN_TIMEOUT = 4001


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
    """The peer's IP address, or ``unix:uid=N`` on the local socket (the login throttle
    counts each uid on its own)."""
    local = unixsock.address(request.transport)
    if local is not None:
        return local
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else "unknown"


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    app: Middleware = request.app[MIDDLEWARE]
    limits = app.config.limits
    # The guard enforces masking and the frame limit that applies now (smaller before login)
    # while frames arrive; aiohttp's own limit, the larger one, stays as a backstop.
    guard = FrameGuard(FixedLimit(limits.max_frame_unauthenticated))
    ws = GuardedWebSocketResponse(
        guard, max_msg_size=limits.max_frame + 1, heartbeat=None, compress=False, timeout=2.0
    )
    await ws.prepare(request)
    session = Session(app, AiohttpTransport(ws, request), client_address(request))
    session.tls = request.transport is not None and (
        request.transport.get_extra_info("ssl_object") is not None
    )
    guard.source = session
    closing: list[asyncio.Task[None]] = []
    settle = _login_deadline(request, session, closing)
    peer = unixsock.peer_identity(app.directory, app.config.transports, request.transport)
    if peer is not None and session.login(peer) is not None:
        log.info("session %s: logged in by its uid", session.remote)
    session.start()
    # The messages are read in a task of their own: under the handler, each one would
    # resume every middleware's frame too (1 µs of a 19 µs call). Cancelling the handler
    # (the connection is gone) cancels the task it awaits.
    reader = asyncio.create_task(_read(ws, session), name=f"ws-{session.remote}")
    try:
        await reader
    finally:
        settle()
        await asyncio.gather(*closing, return_exceptions=True)
        await session.close()
    return ws


async def _read(ws: web.WebSocketResponse, session: Session) -> None:
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            await session.on_text(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await session.on_binary()
        elif msg.type is WSMsgType.ERROR:
            log.info("session %s: %s", session.remote, ws.exception())
            break


def _login_deadline(
    request: web.Request, session: Session, closing: list[asyncio.Task[None]]
) -> Callable[[], None]:
    """Close the session with 4001 unless it logs in within --login-timeout; returns what to
    call once it has logged in or ended."""

    def late() -> None:
        closing.append(
            asyncio.create_task(session.close_within(CLOSE_LOGIN_TIMEOUT, "Login timeout"))
        )

    settle = request.app[ADMISSION].await_login(request.transport, late)
    session.on_login = settle
    return settle
