"""GET /websocket: TrueNAS's older DDP-style protocol (its client's ``LegacyClient``, many
scripts). Translated at the edge, both ways, into the JSON-RPC the session speaks: the same
session, call path, permissions and limits as ``/api/current``.

In: ``connect`` -> ``connected`` (with a session id) or ``failed``; ``method`` -> the call;
``ping`` -> ``pong``; ``sub`` / ``unsub`` -> ``core.subscribe`` / ``core.unsubscribe``.
Out: a reply -> ``result`` (or its ``error`` in the legacy shape); ``collection_update`` ->
``added`` / ``changed`` / ``removed``; a subscription made -> ``ready``, refused or ended ->
``nosub``. Nothing but ``connect`` is read before ``connect``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from middlewared import jsonc
from middlewared.ws.session import Transport

log = logging.getLogger(__name__)

VERSION = "1"
# JSON-RPC ids of the calls a legacy sub/unsub becomes (never a legacy call's own id: those
# are sent as strings prefixed "m:").
_SUB, _UNSUB, _METHOD = "s:", "u:", "m:"


def _legacy_error(data: dict[str, Any] | None, code: int | None = None) -> dict[str, Any]:
    """A JSON-RPC error's data in the legacy shape (TrueNAS's LegacyClient reads ``error``,
    ``reason``, ``trace``, ``type`` and ``extra``)."""
    data = data or {}
    validation = code == -32602
    trace = data.get("trace")
    if validation and trace is None:
        # TrueNAS's LegacyClient raises ValidationErrors only for an error with a trace.
        trace = {"class": "ValidationErrors", "frames": [], "formatted": data.get("reason")}
    return {
        "error": data.get("error"),
        "errname": data.get("errname"),
        "type": "VALIDATION" if validation else None,
        "reason": data.get("reason"),
        "trace": trace,
        "extra": data.get("extra"),
    }


@dataclass
class LegacyState:
    connected: bool = False
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # Legacy subscription id -> (collection, our subscription id once made).
    subs: dict[str, tuple[str, str | None]] = field(default_factory=dict)


class LegacyTransport:
    """Wraps the real transport: every frame the session sends is translated."""

    def __init__(self, inner: Transport, state: LegacyState) -> None:
        self.inner = inner
        self.state = state

    async def send(self, frame: str) -> None:
        out = self.translate(frame)
        if out is not None:
            await self.inner.send(out)

    async def send_many(self, frames: list[str]) -> None:
        out = [t for t in map(self.translate, frames) if t is not None]
        if out:
            await self.inner.send_many(out)

    async def close(self, code: int, reason: str) -> None:
        await self.inner.close(code, reason)

    def abort(self) -> None:
        self.inner.abort()

    def translate(self, frame: str) -> str | None:
        msg = jsonc.loads(frame)
        if isinstance(msg, list):  # a batch reply: never asked for here
            return None
        method = msg.get("method")
        if method == "collection_update":
            return jsonc.dumps(msg["params"])
        if method == "notify_unsubscribed":
            params = msg["params"]
            ended = [k for k, (c, _) in self.state.subs.items() if c == params.get("collection")]
            for key in ended:
                del self.state.subs[key]
            return jsonc.dumps(
                {
                    "msg": "nosub",
                    "id": ended[0] if ended else None,
                    "collection": params.get("collection"),
                    "error": _legacy_error(params.get("error")),
                }
            )
        return self._reply(msg)

    def _reply(self, msg: dict[str, Any]) -> str | None:
        msg_id = msg.get("id")
        if not isinstance(msg_id, str) or len(msg_id) < 2:
            # A reply to something the legacy client did not send as such (a parse error).
            error = msg.get("error") or {}
            return jsonc.dumps(
                {"msg": "result", "id": None, "error": _legacy_error(error.get("data"))}
            )
        kind, legacy_id = msg_id[:2], msg_id[2:]
        error = msg.get("error")
        if kind == _METHOD:
            if error is not None:
                legacy = _legacy_error(error.get("data"), error.get("code"))
                return jsonc.dumps({"msg": "result", "id": legacy_id, "error": legacy})
            return jsonc.dumps({"msg": "result", "id": legacy_id, "result": msg.get("result")})
        collection = self.state.subs.get(legacy_id, ("", None))[0]
        if kind == _SUB:
            if error is not None:
                self.state.subs.pop(legacy_id, None)
                legacy = _legacy_error(error.get("data"), error.get("code"))
                return jsonc.dumps(
                    {"msg": "nosub", "id": legacy_id, "collection": collection, "error": legacy}
                )
            self.state.subs[legacy_id] = (collection, msg.get("result"))
            return jsonc.dumps({"msg": "ready", "subs": [legacy_id]})
        # An unsubscription done (or refused: the subscription was gone already).
        self.state.subs.pop(legacy_id, None)
        return jsonc.dumps({"msg": "nosub", "id": legacy_id, "collection": collection})


def translate_in(state: LegacyState, text: str) -> tuple[str | None, str | None]:
    """A legacy message: (JSON-RPC text for the session, or None; a direct answer, or None)."""
    try:
        msg = jsonc.loads(text)
    except ValueError:
        return None, _bad("Malformed JSON")
    if not isinstance(msg, dict):
        return None, _bad("A message is a JSON object")
    kind = msg.get("msg")
    if kind == "connect":
        if msg.get("version") != VERSION or VERSION not in (msg.get("support") or [VERSION]):
            return None, jsonc.dumps({"msg": "failed", "version": VERSION})
        state.connected = True
        return None, jsonc.dumps({"msg": "connected", "session": state.session_id})
    if not state.connected:
        return None, _bad("Send connect first")
    if kind == "ping":
        pong: dict[str, Any] = {"msg": "pong"}
        if "id" in msg:
            pong["id"] = msg["id"]
        return None, jsonc.dumps(pong)
    legacy_id = msg.get("id")
    if not isinstance(legacy_id, str | int) or isinstance(legacy_id, bool):
        return None, _bad(f"{kind!r} needs an id (a string)")
    legacy_id = str(legacy_id)
    if kind == "method":
        params = msg.get("params")
        call = {
            "jsonrpc": "2.0",
            "id": _METHOD + legacy_id,
            "method": msg.get("method"),
            "params": [] if params is None else params,
        }
        return jsonc.dumps(call), None
    if kind == "sub":
        name = msg.get("name")
        state.subs[legacy_id] = (str(name), None)
        call = {
            "jsonrpc": "2.0",
            "id": _SUB + legacy_id,
            "method": "core.subscribe",
            "params": [name],
        }
        return jsonc.dumps(call), None
    if kind == "unsub":
        ours = state.subs.get(legacy_id, ("", None))[1]
        call = {
            "jsonrpc": "2.0",
            "id": _UNSUB + legacy_id,
            "method": "core.unsubscribe",
            "params": [ours or ""],
        }
        return jsonc.dumps(call), None
    return None, _bad(f"Unknown msg {kind!r}")


def _bad(reason: str) -> str:
    error = {"error": 22, "errname": "EINVAL", "type": None, "reason": reason, "trace": None}
    return jsonc.dumps({"msg": "result", "id": None, "error": {**error, "extra": None}})
