"""Client WebSocket frame headers checked as bytes arrive: masking, and message size."""

from __future__ import annotations

from typing import Protocol

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009

# The longest frame header a client sends: 2 bytes, an 8-byte length, a 4-byte mask key.
_MAX_HEADER = 14
_MAX_CONTROL_PAYLOAD = 125
# First bytes of a final, unextended text or binary frame.
_WHOLE_SMALL = (0x81, 0x82)

Violation = tuple[int, str]

UNMASKED: Violation = (CLOSE_PROTOCOL_ERROR, "Client frames must be masked")
CONTROL_TOO_LONG: Violation = (CLOSE_PROTOCOL_ERROR, "Control frame too long")
TOO_BIG: Violation = (CLOSE_TOO_BIG, "Frame too large")


class FrameLimit(Protocol):
    """Whatever knows the limit that applies now (the session: smaller before login)."""

    @property
    def max_frame(self) -> int: ...


class FixedLimit:
    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame


class FrameGuard:
    """Walks the frame headers in a client's byte stream without copying payloads.

    A message's size is the running total of its frames, checked as each frame header
    arrives, so a connection never makes the server hold more than the limit that applies
    to it (aiohttp would otherwise assemble up to its own, after-login, limit first).
    """

    __slots__ = ("_head", "_message", "_skip", "_violation", "source")

    def __init__(self, source: FrameLimit) -> None:
        self.source = source
        # Payload bytes of the current frame still to pass.
        self._skip = 0
        # The start of a header cut by the end of a read.
        self._head = b""
        # Payload bytes of the unfinished (fragmented) data message so far.
        self._message = 0
        self._violation = TOO_BIG

    def check(self, data: bytes) -> Violation | None:
        """None while the stream keeps the rules; else the close code and reason."""
        n = len(data)
        skip = self._skip
        if skip >= n:
            self._skip = skip - n
            return None
        if not skip and n > 5 and not self._head:
            # The common read: one whole final text or binary frame of under 126 bytes.
            second = data[1]
            length = second & 0x7F
            if (
                second & 0x80
                and length < 126
                and length + 6 == n
                and data[0] in _WHOLE_SMALL
                and length <= self.source.max_frame
            ):
                self._message = 0
                return None
        pos = skip
        if self._head:
            pos = self._finish_head(data)
            if pos < 0:
                return None if pos == -1 else self._violation
        while pos < n:
            end = self._frame(data, pos, n)
            if end < 0:
                if end == -1:
                    self._head = data[pos:]
                    self._skip = 0
                    return None
                return self._violation
            pos = end
        self._skip = pos - n
        return None

    # -- one header -----------------------------------------------------------------------
    def _finish_head(self, data: bytes) -> int:
        """Complete a header cut by the previous read: where its payload ends in ``data``,
        -1 if still incomplete, -2 on a violation."""
        joined = self._head + data[: _MAX_HEADER - len(self._head)]
        before = len(self._head)
        end = self._frame(joined, 0, len(joined))
        if end == -1:
            self._head = joined
            return -1
        self._head = b""
        if end < 0:
            return end
        return end - before

    def _frame(self, data: bytes, pos: int, n: int) -> int:
        """The frame starting at ``pos``: where it ends (may be past ``n``), -1 when its
        header is not all here, -2 when it breaks a rule (reason in ``_violation``)."""
        if n - pos < 2:
            return -1
        first = data[pos]
        second = data[pos + 1]
        if not second & 0x80:
            self._violation = UNMASKED
            return -2
        length = second & 0x7F
        if length < 126:
            header = 6
        elif length == 126:
            header = 8
            if n - pos < header:
                return -1
            length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        else:
            header = 14
            if n - pos < header:
                return -1
            length = int.from_bytes(data[pos + 2 : pos + 10], "big")
        if n - pos < header:
            return -1
        opcode = first & 0x0F
        if opcode & 0x08:
            # Control frames (close, ping, pong) stand apart from messages.
            if length > _MAX_CONTROL_PAYLOAD:
                self._violation = CONTROL_TOO_LONG
                return -2
        else:
            # A continuation (0) adds to the message; a new text or binary frame starts one.
            total = self._message + length if opcode == 0 else length
            if total > self.source.max_frame:
                self._violation = TOO_BIG
                return -2
            self._message = 0 if first & 0x80 else total
        return pos + header + length
