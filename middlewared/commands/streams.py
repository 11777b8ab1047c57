"""A child's output and progress, read as they come: stdout and stderr cut into lines, each
stamped with the time and its stream, secrets masked; JSON progress lines from its progress
fd. Memory stays flat whatever the child writes: only an unfinished line is held, and one
longer than ``MAX_LINE`` is written out in pieces."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from middlewared import jsonc

MAX_LINE = 64 * 1024
MASK = b"********"
# What an error quotes of stderr: its last lines, at most this many bytes.
STDERR_TAIL_LINES = 10
STDERR_TAIL_BYTES = 2048

Sink = Callable[[bytes], None]


def stamp(label: str, now: float | None = None) -> bytes:
    """``2026-12-05T09:14:28.123Z stdout: `` (UTC)."""
    t = time.time() if now is None else now
    millis = int(t * 1000) % 1000
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(t))}.{millis:03d}Z {label}: ".encode()


class Lines:
    """Cuts a byte stream into lines and hands complete ones on, stamped and masked."""

    def __init__(
        self,
        label: str,
        sink: Sink,
        secrets: Sequence[bytes] = (),
        full: Callable[[int], bool] | None = None,
    ) -> None:
        self.label = label
        self.sink = sink
        # Asked before a chunk is cut and stamped: True when the sink keeps no more (it then
        # counted the chunk as dropped). Not asked once a tail is kept: stderr's is quoted.
        self.full = full
        self.secrets = [s for s in secrets if s]
        self._partial = b""
        self.tail: deque[bytes] | None = None

    def keep_tail(self) -> Lines:
        """Remember the last lines (stderr's, for the error that quotes them)."""
        self.tail = deque(maxlen=STDERR_TAIL_LINES)
        return self

    def feed(self, data: bytes) -> None:
        if self.full is not None and self.tail is None and self.full(len(data)):
            self._partial = b""
            return
        buf = self._partial + data if self._partial else data
        end = buf.rfind(b"\n")
        if end < 0:
            self._partial = buf
            if len(buf) > MAX_LINE:
                self._emit(buf + b"\n")
                self._partial = b""
            return
        self._partial = buf[end + 1 :]
        self._emit(buf[: end + 1])
        if len(self._partial) > MAX_LINE:
            self._emit(self._partial + b"\n")
            self._partial = b""

    def close(self) -> None:
        """The stream ended: an unfinished last line is written as it is."""
        if self._partial:
            self._emit(self._partial + b"\n")
            self._partial = b""

    def _emit(self, lines: bytes) -> None:
        for secret in self.secrets:
            lines = lines.replace(secret, MASK)
        prefix = stamp(self.label)
        self.sink(prefix + lines[:-1].replace(b"\n", b"\n" + prefix) + b"\n")
        if self.tail is not None:
            self.tail.extend(lines[-STDERR_TAIL_BYTES:].splitlines()[-STDERR_TAIL_LINES:])

    def tail_text(self) -> str:
        text = b"\n".join(self.tail or ())[-STDERR_TAIL_BYTES:]
        return text.decode("utf-8", "replace")


class Progress:
    """JSON lines from the progress fd: ``{"percent", "description", "extra"}``, each key
    optional. A line that is not such an object is reported (``bad``) and skipped."""

    def __init__(self, report: Callable[[dict[str, Any]], None], bad: Callable[[str], None]):
        self.report = report
        self.bad = bad
        self._partial = b""

    def feed(self, data: bytes) -> None:
        buf = self._partial + data
        *lines, self._partial = buf.split(b"\n")
        if len(self._partial) > MAX_LINE:
            self.bad(f"a progress line longer than {MAX_LINE} bytes was skipped")
            self._partial = b""
        for line in lines:
            if line.strip():
                self._line(line)

    def close(self) -> None:
        if self._partial.strip():
            self._line(self._partial)
        self._partial = b""

    def _line(self, line: bytes) -> None:
        try:
            value = jsonc.loads(line)
        except ValueError:
            self.bad(f"not JSON: {line[:200]!r}")
            return
        reason = _progress_error(value)
        if reason:
            self.bad(f"{reason}: {line[:200]!r}")
            return
        self.report(value)


def _progress_error(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "not a JSON object"
    unknown = set(value) - {"percent", "description", "extra"}
    if unknown:
        return f"unknown keys {sorted(unknown)}"
    percent = value.get("percent")
    if percent is not None and (isinstance(percent, bool) or not isinstance(percent, int | float)):
        return "percent is not a number"
    description = value.get("description")
    if description is not None and not isinstance(description, str):
        return "description is not a string"
    return None


class _Reader(asyncio.Protocol):
    def __init__(self, feed: Callable[[bytes], None], close: Callable[[], None]) -> None:
        self._feed = feed
        self._close = close
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._feed(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._close()
        if not self.done.done():
            self.done.set_result(None)


class Pipes:
    """The read ends of a child's pipes, read until every writer has closed them."""

    def __init__(self) -> None:
        self._readers: list[_Reader] = []

    async def add(self, fd: int, feed: Callable[[bytes], None], close: Callable[[], None]) -> None:
        reader = _Reader(feed, close)
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_read_pipe(lambda: reader, os.fdopen(fd, "rb", buffering=0))
        except BaseException:
            os.close(fd)
            raise
        self._readers.append(reader)

    async def ended(self, timeout: float | None = None) -> bool:
        """Whether every pipe reached its end (within ``timeout``)."""
        waiting = [r.done for r in self._readers if not r.done.done()]
        if not waiting:
            return True
        _, pending = await asyncio.wait(waiting, timeout=timeout)
        return not pending

    def close(self) -> None:
        """Stop reading (what is left in the pipes is dropped)."""
        for reader in self._readers:
            if reader.transport is not None:
                with contextlib.suppress(Exception):
                    reader.transport.close()
