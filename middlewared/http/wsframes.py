"""WebSocket text frames as a server sends them (RFC 6455 section 5.2): final, unmasked,
uncompressed (the server does not negotiate permessage-deflate)."""

from __future__ import annotations

import struct

_FIN_TEXT = 0x81
_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(text: str) -> tuple[bytes, bytes]:
    """(header, payload) of one text frame carrying ``text``."""
    payload = text.encode()
    n = len(payload)
    if n < 126:
        return _SHORT.pack(_FIN_TEXT, n), payload
    if n < 65536:
        return _MEDIUM.pack(_FIN_TEXT, 126, n), payload
    return _LONG.pack(_FIN_TEXT, 127, n), payload
