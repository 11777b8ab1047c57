"""Client frames are checked as they arrive: the frame limit that applies now (smaller before
login) counts every fragment of a message, and unmasked frames close the connection."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.rawws import RawWs, request_frame, ws_frame
from tests.rpcsync import Rpc
from tests.serverproc import ServerProc

PRE_LOGIN = 64 * 1024  # the default --max-frame-unauthenticated
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_TOO_BIG = 1009


def _call(msg_id: int, method: str, *params: object) -> bytes:
    body = {"jsonrpc": "2.0", "id": msg_id, "method": method, "params": list(params)}
    return json.dumps(body).encode()


def _fragments(payload: bytes, parts: int, last: bool = True) -> bytes:
    """``payload`` as one text message in ``parts`` frames; unfinished unless ``last``."""
    size = -(-len(payload) // parts)
    chunks = [payload[i : i + size] for i in range(0, len(payload), size)]
    frames = []
    for i, chunk in enumerate(chunks):
        final = last and i == len(chunks) - 1
        frames.append(ws_frame(chunk, 1 if i == 0 else 0, fin=final))
    return b"".join(frames)


def _still_serves(srv: ServerProc) -> None:
    rpc = Rpc(srv.ws_url)
    try:
        assert rpc.result("core.ping") == "pong"
    finally:
        rpc.close()


def test_fragments_before_login_count_as_they_arrive(server: ServerProc) -> None:
    # An unfinished message past the pre-login limit is refused while it comes, not once
    # aiohttp has gathered it up to the after-login limit (16 MiB).
    raw = RawWs(server).handshake()
    try:
        raw.sock.sendall(_fragments(b"x" * (PRE_LOGIN + 1), 2, last=False))
        assert raw.close_code() == CLOSE_TOO_BIG
    finally:
        raw.close()
    _still_serves(server)


def test_a_frame_announcing_more_than_the_limit_is_refused_at_its_header(
    server: ServerProc,
) -> None:
    raw = RawWs(server).handshake()
    try:
        raw.sock.sendall(ws_frame(b"x" * 1000, declared=10 * 1024 * 1024))
        assert raw.close_code() == CLOSE_TOO_BIG
    finally:
        raw.close()


def test_fragmented_calls_within_the_limits_are_served(
    make_server: Callable[..., ServerProc],
) -> None:
    srv = make_server("--max-frame-unauthenticated", "1000", "--max-frame", "100000")
    raw = RawWs(srv).handshake()
    try:
        raw.sock.sendall(_fragments(_call(1, "core.ping"), 3))
        assert raw.reply(1)["result"] == "pong"
        raw.login(srv.password)
        # After login the larger limit applies, to the whole message.
        text = "y" * 60_000
        raw.sock.sendall(_fragments(_call(7, "test.echo", text), 4))
        assert raw.reply(7)["result"] == text
        raw.sock.sendall(_fragments(b"z" * 100_001, 5, last=False))
        assert raw.close_code() == CLOSE_TOO_BIG
    finally:
        raw.close()


def test_the_smaller_limit_holds_until_login_answers(
    make_server: Callable[..., ServerProc],
) -> None:
    # A frame sent before the login reply is read is still a frame before login.
    srv = make_server("--max-frame-unauthenticated", "1000", "--max-frame", "100000")
    raw = RawWs(srv).handshake()
    try:
        raw.sock.sendall(
            request_frame(1, "auth.login", "root", srv.password)
            + ws_frame(b"x" * 2000, declared=50_000)
        )
        assert raw.close_code() == CLOSE_TOO_BIG
    finally:
        raw.close()


def test_unmasked_frames_close_with_1002(server: ServerProc) -> None:
    raw = RawWs(server).handshake()
    try:
        raw.sock.sendall(ws_frame(_call(1, "core.ping"), masked=False))
        assert raw.close_code() == CLOSE_PROTOCOL_ERROR
    finally:
        raw.close()
    # Also after login, and in the middle of a fragmented message.
    raw = RawWs(server).handshake().login(server.password)
    try:
        payload = _call(2, "core.ping")
        raw.sock.sendall(
            ws_frame(payload[:10], fin=False) + ws_frame(payload[10:], 0, masked=False)
        )
        assert raw.close_code() == CLOSE_PROTOCOL_ERROR
    finally:
        raw.close()
    _still_serves(server)


def test_frames_that_came_with_the_upgrade_are_checked_too(server: ServerProc) -> None:
    raw = RawWs(server).handshake(then=ws_frame(_call(1, "core.ping"), masked=False))
    try:
        assert raw.close_code() == CLOSE_PROTOCOL_ERROR
    finally:
        raw.close()
    raw = RawWs(server).handshake(then=ws_frame(b"x" * 100, declared=PRE_LOGIN + 1))
    try:
        assert raw.close_code() == CLOSE_TOO_BIG
    finally:
        raw.close()
    raw = RawWs(server).handshake(then=request_frame(1, "core.ping"))
    try:
        assert raw.reply(1)["result"] == "pong"
    finally:
        raw.close()
