"""Admission of new connections: caps on those not logged in, file descriptors kept for
logged-in work, and the deadlines that drop idle connections."""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from middlewared.config import ConnectionLimits
from middlewared.http.errors import error_body
from middlewared.http.fds import FdBudget, Recurring

log = logging.getLogger(__name__)

# A refused connection has this long to send its request's headers (it is answered 503 when
# they are in), then as long again to read the answer, before its socket is closed.
REFUSAL_SECONDS = 1.0
# Headers longer than this are not waited for: the 503 goes at once.
REFUSAL_READ_LIMIT = 16 * 1024
RETRY_AFTER_SECONDS = 5


class Stage(enum.Enum):
    # Its first request's headers are not all in yet: counted, under the header deadline.
    HEADERS = "headers"
    # Serving requests, or idle between them (aiohttp's keep-alive timeout applies).
    SERVING = "serving"
    # A WebSocket that has not logged in: counted, under the login deadline.
    LOGIN = "login"
    LOGGED_IN = "logged in"
    CLOSED = "closed"


COUNTED = (Stage.HEADERS, Stage.LOGIN)


@dataclass(eq=False)
class Conn:
    """One admitted connection as admission sees it."""

    key: str
    transport: asyncio.Transport
    stage: Stage = Stage.HEADERS
    deadline: asyncio.TimerHandle | None = None


