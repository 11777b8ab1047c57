"""JSON-RPC 2.0 framing: decode a frame into requests (or a batch), encode replies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from middlewared import jsonc
from middlewared.errors import InvalidRequest, MiddlewareError, ParseError

_NO_ID = object()


@dataclass(slots=True)
class Request:
    """A well-formed call. ``notification`` calls get no reply."""

    method: str
    params: Any
    id: Any
    notification: bool


@dataclass(slots=True)
class BadMessage:
    """A member that is not a valid request: answered with this error and a null id."""

    error: MiddlewareError
    id: Any = None


Message = Request | BadMessage


@dataclass(slots=True)
class Frame:
    """What one text frame held: one message, or a batch of them."""

    messages: list[Message]
    batch: bool


def _valid_id(value: Any) -> bool:
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, int | float) and not isinstance(value, bool))
    )


def parse_message(obj: Any) -> Message:
    if not isinstance(obj, dict):
        return BadMessage(InvalidRequest("Request must be a JSON object"))
    msg_id = obj.get("id", _NO_ID)
    if msg_id is not _NO_ID and not _valid_id(msg_id):
        return BadMessage(InvalidRequest("'id' must be a string, a number or null"))
    reply_id = None if msg_id is _NO_ID else msg_id
    if obj.get("jsonrpc") != "2.0":
        return BadMessage(InvalidRequest("'jsonrpc' must be exactly \"2.0\""), reply_id)
    method = obj.get("method")
    if not isinstance(method, str):
        return BadMessage(InvalidRequest("'method' must be a string"), reply_id)
    params = obj.get("params")
    if params is not None and not isinstance(params, list | dict):
        return BadMessage(InvalidRequest("'params' must be an array or an object"), reply_id)
    return Request(method, params, reply_id, msg_id is _NO_ID)


def _has_big_id(obj: Any) -> bool:
    if isinstance(obj, dict):  # the common frame: no list or generator made for it
        return _big(obj.get("id"))
    return isinstance(obj, list) and any(isinstance(m, dict) and _big(m.get("id")) for m in obj)


def _big(value: Any) -> bool:
    return isinstance(value, float) and abs(value) >= 2**63


def parse_frame(data: str | bytes) -> Frame:
    """Decode one frame. Never raises: a bad frame becomes a BadMessage."""
    try:
        obj = jsonc.loads(data)
    except (jsonc.JSONDecodeError, UnicodeDecodeError) as e:
        return Frame([BadMessage(ParseError(f"Invalid JSON: {e}"))], False)
    if _has_big_id(obj):
        # orjson reads integers past 64 bits as floats; ids must come back exactly.
        try:
            obj = jsonc.loads_exact(data)
        except jsonc.JSONDecodeError as e:
            error = ParseError(f"Invalid JSON (read again for its id past 64 bits): {e}")
            return Frame([BadMessage(error)], False)
    if isinstance(obj, list):
        if not obj:
            return Frame([BadMessage(InvalidRequest("Empty batch"))], False)
        return Frame([parse_message(m) for m in obj], True)
    return Frame([parse_message(obj)], False)


def result_reply(msg_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "result": result, "id": msg_id}


def error_reply(msg_id: Any, error: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "error": error, "id": msg_id}


def encode(reply: dict[str, Any] | list[dict[str, Any]]) -> str:
    return jsonc.dumps(reply)
