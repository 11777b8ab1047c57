"""Connections that never log in cannot starve those that have: header and login deadlines,
caps per address and in all, and file descriptors kept in reserve under a real ``ulimit -n``.

Each test waits for the events it checks (a socket's end, a close frame), never for time.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import struct
import time
from collections.abc import Callable

import pytest
from websockets.exceptions import InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from tests.rawws import RawWs
from tests.rpcsync import TIMEOUT, Rpc, wait_for
from tests.serverproc import ServerProc

CLOSE_LOGIN_TIMEOUT = 4001
DEADLINES = ("--header-timeout", "2", "--login-timeout", "2")
HALF_REQUEST = b"GET /api/current HTTP/1.1\r\nHost: middlewared\r\nUpgrade: webso"


def nofile(n: int) -> Callable[[], None]:
    """Run in the server's process before it starts: ``ulimit -n n``."""

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return lower


def half_request(srv: ServerProc, source: str = "127.0.0.1") -> socket.socket:
    """A connection that sends part of its request's headers, then nothing."""
    sock = socket.create_connection((srv.host, srv.port), TIMEOUT, (source, 0))
    try:
        sock.sendall(HALF_REQUEST)
    except OSError:
        pass  # dropped at once: the end is what the test waits for anyway
    return sock


def idle_websocket(srv: ServerProc) -> RawWs | None:
    """An upgraded WebSocket that never logs in; None if the server would not take it."""
    raw = RawWs(srv)
    try:
        return raw.handshake()
    except (OSError, EOFError, AssertionError):
        raw.close()
        return None


def read_to_end(socks: list[socket.socket], timeout: float = TIMEOUT) -> list[bytes]:
    """Wait until the server has ended every connection; what each received, in order.
    The sockets are closed on return."""
    selector = selectors.DefaultSelector()
    by_fd = {sock.fileno(): sock for sock in socks}
    got = dict.fromkeys(by_fd, b"")
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    left = set(got)
    deadline = time.monotonic() + timeout
    while left:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{len(left)} of {len(socks)} connections are still open"
        for key, _ in selector.select(remaining):
            sock = by_fd[key.fd]
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                got[sock.fileno()] += chunk
            else:
                selector.unregister(sock)
                left.discard(sock.fileno())
    selector.close()
    received = [got[sock.fileno()] for sock in socks]
    for sock in socks:
        sock.close()
    return received


def close_code_in(data: bytes) -> int | None:
    """The code of the first close frame in server frames ``data``."""
    pos = 0
    while pos + 2 <= len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            (n,) = struct.unpack("!H", data[pos : pos + 2])
            pos += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[pos : pos + 8])
            pos += 8
        if opcode == 8:
            return int(struct.unpack("!H", data[pos : pos + 2])[0]) if n >= 2 else None
        pos += n
    return None


def accept_errors(srv: ServerProc) -> list[str]:
    return [
        line
        for line in srv.output
        if "accept" in line and ("Too many open files" in line or "out of system" in line)
    ]


def ended_within(socks: list[socket.socket], deadline: float) -> int:
    """How many of ``socks`` the server ended (EOF or reset) before ``deadline``."""
    ended = 0
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                peer = key.fileobj
                assert isinstance(peer, socket.socket)
                try:
                    data = peer.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(peer)
                    ended += 1
    return ended


