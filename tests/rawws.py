"""A WebSocket client on a bare socket, for tests that need frames no library sends (unmasked,
fragmented, cut short) or a client that reads only when told to."""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import struct
from typing import Any, Protocol

from tests.rpcsync import TIMEOUT


class Listening(Protocol):
    """Where a server listens (a ServerProc, or a server of the test's own)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


def ws_frame(
    payload: bytes,
    opcode: int = 1,
    *,
    fin: bool = True,
    masked: bool = True,
    declared: int | None = None,
) -> bytes:
    """A client frame, masked with a zero key (the bytes go as they are) unless ``masked`` is
    false; ``declared`` claims another payload length than the bytes given (a frame that is
    still coming)."""
    n = len(payload) if declared is None else declared
    first = (0x80 if fin else 0) | opcode
    mask = 0x80 if masked else 0
    if n < 126:
        head = struct.pack("!BB", first, mask | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, mask | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask | 127, n)
    return head + (b"\0\0\0\0" if masked else b"") + payload


def request_frame(msg_id: int, method: str, *params: Any) -> bytes:
    body = {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": list(params)}
    return ws_frame(json.dumps(body).encode())


class RawWs:
    """A WebSocket client on a bare socket: it reads only when told to, so it can sit on
    unread data (with a small receive buffer) or vanish at any byte."""

    def __init__(self, srv: Listening, rcvbuf: int | None = None) -> None:
        self.srv = srv
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect((srv.host, srv.port))
        self.buf = b""
        self.ids = itertools.count(1)
        self.received = 0

    def upgrade_request(self) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET /api/current HTTP/1.1\r\nHost: {self.srv.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def handshake(self, then: bytes = b"") -> RawWs:
        """Upgrade; ``then`` goes in the same write as the request (bytes that arrive with
        the upgrade)."""
        self.sock.sendall(self.upgrade_request() + then)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return self

    def _fill(self) -> None:
        chunk = self.sock.recv(256 * 1024)
        if not chunk:
            raise EOFError("the server closed the connection")
        self.received += len(chunk)
        self.buf += chunk

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame (the server does not fragment)."""
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._take(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._take(8))
        return b0 & 0x0F, self._take(n)

    def send(self, msg_id: int, method: str, *params: Any) -> int:
        self.sock.sendall(request_frame(msg_id, method, *params))
        return msg_id

    def call(self, method: str, *params: Any) -> int:
        return self.send(next(self.ids), method, *params)

    def reply(self, msg_id: int) -> dict[str, Any]:
        while True:
            opcode, payload = self.read_frame()
            if opcode == 8:
                raise EOFError(f"closed: {close_code(payload)}")
            msg = json.loads(payload)
            if isinstance(msg, dict) and msg.get("id") == msg_id:
                return msg

    def login(self, password: str) -> RawWs:
        assert self.reply(self.call("auth.login", "root", password))["result"] is True
        return self

    def close_code(self) -> int | None:
        """Read on to the server's close frame and return its code (other frames skipped)."""
        while True:
            opcode, payload = self.read_frame()
            if opcode == 8:
                return close_code(payload)

    def reset(self) -> None:
        """Vanish with a TCP reset (SO_LINGER 0), as a killed client does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def close_code(payload: bytes) -> int | None:
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
