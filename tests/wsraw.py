"""A raw JSON-RPC WebSocket connection for tests that check exact frames."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

TIMEOUT = 30.0


class Raw:
    """Sends frames, reads frames; keeps notifications apart from replies."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.notifications: list[dict[str, Any]] = []
        self.replies: dict[Any, dict[str, Any]] = {}

    async def send(self, obj: Any) -> None:
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv(self, timeout: float = TIMEOUT) -> Any:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        return json.loads(frame)

    async def _pump(self, timeout: float) -> None:
        msg = await self.recv(timeout)
        if isinstance(msg, dict) and "method" in msg and "id" not in msg:
            self.notifications.append(msg)
        elif isinstance(msg, dict):
            self.replies[msg.get("id")] = msg
        else:
            self.replies[("batch", len(self.replies))] = {"batch": msg}

    async def request(self, method: str, *params: Any) -> Any:
        """Send a call and return its id without waiting."""
        msg_id = next(self.ids)
        await self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": list(params)})
        return msg_id

    async def reply(self, msg_id: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
        while msg_id not in self.replies:
            await self._pump(timeout)
        return self.replies.pop(msg_id)

    async def call(self, method: str, *params: Any) -> Any:
        """The result, or raise AssertionError with the error."""
        reply = await self.reply(await self.request(method, *params))
        assert "error" not in reply, reply["error"]
        return reply["result"]

    async def error(self, method: str, *params: Any) -> dict[str, Any]:
        reply = await self.reply(await self.request(method, *params))
        assert "error" in reply, reply
        error: dict[str, Any] = reply["error"]
        return error

    async def notification(self, predicate: Any = None, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The first (unconsumed) notification matching ``predicate``."""
        while True:
            for i, n in enumerate(self.notifications):
                if predicate is None or predicate(n):
                    return self.notifications.pop(i)
            await self._pump(timeout)

    async def login(self, username: str, password: str) -> None:
        assert await self.call("auth.login", username, password) is True


@asynccontextmanager
async def raw(
    url: str, user: str | None = None, password: str | None = None, **kwargs: Any
) -> AsyncIterator[Raw]:
    async with connect(url, max_size=None, **kwargs) as ws:
        conn = Raw(ws)
        if user is not None and password is not None:
            await conn.login(user, password)
        yield conn
