"""The JSON-RPC reply every echo reference sends: parse the call, answer it directly."""

from __future__ import annotations

from typing import Any

import orjson


def reply(data: str | bytes) -> str:
    """``core.ping`` answers "pong"; anything else answers its first parameter."""
    call: dict[str, Any] = orjson.loads(data)
    params = call.get("params") or [None]
    result = "pong" if call.get("method") == "core.ping" else params[0]
    return orjson.dumps({"jsonrpc": "2.0", "result": result, "id": call.get("id")}).decode()
