"""JSON-RPC 2.0 framing: every invalid shape, batches, notifications and ids, encoding."""

from __future__ import annotations

import json
from typing import Any

import pytest

from middlewared.errors import CallError, InvalidRequest, ParseError, RpcCode
from middlewared.rpc.protocol import (
    BadMessage,
    Frame,
    Request,
    encode,
    error_reply,
    parse_frame,
    parse_message,
    result_reply,
)


def only(frame: Frame) -> Request | BadMessage:
    assert not frame.batch
    assert len(frame.messages) == 1
    return frame.messages[0]


def bad(frame: Frame) -> BadMessage:
    message = only(frame)
    assert isinstance(message, BadMessage)
    return message


def call(**fields: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", **fields})


# -- well-formed ------------------------------------------------------------------------


@pytest.mark.parametrize("msg_id", [1, 0, -3, 2**53, 1.5, "abc", "", None])
def test_valid_ids_are_kept(msg_id: Any) -> None:
    message = only(parse_frame(call(method="core.ping", id=msg_id)))
    assert message == Request("core.ping", None, msg_id, notification=False)
    assert type(message.id) is type(msg_id)


def test_no_id_is_a_notification_but_a_null_id_is_not() -> None:
    notice = only(parse_frame(call(method="core.ping")))
    assert isinstance(notice, Request) and notice.notification and notice.id is None
    null = only(parse_frame(call(method="core.ping", id=None)))
    assert isinstance(null, Request) and not null.notification and null.id is None


@pytest.mark.parametrize("params", [[], [1, "a", None], {}, {"a": 1}, None])
def test_params_array_object_or_absent(params: Any) -> None:
    message = only(parse_frame(call(method="m", params=params, id=1)))
    assert isinstance(message, Request)
    assert message.params == params


def test_absent_params_are_none() -> None:
    message = only(parse_frame(call(method="m", id=1)))
    assert isinstance(message, Request) and message.params is None


def test_bytes_frames_are_accepted() -> None:
    message = only(parse_frame(call(method="m", id=1).encode()))
    assert isinstance(message, Request) and message.method == "m"


def test_unknown_members_are_ignored() -> None:
    message = only(parse_frame(call(method="m", id=1, extra={"x": 1})))
    assert isinstance(message, Request)


# -- invalid shapes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    ["", " ", "{", '{"jsonrpc": "2.0",}', "nul", "[1, 2", "{'a': 1}", b"\xff\xfe", "NaN"],
)
def test_invalid_json_is_a_parse_error(data: str | bytes) -> None:
    message = bad(parse_frame(data))
    assert isinstance(message.error, ParseError)
    assert message.id is None
    assert message.error.to_rpc_error()["code"] == RpcCode.PARSE_ERROR


@pytest.mark.parametrize("data", ["1", '"text"', "null", "true", "3.5"])
def test_a_json_value_that_is_not_an_object_is_invalid(data: str) -> None:
    message = bad(parse_frame(data))
    assert isinstance(message.error, InvalidRequest)
    assert message.id is None
    assert message.error.to_rpc_error()["code"] == RpcCode.INVALID_REQUEST


def test_an_empty_batch_is_one_invalid_request_not_a_batch() -> None:
    message = bad(parse_frame("[]"))
    assert isinstance(message.error, InvalidRequest)
    assert message.id is None


@pytest.mark.parametrize(
    ("fields", "reply_id"),
    [
        ({"method": "m", "id": 1}, 1),  # no jsonrpc
        ({"jsonrpc": "1.0", "method": "m", "id": 2}, 2),
        ({"jsonrpc": 2.0, "method": "m", "id": 3}, 3),
        ({"jsonrpc": None, "method": "m", "id": "x"}, "x"),
        ({"jsonrpc": "2.0", "id": 4}, 4),  # no method
        ({"jsonrpc": "2.0", "method": 5, "id": 5}, 5),
        ({"jsonrpc": "2.0", "method": None, "id": 6}, 6),
        ({"jsonrpc": "2.0", "method": ["m"], "id": 7}, 7),
        ({"jsonrpc": "2.0", "method": "m", "params": "a", "id": 8}, 8),
        ({"jsonrpc": "2.0", "method": "m", "params": 1, "id": 9}, 9),
        ({"jsonrpc": "2.0", "method": "m", "params": True, "id": 10}, 10),
        ({"method": "m"}, None),  # a broken notification is answered, with a null id
        ({"jsonrpc": "2.0", "method": "m", "params": "a"}, None),
    ],
)
def test_invalid_requests_keep_their_id(fields: dict[str, Any], reply_id: Any) -> None:
    message = bad(parse_frame(json.dumps(fields)))
    assert isinstance(message.error, InvalidRequest)
    assert message.id == reply_id


@pytest.mark.parametrize("msg_id", [True, False, [1], {"a": 1}])
def test_invalid_id_types_are_refused_with_a_null_id(msg_id: Any) -> None:
    message = bad(parse_frame(call(method="m", id=msg_id)))
    assert isinstance(message.error, InvalidRequest)
    assert "id" in message.error.reason
    assert message.id is None


