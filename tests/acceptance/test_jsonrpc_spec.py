"""The 15 examples of the JSON-RPC 2.0 specification, section 7, over a real socket.

Method names carry our ``test.`` namespace; everything else is the specification's text.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw


async def nothing_then_ping(c: Raw) -> None:
    """Prove no reply came: the next frame is the reply to a ping sent afterwards."""
    await c.send({"jsonrpc": "2.0", "id": "ping", "method": "core.ping"})
    assert await c.recv() == {"jsonrpc": "2.0", "result": "pong", "id": "ping"}


CASES: list[tuple[str, Any, Any]] = [
    (
        "positional 1",
        {"jsonrpc": "2.0", "method": "test.subtract", "params": [42, 23], "id": 1},
        {"jsonrpc": "2.0", "result": 19, "id": 1},
    ),
    (
        "positional 2",
        {"jsonrpc": "2.0", "method": "test.subtract", "params": [23, 42], "id": 2},
        {"jsonrpc": "2.0", "result": -19, "id": 2},
    ),
    (
        "named 1",
        {
            "jsonrpc": "2.0",
            "method": "test.subtract",
            "params": {"subtrahend": 23, "minuend": 42},
            "id": 3,
        },
        {"jsonrpc": "2.0", "result": 19, "id": 3},
    ),
    (
        "named 2",
        {
            "jsonrpc": "2.0",
            "method": "test.subtract",
            "params": {"minuend": 42, "subtrahend": 23},
            "id": 4,
        },
        {"jsonrpc": "2.0", "result": 19, "id": 4},
    ),
    ("notification", {"jsonrpc": "2.0", "method": "test.update", "params": [1, 2, 3, 4, 5]}, None),
    ("notification unknown", {"jsonrpc": "2.0", "method": "foobar"}, None),
    (
        "no such method",
        {"jsonrpc": "2.0", "method": "foobar", "id": "1"},
        {"code": -32601, "id": "1"},
    ),
    (
        "invalid JSON",
        '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]',
        {"code": -32700, "id": None},
    ),
    (
        "invalid request",
        {"jsonrpc": "2.0", "method": 1, "params": "bar"},
        {"code": -32600, "id": None},
    ),
    (
        "batch invalid JSON",
        '[{"jsonrpc": "2.0", "method": "test.sum", "params": [1,2,4], "id": "1"},'
        '{"jsonrpc": "2.0", "method"]',
        {"code": -32700, "id": None},
    ),
    ("empty array", [], {"code": -32600, "id": None}),
    ("batch of one invalid", [1], [{"code": -32600, "id": None}]),
    ("batch of three invalid", [1, 2, 3], [{"code": -32600, "id": None}] * 3),
]


def check(expected: Any, actual: Any) -> None:
    if isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), actual
        for e, a in zip(expected, actual, strict=True):
            check(e, a)
    elif "code" in expected:
        assert actual["jsonrpc"] == "2.0"
        assert actual["id"] == expected["id"], actual
        assert actual["error"]["code"] == expected["code"], actual
        assert "result" not in actual
    else:
        assert actual == expected


@pytest.mark.parametrize(("name", "request_", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_spec_example(server: ServerProc, name: str, request_: Any, expected: Any) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        await c.send(request_ if isinstance(request_, str) else json.dumps(request_))
        if expected is None:
            await nothing_then_ping(c)
        else:
            check(expected, await c.recv())
            await nothing_then_ping(c)


async def test_spec_mixed_batch(server: ServerProc) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "test.sum", "params": [1, 2, 4], "id": "1"},
        {"jsonrpc": "2.0", "method": "test.notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "test.subtract", "params": [42, 23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "test.get_data", "id": "9"},
    ]
    async with raw(server.ws_url, "root", server.password) as c:
        await c.send(batch)
        replies = await c.recv()
        assert isinstance(replies, list) and len(replies) == 5
        by_id = {r["id"]: r for r in replies if r["id"] is not None}
        assert by_id["1"] == {"jsonrpc": "2.0", "result": 7, "id": "1"}
        assert by_id["2"] == {"jsonrpc": "2.0", "result": 19, "id": "2"}
        assert by_id["5"]["error"]["code"] == -32601
        assert by_id["5"]["error"]["message"] == "Method does not exist"
        assert by_id["9"] == {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}
        nulls = [r for r in replies if r["id"] is None]
        assert len(nulls) == 1 and nulls[0]["error"]["code"] == -32600
        await nothing_then_ping(c)


async def test_spec_batch_of_notifications(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        await c.send(
            [
                {"jsonrpc": "2.0", "method": "test.notify_hello", "params": [7]},
                {"jsonrpc": "2.0", "method": "test.update", "params": [1, 2, 4]},
            ]
        )
        await nothing_then_ping(c)
