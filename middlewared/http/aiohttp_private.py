"""The one place that reaches into aiohttp's private parts (tests/unit/test_aiohttp_private.py
fails loudly when a release changes them): client frames pass a FrameGuard first."""

from __future__ import annotations

from typing import Any

from aiohttp import WebSocketError, web
from aiohttp.web_request import BaseRequest

from middlewared.http.frameguard import FrameGuard

# What a WebSocket reader answers once the stream is broken: end of input, nothing left over.
_STOP = (True, b"")


class GuardedReader:
    """Sits where aiohttp's protocol feeds its WebSocket reader: each read is checked by the
    guard (frame headers only, no copy) before the reader sees it."""

    __slots__ = ("_broken", "_check", "_feed", "_inner", "_queue")

    def __init__(self, inner: Any, guard: FrameGuard, queue: Any) -> None:
        self._inner = inner
        self._feed = inner.feed_data
        self._check = guard.check
        self._queue = queue
        self._broken = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self._broken:
            return _STOP
        bad = self._check(data)
        if bad is None:
            result: tuple[bool, bytes] = self._feed(data)
            return result
        # As aiohttp's reader does with the errors it finds itself: the response's receive()
        # gets the error and closes with its code.
        self._broken = True
        self._queue.set_exception(WebSocketError(bad[0], bad[1]))
        return _STOP

    def feed_eof(self) -> None:
        self._inner.feed_eof()


class GuardedWebSocketResponse(web.WebSocketResponse):
    """A WebSocket response whose client frames pass ``guard`` before aiohttp's reader."""

    def __init__(self, guard: FrameGuard, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.guard = guard

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: Any) -> None:
        handler = request.protocol
        # Bytes that came with the upgrade request are fed to the reader as it is installed:
        # take them first, so that they pass the guard too.
        tail: bytes = handler._message_tail
        handler._message_tail = b""
        super()._post_start(request, protocol, writer)
        reader = GuardedReader(handler._payload_parser, self.guard, self._reader)
        handler._payload_parser = reader
        if tail:
            eof, _ = reader.feed_data(tail)
            if eof:
                handler.close()