def test_parse_message_of_a_non_object() -> None:
    message = parse_message(["jsonrpc", "2.0"])
    assert isinstance(message, BadMessage) and isinstance(message.error, InvalidRequest)


# -- batches ----------------------------------------------------------------------------


def test_a_batch_of_valid_calls() -> None:
    frame = parse_frame(
        json.dumps(
            [
                {"jsonrpc": "2.0", "method": "a", "params": [1], "id": 1},
                {"jsonrpc": "2.0", "method": "b", "params": {"x": 2}},
                {"jsonrpc": "2.0", "method": "c", "id": None},
            ]
        )
    )
    assert frame.batch
    assert frame.messages == [
        Request("a", [1], 1, False),
        Request("b", {"x": 2}, None, True),
        Request("c", None, None, False),
    ]


def test_a_batch_of_one_is_still_a_batch() -> None:
    frame = parse_frame(json.dumps([{"jsonrpc": "2.0", "method": "a", "id": 1}]))
    assert frame.batch and len(frame.messages) == 1


def test_a_batch_of_invalid_members_has_one_error_each() -> None:
    frame = parse_frame("[1, 2, 3]")
    assert frame.batch
    assert len(frame.messages) == 3
    for message in frame.messages:
        assert isinstance(message, BadMessage)
        assert isinstance(message.error, InvalidRequest)
        assert message.id is None


def test_a_mixed_batch_keeps_order_and_ids() -> None:
    frame = parse_frame(
        json.dumps(
            [
                {"jsonrpc": "2.0", "method": "sum", "params": [1, 2, 4], "id": "1"},
                {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
                {"foo": "boo"},
                {"jsonrpc": "2.0", "method": "x", "id": True},
                {"jsonrpc": "1.0", "method": "y", "id": "9"},
                [],
            ]
        )
    )
    assert frame.batch
    kinds = [type(m).__name__ for m in frame.messages]
    assert kinds == ["Request", "Request", "BadMessage", "BadMessage", "BadMessage", "BadMessage"]
    assert [m.id for m in frame.messages] == ["1", None, None, None, "9", None]


def test_a_nested_batch_member_is_invalid() -> None:
    frame = parse_frame(json.dumps([[{"jsonrpc": "2.0", "method": "a", "id": 1}]]))
    assert frame.batch
    message = frame.messages[0]
    assert isinstance(message, BadMessage) and isinstance(message.error, InvalidRequest)


def test_parse_frame_never_raises_on_deep_nesting() -> None:
    frame = parse_frame("[" * 5000 + "]" * 5000)
    assert frame.messages
    assert all(isinstance(m, BadMessage) for m in frame.messages)


def test_lone_surrogates_are_strings_like_any_other() -> None:
    """Names that are not UTF-8 reach clients as \\udcXX escapes and may be sent back."""
    message = only(parse_frame(call(id="caf\udce9", method="m", params=["caf\udce9.txt"])))
    assert message == Request("m", ["caf\udce9.txt"], "caf\udce9", False)
    text = encode(result_reply(1, "caf\udce9.txt"))
    assert text.isascii() and json.loads(text)["result"] == "caf\udce9.txt"


def test_a_big_id_in_a_deep_frame_is_a_parse_error_with_the_reason() -> None:
    frame = (
        f'{{"jsonrpc": "2.0", "id": {2**64}, "method": "m", "params": {"[" * 1000}{"]" * 1000}}}'
    )
    message = bad(parse_frame(frame))
    assert isinstance(message.error, ParseError) and "nested too deep" in message.error.reason


# -- encoding ---------------------------------------------------------------------------


def test_result_reply() -> None:
    reply = result_reply(5, {"a": [1, None]})
    assert reply == {"jsonrpc": "2.0", "result": {"a": [1, None]}, "id": 5}
    assert json.loads(encode(reply)) == reply


def test_a_null_result_is_still_present() -> None:
    decoded = json.loads(encode(result_reply("x", None)))
    assert "result" in decoded and decoded["result"] is None
    assert "error" not in decoded


def test_error_reply() -> None:
    error = CallError("boom", 5).to_rpc_error()
    reply = error_reply(None, error)
    decoded = json.loads(encode(reply))
    assert decoded == {"jsonrpc": "2.0", "error": error, "id": None}
    assert "result" not in decoded
    assert set(decoded["error"]["data"]) == {"error", "errname", "reason", "extra", "trace"}


def test_encode_a_batch_of_replies() -> None:
    replies = [result_reply(1, 1), error_reply(2, InvalidRequest("x").to_rpc_error())]
    assert json.loads(encode(replies)) == replies


def test_encode_is_compact_text_and_keeps_unicode() -> None:
    text = encode(result_reply(1, "héllo ☃"))
    assert isinstance(text, str)
    assert json.loads(text)["result"] == "héllo ☃"


def test_round_trip_of_a_request_frame() -> None:
    original = {"jsonrpc": "2.0", "method": "m", "params": {"k": [1.5, "v"]}, "id": "abc"}
    message = only(parse_frame(encode(original)))
    assert message == Request("m", {"k": [1.5, "v"]}, "abc", False)