def address_key(peername: object) -> str:
    """What the per-address cap counts a connection against: its IP address; for IPv6 its
    /64, which one host usually holds whole."""
    if not isinstance(peername, tuple) or not peername:
        return "local"
    try:
        ip = ipaddress.ip_address(peername[0])
    except ValueError:
        return str(peername[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def refusal_response(reason: str) -> bytes:
    body = error_body(503, reason).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: {RETRY_AFTER_SECONDS}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class Admission:
    """Decides at accept whether a connection is served, and keeps the deadlines and counts of
    those not logged in. ``handlers`` makes the protocol that serves an admitted connection."""

    def __init__(
        self,
        limits: ConnectionLimits,
        handlers: Callable[[], asyncio.Protocol],
        budget: FdBudget | None = None,
    ) -> None:
        self.limits = limits
        self.handlers = handlers
        self.budget = budget if budget is not None else FdBudget(limits.fd_reserve)
        self.recurring = Recurring()
        self._conns: dict[asyncio.BaseTransport, Conn] = {}
        self._pending = 0
        self._pending_at: dict[str, int] = {}

    def protocol(self) -> asyncio.Protocol:
        """The protocol factory to give ``loop.create_server``."""
        return Door(self)

    @property
    def pending(self) -> int:
        """Connections not logged in, now."""
        return self._pending

    # -- at accept ------------------------------------------------------------------------
    def admit(self, transport: asyncio.Transport) -> Conn | str | None:
        """The admitted connection's record; or the reason it is refused (it gets a 503);
        or None when it must be dropped at once (no descriptor to spare for it)."""
        if not self.budget.room():
            self.recurring.warn(
                "fds",
                "dropping new connections: %d of %d file descriptors open, %d kept for "
                "logged-in work (--fd-reserve)",
                self.budget.open,
                self.budget.limit,
                self.budget.reserve,
            )
            return None
        key = address_key(transport.get_extra_info("peername"))
        if self._pending_at.get(key, 0) >= self.limits.max_unauthenticated_per_address:
            self.recurring.warn(
                "address",
                "refusing connections from %s: %d not logged in (--max-unauthenticated-per-"
                "address)",
                key,
                self._pending_at[key],
            )
            return "Too many connections not logged in from this address"
        if self._pending >= self.limits.max_unauthenticated:
            self.recurring.warn(
                "total",
                "refusing connections: %d not logged in (--max-unauthenticated)",
                self._pending,
            )
            return "Too many connections not logged in"
        conn = Conn(key, transport)
        self._conns[transport] = conn
        self._count(conn, 1)
        conn.deadline = asyncio.get_running_loop().call_later(
            self.limits.header_timeout_seconds, self._headers_late, conn
        )
        return conn

    # -- as requests come -----------------------------------------------------------------
    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        conn = self._conns.get(transport) if transport is not None else None
        if conn is not None and conn.stage is Stage.HEADERS:
            self._leave(conn, Stage.SERVING)

    def await_login(
        self, transport: asyncio.BaseTransport | None, on_late: Callable[[], None]
    ) -> Callable[[], None]:
        """The WebSocket on ``transport`` must log in within the login timeout, or ``on_late``
        is called; returns what to call once it has logged in (or ended: no deadline then)."""
        conn = self._conns.get(transport) if transport is not None else None
        if conn is None or conn.stage is not Stage.SERVING:
            return _nothing
        conn.stage = Stage.LOGIN
        self._count(conn, 1)
        conn.deadline = asyncio.get_running_loop().call_later(
            self.limits.login_timeout_seconds, self._login_late, conn, on_late
        )

        def logged_in() -> None:
            if conn.stage is Stage.LOGIN:
                self._leave(conn, Stage.LOGGED_IN)

        return logged_in

    def closed(self, transport: asyncio.BaseTransport) -> None:
        conn = self._conns.pop(transport, None)
        if conn is not None:
            self._leave(conn, Stage.CLOSED)

    # -- deadlines and counts -------------------------------------------------------------
    def _headers_late(self, conn: Conn) -> None:
        conn.deadline = None
        if conn.stage is Stage.HEADERS:
            log.debug("connection from %s: no request within the header timeout", conn.key)
            conn.transport.abort()

    def _login_late(self, conn: Conn, on_late: Callable[[], None]) -> None:
        conn.deadline = None
        if conn.stage is Stage.LOGIN:
            log.debug("connection from %s: not logged in within the login timeout", conn.key)
            on_late()

    def _leave(self, conn: Conn, stage: Stage) -> None:
        if conn.deadline is not None:
            conn.deadline.cancel()
            conn.deadline = None
        if conn.stage in COUNTED:
            self._count(conn, -1)
        conn.stage = stage

    def _count(self, conn: Conn, step: int) -> None:
        self._pending += step
        n = self._pending_at.get(conn.key, 0) + step
        if n:
            self._pending_at[conn.key] = n
        else:
            del self._pending_at[conn.key]


def _nothing() -> None:
    return None


class Refusal:
    """A connection refused at accept: its request's headers are read (and dropped), then it
    is answered 503 and closed. Answering only once the request is in keeps clients that do
    not expect an early answer from failing to read it."""

    def __init__(self, transport: asyncio.Transport, reason: str) -> None:
        self._transport = transport
        self._reason = reason
        self._seen = b""
        self._read = 0
        self._answered = False
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_SECONDS, self._expired)

    def data_received(self, data: bytes) -> None:
        if self._answered:
            return
        self._seen = self._seen[-3:] + data
        self._read += len(data)
        if b"\r\n\r\n" in self._seen or self._read >= REFUSAL_READ_LIMIT:
            self.answer()

    def answer(self) -> None:
        self._answered = True
        transport = self._transport
        transport.write(refusal_response(self._reason))
        if transport.can_write_eof():
            transport.write_eof()
        self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_SECONDS, transport.abort)

    def _expired(self) -> None:
        # No request within the time: nobody to answer.
        self._transport.abort()

    def cancel(self) -> None:
        self._timer.cancel()


class Door(asyncio.Protocol):
    """The protocol asyncio makes for each accepted socket: it admits the connection and
    hands every event on to the protocol that serves it, or refuses it."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._transport: asyncio.Transport | None = None
        self._inner: asyncio.Protocol | None = None
        self._refusal: Refusal | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tcp = cast(asyncio.Transport, transport)
        self._transport = tcp
        admission = self._admission
        admission.budget.opened()
        verdict = admission.admit(tcp)
        if verdict is None:
            tcp.abort()
        elif isinstance(verdict, str):
            self._refusal = Refusal(tcp, verdict)
        else:
            self._inner = admission.handlers()
            self._inner.connection_made(tcp)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
        elif self._refusal is not None:
            self._refusal.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        admission = self._admission
        admission.budget.closed()
        if self._transport is not None:
            admission.closed(self._transport)
        if self._refusal is not None:
            self._refusal.cancel()
        if self._inner is not None:
            self._inner.connection_lost(exc)
