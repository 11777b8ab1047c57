"""TrueNAS's older /websocket protocol over the wire (PROTOCOL.md section 12): the connect
handshake, method results and errors in the legacy shape, ping, sub/unsub with added,
changed and removed events, job calls answered with the job id, and the same
authentication, permissions and limits as /api/current."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.serverproc import ServerProc

TIMEOUT = 10.0


class Legacy:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self.n = 0

    async def send(self, msg: Any) -> None:
        await self.ws.send(msg if isinstance(msg, str) else json.dumps(msg))

    async def next(self, predicate: Any = lambda m: True) -> dict[str, Any]:
        """The first message (seen before or arriving) that ``predicate`` accepts."""
        for i, old in enumerate(self.seen):
            if predicate(old):
                return self.seen.pop(i)
        while True:
            m: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            if predicate(m):
                return m
            self.seen.append(m)

    async def call(self, method: str, *params: Any) -> dict[str, Any]:
        self.n += 1
        msg_id = f"call-{self.n}"
        await self.send({"msg": "method", "id": msg_id, "method": method, "params": list(params)})
        return await self.next(lambda m: m.get("msg") == "result" and m.get("id") == msg_id)


@asynccontextmanager
async def legacy(server: ServerProc, login: bool = True) -> AsyncIterator[Legacy]:
    async with connect(f"ws://{server.host}:{server.port}/websocket") as ws:
        c = Legacy(ws)
        await c.send({"msg": "connect", "version": "1", "support": ["1"]})
        hello = await c.next()
        assert hello["msg"] == "connected" and len(hello["session"]) == 36
        if login:
            assert (await c.call("auth.login", "root", server.password))["result"] is True
        yield c


async def test_handshake_results_errors_and_ping(server: ServerProc) -> None:
    async with legacy(server) as c:
        assert await c.call("core.ping") == {"msg": "result", "id": "call-2", "result": "pong"}
        invalid = await c.call("user.create", {"username": 5})
        assert invalid["error"]["type"] == "VALIDATION"
        assert invalid["error"]["errname"] == "EINVAL"
        assert invalid["error"]["extra"] == [["data.username", "Not a valid string", 22]]
        assert invalid["error"]["trace"]  # TrueNAS's LegacyClient needs one to say VALIDATION
        missing = await c.call("no.such")
        assert missing["error"]["errname"] == "ENOMETHOD" and missing["error"]["type"] is None
        await c.send({"msg": "ping", "id": "p1"})
        assert await c.next() == {"msg": "pong", "id": "p1"}
        await c.send("{not json")
        bad = await c.next()
        assert bad["msg"] == "result" and "Malformed JSON" in bad["error"]["reason"]
        await c.send({"msg": "bogus", "id": "x"})
        assert "Unknown msg" in (await c.next())["error"]["reason"]
        # The connection serves on after each.
        assert (await c.call("core.ping"))["result"] == "pong"


async def test_nothing_before_connect_and_an_unknown_version(server: ServerProc) -> None:
    url = f"ws://{server.host}:{server.port}/websocket"
    async with connect(url) as ws:
        await ws.send(json.dumps({"msg": "method", "id": "1", "method": "core.ping"}))
        refused = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert refused["error"]["reason"] == "Send connect first"
        await ws.send(json.dumps({"msg": "connect", "version": "2", "support": ["2"]}))
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT)) == {
            "msg": "failed",
            "version": "1",
        }


async def test_authentication_and_permissions_are_the_same(server: ServerProc) -> None:
    async with legacy(server, login=False) as c:
        refused = await c.call("user.query")
        assert refused["error"]["errname"] == "ENOTAUTHENTICATED"
        assert (await c.call("auth.login", "root", "wrong"))["result"] is False
    async with legacy(server) as c:
        key = (await c.call("api_key.create", {"name": "legacy", "allowlist": ["core.ping"]}))[
            "result"
        ]
    async with legacy(server, login=False) as c:
        assert (await c.call("auth.login_with_api_key", key["key"]))["result"] is True
        assert (await c.call("core.ping"))["result"] == "pong"
        assert (await c.call("user.query"))["error"]["errname"] == "EACCES"


async def test_sub_events_jobs_and_unsub(server: ServerProc) -> None:
    async with legacy(server) as c:
        await c.send({"msg": "sub", "id": "s1", "name": "core.get_jobs"})
        assert await c.next(lambda m: m.get("msg") == "ready") == {"msg": "ready", "subs": ["s1"]}
        # A job call is answered at once with its id, as the older protocol does.
        answer = await c.call("test.progress", 3, None)
        job_id = answer["result"]
        assert isinstance(job_id, int)

        def event_of(job: int, msg: str) -> Any:
            return lambda m: m.get("msg") == msg and m.get("id") == job

        added = await c.next(event_of(job_id, "added"))
        assert added["collection"] == "core.get_jobs" and added["fields"]["id"] == job_id
        while True:
            changed = await c.next(event_of(job_id, "changed"))
            if changed["fields"]["state"] == "SUCCESS":
                break
        assert changed["fields"]["result"] == 3
        await c.send({"msg": "unsub", "id": "s1"})
        nosub = await c.next(lambda m: m.get("msg") == "nosub")
        assert nosub == {"msg": "nosub", "id": "s1", "collection": "core.get_jobs"}
        second = (await c.call("test.progress", 1, None))["result"]
        # The job's events, had they been sent, would be queued before the wait's reply.
        waited = await c.call("core.job_wait", second)
        assert "error" not in waited, waited
        assert not [m for m in c.seen if m.get("id") == second]


async def test_a_refused_subscription_is_nosub_with_the_error(server: ServerProc) -> None:
    async with legacy(server) as c:
        await c.send({"msg": "sub", "id": "s9", "name": "no.such.collection"})
        nosub = await c.next(lambda m: m.get("msg") == "nosub")
    assert nosub["id"] == "s9" and nosub["error"]["errname"] == "ENOENT"


async def test_the_frame_limit_before_login_holds(server: ServerProc) -> None:
    async with legacy(server, login=False) as c:
        with pytest.raises(ConnectionClosed) as closed:
            await c.send(
                {"msg": "method", "id": "x", "method": "core.ping", "params": ["a" * 10**6]}
            )
            await c.next()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
