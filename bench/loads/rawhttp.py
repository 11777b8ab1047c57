"""A minimal HTTP/1.1 keep-alive client on asyncio's protocol callbacks, for closed loops of
one prepared request: each response (its status line and Content-Length read, nothing
else) sends the next request from the callback, with no task, future or header parsing per
request, so the client costs a small fraction of the server it drives."""

from __future__ import annotations

import asyncio
import time
from typing import cast

LENGTH = b"\r\ncontent-length:"


class HttpLoop(asyncio.Protocol):
    """One connection sending ``request`` again as soon as each response is complete, until
    the deadline; latencies of every response and counts by status."""

    def __init__(self, request: bytes, lat: list[float], statuses: dict[int, int]) -> None:
        self.request = request
        self.lat = lat
        self.statuses = statuses
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.deadline = 0.0
        self.sent_at = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ConnectionError(f"connection lost: {exc}"))

    def start(self, deadline: float) -> None:
        assert self.transport is not None
        self.deadline = deadline
        self.done = asyncio.get_running_loop().create_future()
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            i = head.find(LENGTH)
            if i < 0:
                raise ValueError("a response without Content-Length")
            j = head.find(b"\r\n", i + 2)
            length = int(head[i + len(LENGTH) : j if j >= 0 else None])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            status = int(head[9:12])
            del self.buf[:total]
            self._response(status)

    def _response(self, status: int) -> None:
        now = time.perf_counter()
        self.lat.append(now - self.sent_at)
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if now < self.deadline:
            self.sent_at = now
            assert self.transport is not None
            self.transport.write(self.request)
        elif not self.done.done():
            self.done.set_result(None)


def post(host: str, port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """The bytes of one POST request on a keep-alive connection."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def open_loops(
    host: str, port: int, count: int, request: bytes, lat: list[float], statuses: dict[int, int]
) -> list[HttpLoop]:
    running = asyncio.get_running_loop()
    loops = []
    for _ in range(count):
        _transport, proto = await running.create_connection(
            lambda: HttpLoop(request, lat, statuses), host, port
        )
        loops.append(proto)
    return loops


async def run_for(loops: list[HttpLoop], seconds: float) -> None:
    """Every connection in its closed loop for ``seconds`` (the last responses awaited)."""
    deadline = time.perf_counter() + seconds
    for one in loops:
        one.start(deadline)
    await asyncio.wait_for(asyncio.gather(*(one.done for one in loops)), seconds + 60)


def close(loops: list[HttpLoop]) -> None:
    for one in loops:
        if one.transport is not None:
            one.transport.close()
