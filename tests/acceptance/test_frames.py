"""Malformed, oversized and binary frames; the in-flight limit; the server keeps serving."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
from websockets.exceptions import ConnectionClosed

from tests.serverproc import ServerProc
from tests.wsraw import raw

BAD_FRAMES = [
    ("not json", "this is not json", -32700),
    ("truncated", '{"jsonrpc": "2.0", "id": 1, "method": "core.ping"', -32700),
    ("a number", "42", -32600),
    ("a string", '"core.ping"', -32600),
    ("null", "null", -32600),
    ("no jsonrpc", '{"id": 1, "method": "core.ping"}', -32600),
    ("wrong version", '{"jsonrpc": "1.0", "id": 1, "method": "core.ping"}', -32600),
    ("method not a string", '{"jsonrpc": "2.0", "id": 1, "method": ["x"]}', -32600),
    (
        "params a string",
        '{"jsonrpc": "2.0", "id": 1, "method": "core.ping", "params": "x"}',
        -32600,
    ),
    ("id an object", '{"jsonrpc": "2.0", "id": {}, "method": "core.ping"}', -32600),
    # A lone surrogate is a string like any other (names that are not UTF-8 come back so).
    ("lone surrogate method", '{"jsonrpc": "2.0", "id": 1, "method": "\\ud800"}', -32601),
]


@pytest.mark.parametrize(("name", "frame", "code"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES])
async def test_bad_frame_gets_an_error_and_the_connection_lives(
    server: ServerProc, name: str, frame: str, code: int
) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        await c.send(frame)
        reply = await c.recv()
        assert reply["error"]["code"] == code, reply
        assert set(reply["error"]["data"]) == {"error", "errname", "reason", "extra", "trace"}
        assert reply["error"]["data"]["reason"]
        assert await c.call("core.ping") == "pong"


async def test_binary_frame_closes_1003(server: ServerProc) -> None:
    async with raw(server.ws_url) as c:
        await c.ws.send(b"\x00\x01")
        with pytest.raises(ConnectionClosed) as info:
            await c.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1003
    async with raw(server.ws_url) as c:
        assert await c.call("core.ping") == "pong"


async def test_frame_limits_before_and_after_login(
    make_server: Callable[..., ServerProc],
) -> None:
    srv = make_server("--max-frame-unauthenticated", "1000", "--max-frame", "100000")
    big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "core.ping", "params": ["x" * 5000]})
    async with raw(srv.ws_url) as c:
        await c.send(big)
        with pytest.raises(ConnectionClosed) as info:
            await c.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    async with raw(srv.ws_url, "root", srv.password) as c:
        # After login, 5 kB is fine; past the larger limit the connection is closed.
        assert await c.call("test.echo", "x" * 5000) == "x" * 5000
        await c.send(
            json.dumps(
                {"jsonrpc": "2.0", "id": 2, "method": "test.echo", "params": ["y" * 200_000]}
            )
        )
        with pytest.raises(ConnectionClosed) as info:
            await c.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    async with raw(srv.ws_url) as c:
        assert await c.call("core.ping") == "pong"


async def test_inflight_limit(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server("--max-inflight", "4")
    async with raw(srv.ws_url, "root", srv.password) as c:
        gate = "inflight"
        held = [await c.request("test.wait", gate) for _ in range(4)]
        err = await c.error("core.ping")
        assert err["code"] == -32000
        assert err["data"]["errname"] == "EBUSY"
        await c.send({"jsonrpc": "2.0", "id": "open", "method": "test.open_gate", "params": [gate]})
        reply = await c.reply("open")
        # The gate call itself is past the limit too: refused, not queued.
        assert reply["error"]["code"] == -32000
    async with raw(srv.ws_url, "root", srv.password) as other:
        assert await other.call("test.open_gate", gate) is True
        assert await other.call("core.ping") == "pong"
    del held


async def test_deep_json_is_an_error_not_a_crash(server: ServerProc) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    async with raw(server.ws_url, "root", server.password) as c:
        await c.send(deep)
        reply = await c.recv()
        assert reply["error"]["code"] in (-32700, -32600)
        assert await c.call("core.ping") == "pong"


async def test_deep_json_with_a_big_id_is_answered_and_not_logged_per_frame(
    make_server: Callable[..., ServerProc],
) -> None:
    """Regression: an id past 64 bits has the frame read again by the standard library,
    whose RecursionError on deep nesting reached aiohttp (an HTTP 500 written into the
    WebSocket stream, a traceback logged per frame)."""
    srv = make_server()
    deep = "[" * 1000 + "]" * 1000
    frame = f'{{"jsonrpc": "2.0", "id": {2**64}, "method": "core.ping", "params": {deep}}}'
    async with raw(srv.ws_url, "root", srv.password) as c:
        for _ in range(20):
            await c.send(frame)
            reply = await c.recv()
            assert reply["error"]["code"] in (-32700, -32600), reply
            assert "deep" in reply["error"]["data"]["reason"], reply
        assert await c.call("core.ping") == "pong"
    log = srv.log_text()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]


async def test_many_connections_at_once(server: ServerProc) -> None:
    async def one(i: int) -> None:
        async with raw(server.ws_url, "root", server.password) as c:
            assert await c.call("test.subtract", i, 1) == i - 1

    await asyncio.gather(*(one(i) for i in range(30)))