def response_to(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """Send a request on ``sock`` and read the whole answer: (status, JSON body)."""
    data = b""
    with sock:
        sock.sendall(b"GET /api/current HTTP/1.1\r\nHost: middlewared\r\n\r\n")
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


# -- deadlines ----------------------------------------------------------------------------------


def test_idle_connections_are_dropped_by_their_deadlines(
    make_server: Callable[..., ServerProc],
) -> None:
    srv = make_server(*DEADLINES)
    admin = Rpc(srv.ws_url, srv.password)
    try:
        half = half_request(srv)
        idle = idle_websocket(srv)
        assert idle is not None
        # A keep-alive connection idle after its first answer must send its next headers
        # within the same deadline.
        kept = socket.create_connection((srv.host, srv.port), TIMEOUT)
        kept.sendall(b"GET /_download/1 HTTP/1.1\r\nHost: middlewared\r\n\r\n")
        to_half, to_idle, to_kept = read_to_end([half, idle.sock, kept])
        assert to_half == b""
        assert close_code_in(idle.buf + to_idle) == CLOSE_LOGIN_TIMEOUT
        assert to_kept.startswith(b"HTTP/1.1 404")
        # The logged-in connection, older than all of them, is still served.
        assert admin.result("core.ping") == "pong"
    finally:
        admin.close()


# -- caps ---------------------------------------------------------------------------------------


def test_caps_on_connections_not_logged_in(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server(
        "--max-unauthenticated-per-address", "4", "--max-unauthenticated", "6",
        "--header-timeout", "60",
    )  # fmt: skip
    admin = Rpc(srv.ws_url, srv.password)
    held = [half_request(srv) for _ in range(3)]
    try:
        # The 4th from this address is a WebSocket not logged in yet: the 5th is refused.
        user = Rpc(srv.ws_url)
        status, body = response_to(socket.create_connection((srv.host, srv.port), TIMEOUT))
        assert status == 503
        assert body == {
            "error": "Too many connections not logged in from this address",
            "status": 503,
        }
        with pytest.raises(InvalidStatus) as refused:
            connect(srv.ws_url, open_timeout=TIMEOUT)
        assert refused.value.response.status_code == 503
        # Once logged in, it no longer counts: another connection from here is served.
        assert user.result("auth.login", "root", srv.password) is True
        wait_for(lambda: _served(srv), "the place a login freed")
        # Every address counts towards the total: 3 more from 127.0.0.2 reach it, and one
        # from 127.0.0.3 is refused.
        held += [half_request(srv, "127.0.0.2") for _ in range(3)]
        status, body = response_to(
            socket.create_connection((srv.host, srv.port), TIMEOUT, ("127.0.0.3", 0))
        )
        assert (status, body["error"]) == (503, "Too many connections not logged in")
        # Those logged in are not affected.
        assert admin.result("core.ping") == "pong"
        assert user.result("core.ping") == "pong"
        user.close()
    finally:
        admin.close()
        for sock in held:
            sock.close()
    wait_for(lambda: _served(srv), "new connections served once the others left")


def _served(srv: ServerProc) -> bool:
    try:
        rpc = Rpc(srv.ws_url)
    except (InvalidHandshake, OSError):
        return False
    try:
        return bool(rpc.result("core.ping") == "pong")
    finally:
        rpc.close()


# -- under a real ulimit -n ---------------------------------------------------------------------

NOFILE = 256
FLOOD = 300
# Long enough for the whole flood to be open before the first of it is dropped (the kernel
# holds back connections past the listen backlog for a second or more).
FLOOD_DEADLINES = ("--header-timeout", "6", "--login-timeout", "6")


def test_a_flood_that_never_logs_in_leaves_the_logged_in_working(
    make_server: Callable[..., ServerProc],
) -> None:
    srv = make_server(*FLOOD_DEADLINES, preexec=nofile(NOFILE))
    admin = Rpc(srv.ws_url, srv.password)
    try:
        halves: list[socket.socket] = []
        websockets: list[RawWs] = []
        for i in range(FLOOD):
            if i % 2:
                halves.append(half_request(srv))
            elif (ws := idle_websocket(srv)) is not None:
                websockets.append(ws)
        # Logged-in work needs descriptors of its own (each job writes a log file).
        for _ in range(5):
            assert admin.result("test.logs", 3) == 3
        assert admin.result("core.ping") == "pong"
        flooded = time.monotonic()
        got = read_to_end([ws.sock for ws in websockets] + halves)
        print(
            f"{FLOOD} connections under ulimit -n {NOFILE}: {len(websockets)} WebSockets "
            f"upgraded, all {len(got)} ended {time.monotonic() - flooded:.1f} s after the "
            f"logged-in calls; server log: {len(srv.output)} lines"
        )
        assert websockets, "no WebSocket was admitted"
        for ws, data in zip(websockets, got, strict=False):
            assert close_code_in(ws.buf + data) == CLOSE_LOGIN_TIMEOUT
        assert admin.result("test.logs", 3) == 3
    finally:
        admin.close()
    wait_for(lambda: _served(srv), "new connections served once the flood is gone")
    assert accept_errors(srv) == []
    dropped = [line for line in srv.output if "dropping new connections" in line]
    assert 1 <= len(dropped) <= 2, dropped


def test_accept_errors_are_logged_once_an_interval(make_server: Callable[..., ServerProc]) -> None:
    # With no descriptor kept in reserve, the flood runs the server out of them: accept fails
    # (EMFILE) again and again until the header deadline frees some; logged once. asyncio's
    # loop reports each failure; uvloop's (libuv) closes what it cannot take (the next test).
    srv = make_server(
        *FLOOD_DEADLINES,
        "--fd-reserve",
        "0",
        "--event-loop",
        "asyncio",
        preexec=nofile(NOFILE),
    )
    halves = [half_request(srv) for _ in range(FLOOD)]
    read_to_end(halves)
    wait_for(lambda: _served(srv), "new connections served once the flood is gone")
    errors = accept_errors(srv)
    assert len(errors) == 1, errors


def test_without_a_reserve_uvloop_closes_what_it_cannot_accept(
    make_server: Callable[..., ServerProc],
) -> None:
    # libuv keeps one descriptor aside and, out of them, accepts and closes at once: the flood
    # ends without spinning and the server serves again, but nothing says so (the reserve does).
    pytest.importorskip("uvloop", reason="uvloop is a dependency where it has wheels")
    srv = make_server(
        *FLOOD_DEADLINES,
        "--fd-reserve",
        "0",
        "--event-loop",
        "uvloop",
        preexec=nofile(NOFILE),
    )
    started = time.monotonic()
    halves = [half_request(srv) for _ in range(FLOOD)]
    # The header deadline (6 s) ends the connections the server took; before half of it has
    # passed, only those libuv could not take have ended.
    early = ended_within(halves, started + 3.0)
    assert early, "no connection of the flood was closed before the header deadline"
    read_to_end(halves)
    wait_for(lambda: _served(srv), "new connections served once the flood is gone")
    assert accept_errors(srv) == []
