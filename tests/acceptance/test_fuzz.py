"""Property-based fuzzing of what a client can send: frames, requests, batches, frame limits,
query filters and options, filesystem paths and multipart uploads.

The invariants, checked on every example: each frame gets a well-formed JSON-RPC reply (none
for notifications) or the documented 1009/1003 close; ``error.data`` has its five keys; no
traceback or server source path leaks into a ``reason``; no unexpected exception surfaces
(an EFAULT whose reason is an exception name); and the server still answers ``core.ping``.

Known bugs are kept out of the broad strategies (so that the properties stay green and catch
regressions) and are pinned by the strict xfail tests next to them. Bugs fixed since are kept
as plain regression tests, and the strategies cover them again.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from middlewared.config import Limits
from middlewared.jobs.queue import MAX_MERGED_CALLS
from tests.rpcsync import wait_for
from tests.serverproc import ServerProc

PROJECT = Path(__file__).resolve().parents[2]
RECV_TIMEOUT = 15.0
# The server's default frame limits (config.Limits), before and after login.
FRAME_LIMIT_ANON = 64 * 1024
FRAME_LIMIT = 16 * 1024 * 1024
CODES = {-32700, -32600, -32601, -32602, -32603, -32000, -32001}
DATA_KEYS = {"error", "errname", "reason", "extra", "trace"}
LEAK_MARKERS = (
    "Traceback (most recent call last)",
    'File "/',
    '.py", line',
    "site-packages",
    str(PROJECT / "middlewared"),
)
# How a reason looks when an unexpected exception was wrapped (dispatcher.error_object).
CRASH = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit)\b")
ENOENT = 2
# What may be called before login without a login method (PROTOCOL.md section 6).
PUBLIC_METHODS = ("core.ping", "auth.mechanism_choices")
ENOTAUTHENTICATED = 207


def examples(long_run: bool, base: int) -> int:
    return base * 10 if long_run else base


def fuzz_settings(long_run: bool, base: int) -> settings:
    return settings(
        max_examples=examples(long_run, base),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


# --- a synchronous JSON-RPC connection ---------------------------------------------------------


@dataclass
class Closed:
    """The server closed the connection (code as received, None if it just vanished)."""

    code: int | None


class Wire:
    """One WebSocket that reconnects (and logs in again) after the server closed it."""

    def __init__(
        self,
        url: str,
        login: tuple[str, ...] | None = None,
        method: str = "auth.login",
        source: str | None = None,
    ) -> None:
        self.url = url
        self.login = login
        self.login_method = method
        # The local address to connect from (127.x.y.z): a client address of its own.
        self.source = source
        self._stack = ExitStack()
        self._ws: ClientConnection | None = None
        self._seq = 0
        self.reconnects = 0
        self.limit = FRAME_LIMIT_ANON if login is None else FRAME_LIMIT

    @property
    def ws(self) -> ClientConnection:
        if self._ws is None:
            self._ws = self._stack.enter_context(
                # No keepalive: its thread draws from `random`, which hypothesis forbids
                # while it generates data.
                connect(
                    self.url,
                    sock=None if self.source is None else _socket_from(self.url, self.source),
                    max_size=None,
                    open_timeout=10,
                    close_timeout=2,
                    ping_interval=None,
                )
            )
            self.reconnects += 1
            if self.login is not None:
                reply = self.call(self.login_method, *self.login)
                assert reply.get("result") is True, reply
        return self._ws

    def reset(self) -> None:
        self._ws = None
        with suppress(Exception):
            self._stack.close()
        self._stack = ExitStack()

    close = reset

    def next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self._seq}"

    def recv(self, timeout: float = RECV_TIMEOUT) -> Any:
        return parse(self.ws.recv(timeout=timeout))

    def call(self, method: str, *params: Any, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """The whole reply to one call (notifications are skipped)."""
        msg_id = self.next_id("call")
        self.ws.send(
            json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": list(params)})
        )
        while True:
            msg = self.recv(timeout)
            if isinstance(msg, dict) and msg.get("id") == msg_id:
                return msg

    def result(self, method: str, *params: Any) -> Any:
        reply = self.call(method, *params)
        assert "error" not in reply, reply["error"]
        return reply["result"]

    def exchange(
        self, frame: str | bytes, expected: int, timeout: float = RECV_TIMEOUT
    ) -> list[Any] | Closed:
        """Send ``frame`` then a ``core.ping`` sentinel; return every reply read until the
        sentinel's "pong" and ``expected`` other replies are in (notifications skipped)."""
        ws = self.ws
        try:
            ws.send(frame)
            sentinel = self._sentinel(ws)
            got: list[Any] = []
            pong = False
            while not pong or len(got) < expected:
                try:
                    msg = self.recv(timeout)
                except TimeoutError:
                    self.reset()
                    raise AssertionError(
                        f"no reply within {timeout} s (got {got!r:.300}) to {frame!r:.300}"
                    ) from None
                if isinstance(msg, dict) and "method" in msg and "id" not in msg:
                    continue
                if isinstance(msg, dict) and msg.get("id") == sentinel:
                    if msg.get("error", {}).get("code") == -32000:
                        sentinel = self._sentinel(ws)  # the in-flight limit was reached
                        continue
                    assert msg.get("result") == "pong", msg
                    pong = True
                    continue
                got.append(msg)
            return got
        except ConnectionClosed as e:
            self.reset()
            return Closed(e.rcvd.code if e.rcvd is not None else None)

    def expect_close(self, frame: str | bytes, timeout: float = RECV_TIMEOUT) -> Closed | Any:
        """Send a frame the server must refuse by closing; its close (or what came instead).

        No sentinel follows it: the rest of a refused frame and anything sent after it may
        reach a socket the server already closed, and the reset can beat the close frame."""
        ws = self.ws
        try:
            ws.send(frame)
            while True:
                msg = self.recv(timeout)
                if not (isinstance(msg, dict) and "method" in msg and "id" not in msg):
                    return msg
        except ConnectionClosed as e:
            self.reset()
            return Closed(e.rcvd.code if e.rcvd is not None else None)

    def _sentinel(self, ws: ClientConnection) -> str:
        sentinel = self.next_id("fuzz-sentinel")
        ws.send(json.dumps({"jsonrpc": "2.0", "id": sentinel, "method": "core.ping"}))
        return sentinel

    def alive(self) -> None:
        """The server keeps serving: a fresh ping on this connection answers "pong"."""
        assert self.call("core.ping").get("result") == "pong"


def _socket_from(url: str, source: str) -> socket.socket:
    where = urlsplit(url)
    assert where.hostname is not None and where.port is not None, url
    return socket.create_connection((where.hostname, where.port), 10, (source, 0))


@pytest.fixture(scope="module")
def wire(server: ServerProc) -> Iterator[Wire]:
    w = Wire(server.ws_url, ("root", server.password))
    yield w
    w.close()


@pytest.fixture(scope="module")
def anon(server: ServerProc) -> Iterator[Wire]:
    w = Wire(server.ws_url)
    yield w
    w.close()


# --- the oracle: which replies a frame must get ------------------------------------------------


def parse(text: str | bytes) -> Any:
    """JSON as the server reads it: orjson, except that lone surrogates (\\udcXX escapes,
    how names that are not UTF-8 travel) are strings like any other."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as e:
        if "surrogate" not in str(e):
            raise
    return json.loads(text, parse_constant=_refuse)


def _refuse(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def key(value: Any) -> bytes:
    return json.dumps(value).encode()


def _valid_id(value: Any) -> bool:
    return value is None or isinstance(value, str | float) or type(value) is int


def _member(m: Any) -> tuple[bytes, int | None] | None:
    """(reply id, forced error code) of one request; None for a valid notification."""
    if not isinstance(m, dict):
        return key(None), -32600
    if "id" in m and not _valid_id(m["id"]):
        return key(None), -32600
    reply_id = key(m.get("id"))
    params = m.get("params")
    if (
        m.get("jsonrpc") != "2.0"
        or not isinstance(m.get("method"), str)
        or (params is not None and not isinstance(params, list | dict))
    ):
        return reply_id, -32600
    return None if "id" not in m else (reply_id, None)


@dataclass
class Expect:
    frames: int
    batch: bool = False
    replies: list[tuple[bytes, int | None]] = field(default_factory=list)


def predict(text: str) -> Expect:
    """What JSON-RPC 2.0 says the server answers to one text frame (parsed as it parses)."""
    try:
        obj = parse(text)
    except (json.JSONDecodeError, RecursionError):
        return Expect(1, False, [(key(None), -32700)])
    if isinstance(obj, list):
        if not obj or len(obj) > Limits.max_batch:
            # Empty, or past --max-batch: refused whole, one error with a null id.
            return Expect(1, False, [(key(None), -32600)])
        members = [r for r in map(_member, obj) if r is not None]
        return Expect(1 if members else 0, True, members)
    one = _member(obj)
    return Expect(0) if one is None else Expect(1, False, [one])


def check_error(error: Any, sent: str) -> None:
    assert isinstance(error, dict) and set(error) == {"code", "message", "data"}, error
    assert error["code"] in CODES, error
    assert isinstance(error["message"], str) and error["message"], error
    data = error["data"]
    assert isinstance(data, dict) and set(data) == DATA_KEYS, error
    assert type(data["error"]) is int, error
    assert isinstance(data["errname"], str) and data["errname"].startswith("E"), error
    reason = data["reason"]
    assert isinstance(reason, str) and reason, error
    assert data["extra"] is None or isinstance(data["extra"], list), error
    assert data["trace"] is None, error
    for marker in LEAK_MARKERS:
        assert marker not in reason or marker in sent, f"leak in reason: {reason!r:.500}"
    crash = CRASH.match(reason)
    if crash is not None and data["errname"] == "EFAULT":
        assert crash.group(0) in sent, f"unexpected exception reached the client: {reason!r:.500}"


def check_reply(reply: Any, sent: str) -> None:
    assert isinstance(reply, dict) and reply.get("jsonrpc") == "2.0", reply
    assert set(reply) in ({"jsonrpc", "id", "result"}, {"jsonrpc", "id", "error"}), reply
    if "error" in reply:
        check_error(reply["error"], sent)


def verify(expect: Expect, got: list[Any] | Closed, sent: str) -> list[dict[str, Any]]:
    """The replies match the oracle; returns them (batch members flattened)."""
    assert not isinstance(got, Closed), f"connection closed ({got.code}) after {sent!r:.300}"
    assert len(got) == expect.frames, (sent[:300], got, expect)
    if not got:
        return []
    replies = got[0] if expect.batch else [got[0]]
    if expect.batch:
        assert isinstance(replies, list) and len(replies) == len(expect.replies), (sent, got)
    for reply in replies:
        check_reply(reply, sent)
    assert Counter(key(r["id"]) for r in replies) == Counter(k for k, _ in expect.replies)
    forced = Counter((k, code) for k, code in expect.replies if code is not None)
    actual = Counter((key(r["id"]), r.get("error", {}).get("code")) for r in replies)
    assert not forced - actual, (sent[:300], replies)
    return list(replies)


def roundtrip(w: Wire, frame: str) -> list[dict[str, Any]]:
    """Send one frame and check what comes back; past the limit, the documented 1009."""
    if len(frame.encode()) > w.limit:
        got = w.expect_close(frame)
        assert isinstance(got, Closed) and got.code == 1009, got
        w.alive()
        return []
    expect = predict(frame)
    return verify(expect, w.exchange(frame, expect.frames), frame)


# --- strategies --------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
# Sums and differences of these leave 64 bits (test_unencodable_result_still_gets_a_reply).
SMALL_INT = st.integers(-(2**64), 2**64)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), FLOATS, st.text(max_size=30)
)


def _containers(kids: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(kids, max_size=6), st.dictionaries(st.text(max_size=12), kids, max_size=6)
    )


JSON_VALUES = st.recursive(SCALARS, _containers, max_leaves=25)
ABSENT = object()
IDS = st.one_of(
    INT64,
    FLOATS,
    st.text(max_size=40),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
# Methods without lasting side effects that answer at once (no gates, no logout, no options:
# core.set_options could turn tracebacks on).
SAFE_METHODS = [
    "core.ping",
    "core.get_jobs",
    "core.get_methods",
    "core.stats",
    "core.unsubscribe",
    "auth.me",
    "auth.mechanism_choices",
    "rpc.discover",
    "user.query",
    "api_key.query",
    "filesystem.stat",
    "filesystem.listdir",
    "test.echo",
    "test.subtract",
    "test.sum",
    "test.update",
    "test.notify_hello",
    "test.get_data",
    "test.fail",
]
ODD_METHODS = [
    "",
    ".",
    "core.",
    ".ping",
    "core..ping",
    "core.Ping",
    "CORE.PING",
    "core.ping ",
    " core.ping",
    "core.ping\x00",
    "__class__",
    "core.__init__",
    "core.get_jobs.x",
    "no.such_method",
    "filesystem",
    "☃.☃",
]

# -- query filters (PROTOCOL.md section 4) --
COLUMN_FIELDS = [
    "id",
    "method",
    "state",
    "description",
    "time_started",
    "time_finished",
    "progress.percent",
    "error",
    "credentials.data.username",
]
OTHER_FIELDS = [
    "arguments",
    "arguments.0",
    "arguments.1",
    "message_ids",
    "message_ids.0",
    "progress",
    "progress.description",
    "result",
    "exc_info",
    "exc_info.type",
    "exc_info.errno",
    "logs_path",
    "abortable",
    "transient",
    "credentials.type",
    "nope",
    "a.b.c",
    "0",
    "id.x",
    "state.0",
]
BAD_FIELDS: list[Any] = ["", ".", "a..b", ".a", "a.", 1, None, [], {}, True]
BASE_OPS = ["=", "!=", ">", ">=", "<", "<=", "~", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$"]
OPS = BASE_OPS + ["C" + op for op in BASE_OPS if op != "~"]
BAD_OPS: list[Any] = ["C~", "==", "like", "", None, 1, "IN", "c=", "!", "~~", "CC=", ["="]]
WORDS = st.sampled_from(
    [
        "SUCCESS",
        "FAILED",
        "ABORTED",
        "RUNNING",
        "WAITING",
        "success",
        "test.fail",
        "test.",
        "fail",
        "FAIL",
        "Boom",
        "boom",
        "BOOM",
        "root",
        "ROOT",
        "Counting",
        "ünïcödé",
        "ÜNÏCÖDÉ",
        "",
        "%",
        "_",
        "'",
        '"',
        "\\",
        "%_'\"\\",
        "step 1 of 3",
        "☃",
        "\x00",
        "nul\x00",
        "\x00in",
        "Copy /a\x00",
    ]
)
DATES = st.one_of(
    st.builds(lambda ms: {"$date": ms}, st.integers(0, 2**45)),
    st.sampled_from(
        ["2020-01-01", "2020-01-01T00:00:00Z", "2999-12-31T23:59:59+02:00", "2024-13-01", "x"]
    ),
    st.datetimes(timezones=st.sampled_from([None, UTC])).map(lambda d: d.isoformat()),
)
SHALLOW = st.one_of(
    SCALARS,
    WORDS,
    DATES,
    st.lists(st.one_of(SCALARS, WORDS), max_size=4),
    st.dictionaries(st.text(max_size=4), SCALARS, max_size=2),
)
# Regular expressions whose matching stays polynomial (at most two quantified atoms, no
# quantified group that could match the same text two ways): see test_catastrophic_regex_*.
REGEX_ATOMS = ["a", "e", "s", "t", ".", "\\.", "[a-z]", "[A-Z]", "\\d", "\\w", "(fail|test)"]
# Invalid, or at the edges of what re.compile accepts (a huge repeat, deep nesting).
ODD_REGEX = st.sampled_from(
    [
        *["(", ")", "[", "*", "+a", "a{2,1}", "\\", "(?P<1>x)", "[z-a]", "(?<=a+)b", "x**"],
        *["a{4294967296}", "(" * 200 + ")" * 200, "(" * 2000 + ")" * 2000],
    ]
)


@st.composite
def safe_regex(draw: st.DrawFn) -> str:
    atoms = draw(st.lists(st.sampled_from([*REGEX_ATOMS, "ü", "_", " ", "S"]), max_size=5))
    quantified = draw(st.sets(st.integers(0, 4), max_size=2))
    body = "".join(
        atom + (draw(st.sampled_from(["?", "*", "+", "{1,2}"])) if i in quantified else "")
        for i, atom in enumerate(atoms)
    )
    return draw(st.sampled_from(["", "^", "(?i)"])) + body + draw(st.sampled_from(["", "$"]))


def value_for(op: Any) -> st.SearchStrategy[Any]:
    base = op[1:] if isinstance(op, str) and op.startswith("C") and len(op) > 1 else op
    if base == "~":
        return st.one_of(safe_regex(), ODD_REGEX, SCALARS)
    if base in ("in", "nin"):
        return st.one_of(st.lists(st.one_of(SCALARS, WORDS, DATES), max_size=5), SHALLOW)
    if base in ("^", "!^", "$", "!$", "rin", "rnin"):
        return st.one_of(WORDS, st.text(max_size=6), SHALLOW)
    return SHALLOW


FIELDS = st.one_of(
    st.sampled_from(COLUMN_FIELDS), st.sampled_from(COLUMN_FIELDS), st.sampled_from(OTHER_FIELDS)
)
JOB_TEXT = st.one_of(WORDS, st.text(alphabet="abcefilmnorstuSUCEFAILDÜü ._%", max_size=6))


def valid_value_for(op: str) -> st.SearchStrategy[Any]:
    """Values the grammar accepts for ``op``, drawn close to what the jobs hold."""
    base = op[1:] if op.startswith("C") else op
    if base == "~":
        return safe_regex()
    if base in ("in", "nin"):
        return st.lists(st.one_of(JOB_TEXT, SCALARS, DATES), max_size=5)
    if base in ("^", "!^", "$", "!$"):
        return JOB_TEXT
    return st.one_of(JOB_TEXT, SCALARS, DATES, st.integers(0, 100), st.lists(SCALARS, max_size=2))


MALFORMED_CONDS: list[Any] = [
    [],
    ["id"],
    ["id", "="],
    ["id", "=", 1, 2],
    "id",
    1,
    None,
    {"id": 1},
    ["OR"],
    ["OR", []],
    ["OR", "x"],
    ["OR", [[]]],
    ["OR", [["OR", []]]],
]


@st.composite
def cond(draw: st.DrawFn, depth: int = 0) -> Any:
    kind = draw(st.sampled_from(["or", "or", "malformed", "garbage"] + ["valid"] * 20))
    if kind == "or" and depth < 5:
        return ["OR", draw(st.lists(branch(depth + 1), min_size=1, max_size=3))]
    if kind == "malformed":
        return draw(st.sampled_from(MALFORMED_CONDS))
    if kind == "garbage":  # garbage in one place or another
        fld = draw(st.one_of(st.sampled_from(BAD_FIELDS), st.text(max_size=6), FIELDS))
        op = draw(st.one_of(st.sampled_from(BAD_OPS), st.text(max_size=3), st.sampled_from(OPS)))
        return [fld, op, draw(st.one_of(value_for(op), SHALLOW))]
    op = draw(st.sampled_from(OPS))
    return [draw(FIELDS), op, draw(valid_value_for(op))]


@st.composite
def branch(draw: st.DrawFn, depth: int) -> Any:
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.lists(cond(depth), min_size=1, max_size=3))  # an AND group
    if kind == 1:
        return []
    return draw(cond(depth))


FILTERS = st.one_of(
    st.lists(cond(), max_size=3),
    st.lists(cond(), max_size=3),
    st.lists(cond(), max_size=3),
    st.lists(cond(), max_size=3),
    st.lists(cond(), max_size=3),
    st.sampled_from(["x", 1, None, {}, {"id": 1}, True, [[]], [["OR", []]]]),
)
ORDER_PREFIXES = ["", "-", "nulls_first:", "nulls_last:", "nulls_first:-", "-nulls_first:"]
FIELD_NAMES = st.one_of(
    st.sampled_from(COLUMN_FIELDS + OTHER_FIELDS), st.sampled_from(["", "a..b"]), st.text()
)
COUNTS: st.SearchStrategy[Any] = st.one_of(
    st.integers(0, 20),
    st.integers(0, 2**61),
    st.integers(2**61, 2**64 - 1),
    st.integers(-5, -1),
    st.sampled_from([True, 1.5, "1", None, []]),
)
OPTION_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "order_by": st.one_of(
        st.lists(st.builds(str.__add__, st.sampled_from(ORDER_PREFIXES), FIELD_NAMES), max_size=3),
        st.sampled_from(["id", 1, None, [1], [None]]),
    ),
    "limit": COUNTS,
    "offset": COUNTS,
    "count": st.one_of(st.booleans(), st.sampled_from([0, "yes", None])),
    "get": st.one_of(st.booleans(), st.sampled_from([1, "no", None])),
    "select": st.one_of(
        st.lists(
            st.one_of(FIELD_NAMES, st.lists(FIELD_NAMES, min_size=2, max_size=2), SCALARS),
            max_size=4,
        ),
        st.sampled_from(["id", 1, None]),
    ),
    "extra": st.one_of(st.dictionaries(st.text(max_size=4), SCALARS, max_size=2), SCALARS),
}


VALID_FIELD_NAMES = st.sampled_from(COLUMN_FIELDS + OTHER_FIELDS)
VALID_OPTION_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "order_by": st.lists(
        st.builds(str.__add__, st.sampled_from(ORDER_PREFIXES[:5]), VALID_FIELD_NAMES),
        max_size=3,
    ),
    "limit": st.one_of(st.integers(0, 5), st.integers(0, 2**61)),
    "offset": st.one_of(st.integers(0, 5), st.integers(0, 2**61)),
    "count": st.booleans(),
    "get": st.booleans(),
    "select": st.lists(
        st.one_of(VALID_FIELD_NAMES, st.tuples(VALID_FIELD_NAMES, st.text(min_size=1)).map(list)),
        max_size=4,
    ),
    "extra": st.dictionaries(st.text(max_size=4), SCALARS, max_size=2),
}


@st.composite
def query_options(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 15)) == 0:
        return draw(st.sampled_from([None, [], "x", 1, True]))
    valid = draw(st.sampled_from([True] * 7 + [False]))
    opts: dict[str, Any] = {}
    for name, values in (VALID_OPTION_VALUES if valid else OPTION_VALUES).items():
        if draw(st.integers(0, 2)) == 0:
            opts[name] = draw(values)
    if draw(st.integers(0, 12)) == 0:
        opts[draw(st.text(max_size=5))] = 1
    return opts


QUERY_PARAMS = st.one_of(
    st.tuples(FILTERS, query_options()).map(list),
    st.lists(FILTERS, max_size=1),
    st.lists(SCALARS, max_size=3),
)


def plausible_params(paths: st.SearchStrategy[str]) -> dict[str, st.SearchStrategy[Any]]:
    """Params that often get past validation, so the fuzzing reaches the methods' code."""
    path_params = st.lists(paths, min_size=1, max_size=1)
    return {
        "test.echo": st.one_of(
            st.builds(lambda v: [v], JSON_VALUES), st.builds(lambda v: {"value": v}, JSON_VALUES)
        ),
        "test.subtract": st.one_of(
            st.lists(SMALL_INT, max_size=3),
            st.fixed_dictionaries({"minuend": SMALL_INT, "subtrahend": SMALL_INT}),
        ),
        "test.sum": st.lists(SMALL_INT, max_size=4),
        "test.update": st.lists(SMALL_INT, max_size=6),
        "test.notify_hello": st.lists(SMALL_INT, max_size=2),
        "test.fail": st.lists(st.text(max_size=40), min_size=1, max_size=1),
        "core.get_jobs": QUERY_PARAMS,
        "user.query": QUERY_PARAMS,
        "api_key.query": QUERY_PARAMS,
        "filesystem.stat": path_params,
        "filesystem.listdir": path_params,
        "core.unsubscribe": st.lists(st.text(max_size=16), max_size=1),
    }


@st.composite
def request_objects(draw: st.DrawFn, paths: st.SearchStrategy[str]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    jsonrpc = draw(
        st.one_of(
            st.just("2.0"),
            st.just("2.0"),
            st.just("2.0"),
            st.sampled_from(["1.0", 2.0, 2, None, "", "2.0 ", ABSENT]),
        )
    )
    if jsonrpc is not ABSENT:
        obj["jsonrpc"] = jsonrpc
    msg_id = draw(st.one_of(IDS, st.just(ABSENT)))
    if msg_id is not ABSENT:
        obj["id"] = msg_id
    method = draw(
        st.one_of(
            st.sampled_from(SAFE_METHODS),
            st.sampled_from(SAFE_METHODS),
            st.sampled_from(ODD_METHODS),
            st.text(max_size=30),
            st.sampled_from([None, 1, [], {}, True, ABSENT]),
        )
    )
    if method is not ABSENT:
        obj["method"] = method
    plausible = plausible_params(paths).get(method) if isinstance(method, str) else None
    generic = st.one_of(
        st.just(ABSENT),
        st.just([]),
        st.lists(JSON_VALUES, max_size=4),
        st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=3),
        SCALARS,
    )
    params = draw(st.one_of(plausible, plausible, generic) if plausible is not None else generic)
    if params is not ABSENT:
        obj["params"] = params
    if draw(st.integers(0, 9)) == 0:
        obj[draw(st.text(max_size=8))] = draw(SCALARS)
    return obj


GENERIC_PATHS = st.one_of(
    st.sampled_from(["/", "/etc", "/etc/passwd", "..", "relative", "/proc/self/environ"]),
    st.text(max_size=20),
)


# --- 1. frames, requests, batches --------------------------------------------------------------


def test_arbitrary_json_values_as_frames(wire: Wire, anon: Wire, long_run: bool) -> None:
    @fuzz_settings(long_run, 120)
    @given(value=JSON_VALUES, authenticated=st.booleans())
    def run(value: Any, authenticated: bool) -> None:
        roundtrip(wire if authenticated else anon, json.dumps(value))

    run()


TOKENS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "undefined",
    "'x'",
    "//c\n",
    "/*c*/",
    ",",
    "\ufeff",
    "\x00",
    "\\ud800",
    '"\\ud800"',
    '"\\udc00\\ud800"',
    "1e999",
    "-",
    "0x10",
    "01",
    ".5",
    "True",
    "None",
    '"\\x41"',
    '"\t"',
    "\u2028",
    "}",
    "]",
    "{",
    "[",
    ":",
    '"',
    "\\",
    " ",
    "\n",
]
VALID_FRAMES = st.one_of(
    st.builds(
        lambda i, m, p: json.dumps({"jsonrpc": "2.0", "id": i, "method": m, "params": p}),
        st.integers(0, 1000),
        st.sampled_from(["core.ping", "test.echo", "test.subtract"]),
        st.lists(st.integers(-10, 10), max_size=2),
    ),
    JSON_VALUES.map(json.dumps),
)


@st.composite
def near_json(draw: st.DrawFn) -> str:
    text = draw(VALID_FRAMES)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["truncate", "insert", "delete", "replace", "wrap", "double"]))
        token = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=2)))
        if op == "truncate":
            text = text[:i]
        elif op == "insert":
            text = text[:i] + token + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + 1 :]
        elif op == "replace":
            text = text[:i] + token + text[i + 1 :]
        elif op == "wrap":
            text = token + text + token
        else:
            text = text + text
    return text


def test_near_json_text_as_frames(wire: Wire, anon: Wire, long_run: bool) -> None:
    @fuzz_settings(long_run, 150)
    @given(
        text=st.one_of(near_json(), near_json(), st.text(max_size=200)),
        authenticated=st.booleans(),
    )
    # Lone surrogates are strings (names that are not UTF-8 travel so): echoed, not -32700.
    @example(
        text='{"jsonrpc": "2.0", "id": "\\udc00", "method": "test.echo", '
        '"params": ["\\udc00\\ud800"]}',
        authenticated=True,
    )
    def run(text: str, authenticated: bool) -> None:
        roundtrip(wire if authenticated else anon, text)

    run()


def test_binary_frames_close_1003(anon: Wire, long_run: bool) -> None:
    @fuzz_settings(long_run, 10)
    @given(payload=st.binary(max_size=100))
    def run(payload: bytes) -> None:
        got = anon.expect_close(payload)
        assert isinstance(got, Closed) and got.code == 1003, got
        anon.alive()

    run()


def test_random_requests(wire: Wire, anon: Wire, server: ServerProc, long_run: bool) -> None:
    root = server.data_dir / "files"
    paths = st.one_of(GENERIC_PATHS, st.sampled_from([str(root), f"{root}/..", f"{root}/x"]))

    @fuzz_settings(long_run, 200)
    @given(obj=request_objects(paths), authenticated=st.booleans())
    def run(obj: dict[str, Any], authenticated: bool) -> None:
        w = wire if authenticated else anon
        frame = json.dumps(obj)
        replies = roundtrip(w, frame)
        params: Any = obj.get("params")
        if replies and "result" in replies[0] and obj.get("method") == "test.echo":
            value = params[0] if isinstance(params, list) else params["value"]
            assert replies[0]["result"] == parse(json.dumps(value))
        if replies and not authenticated and obj.get("method") not in PUBLIC_METHODS:
            error = replies[0].get("error")
            assert error is not None, replies[0]
            if error["code"] == -32001:
                assert error["data"]["error"] == ENOTAUTHENTICATED, error

    run()


@st.composite
def batches(draw: st.DrawFn, paths: st.SearchStrategy[str]) -> list[Any]:
    kind = draw(st.integers(0, 9))
    if kind == 0:  # huge-ish, within the frame limit
        n = draw(st.integers(200, 1500))
        notify = draw(st.integers(0, 3))
        return [
            {"jsonrpc": "2.0", "method": "core.ping"}
            if notify and i % notify == 0
            else {"jsonrpc": "2.0", "id": i, "method": "core.ping"}
            for i in range(n)
        ]
    member = st.one_of(
        request_objects(paths),
        request_objects(paths),
        JSON_VALUES,
        st.lists(request_objects(paths), max_size=3),  # nested batch
        st.just([]),
    )
    return draw(st.lists(member, max_size=40))


def test_random_batches(wire: Wire, anon: Wire, server: ServerProc, long_run: bool) -> None:
    root = server.data_dir / "files"
    paths = st.one_of(GENERIC_PATHS, st.just(str(root)))

    @fuzz_settings(long_run, 60)
    @given(batch=batches(paths), authenticated=st.booleans())
    def run(batch: list[Any], authenticated: bool) -> None:
        roundtrip(wire if authenticated else anon, json.dumps(batch))

    run()


def _deep(n: int, leaf: str = "0") -> str:
    return "[" * n + leaf + "]" * n


def _request(method: str, params_text: str, msg_id: int = 1) -> str:
    return f'{{"jsonrpc": "2.0", "id": {msg_id}, "method": "{method}", "params": {params_text}}}'


def nested_frame(shape: str, n: int) -> str:
    """Deep or large frames that stay within the default frame limit (16 MiB after login)."""
    frames: dict[str, Callable[[], str]] = {
        "deep array frame": lambda: _deep(n, ""),
        "deep object frame": lambda: '{"a":' * n + "1" + "}" * n,
        "deep params": lambda: _request("core.ping", f"[{_deep(n)}]"),
        "deep params typed": lambda: _request("test.subtract", f"[{_deep(n)}, 1]"),
        "deep by-name params": lambda: _request("test.sum", '{"a":' * n + "1" + "}" * n),
        "deep filters": lambda: _request("core.get_jobs", f"[[{_deep(n)}]]"),
        "deep batch member": lambda: f"[{_request('core.ping', '[]')}, {_deep(n)}]",
        "deep filter value": lambda: _request("core.get_jobs", f'[[["method", "=", {_deep(n)}]]]'),
        "deep echo": lambda: _request("test.echo", f"[{_deep(min(n, 1000))}]"),
        "huge string": lambda: _request("test.echo", json.dumps(["x" * (n * 3000)])),
        "huge multibyte string": lambda: _request("test.echo", json.dumps(["☃😀" * (n * 500)])),
        "huge array": lambda: _request("test.echo", json.dumps([list(range(n * 300))])),
        "many params": lambda: _request("core.ping", json.dumps(list(range(n * 100)))),
        "many unknown names": lambda: _request(
            "test.echo", json.dumps({f"k{i}": i for i in range(n * 20)} | {"value": 1})
        ),
        "long method": lambda: _request("m" * (n * 1000), "[]"),
        "long id": lambda: json.dumps({"jsonrpc": "2.0", "id": "i" * (n * 1000), "method": "x"}),
    }
    return frames[shape]()


NESTED_SHAPES = [
    "deep array frame",
    "deep object frame",
    "deep params",
    "deep params typed",
    "deep by-name params",
    "deep filters",
    "deep batch member",
    "deep filter value",
    "deep echo",
    "huge string",
    "huge multibyte string",
    "huge array",
    "many params",
    "many unknown names",
    "long method",
    "long id",
]


def test_deep_and_large_frames_within_the_limits(wire: Wire, long_run: bool) -> None:
    @fuzz_settings(long_run, 40)
    @given(shape=st.sampled_from(NESTED_SHAPES), n=st.integers(1, 1100))
    @example(shape="deep array frame", n=1024)
    @example(shape="deep array frame", n=1025)
    @example(shape="huge string", n=1100)
    def run(shape: str, n: int) -> None:
        frame = nested_frame(shape, n)
        assert len(frame.encode()) <= 16 * 1024 * 1024
        replies = roundtrip(wire, frame)
        if shape in ("huge string", "huge multibyte string", "huge array", "deep echo"):
            reply = replies[0]
            if shape == "deep echo" and "error" in reply:
                assert reply["error"]["code"] == -32603, reply  # too deep for any encoder
            else:
                assert reply.get("result") == parse(frame)["params"][0]

    run()


def _frame_of_size(nbytes: int, char: str) -> str:
    """A test.echo call of exactly ``nbytes`` bytes of UTF-8 (padded with ASCII)."""
    head, tail = '{"jsonrpc":"2.0","id":7,"method":"test.echo","params":["', '"]}'
    room = max(0, nbytes - len(head) - len(tail))
    wide = len(char.encode())
    pad = char * (room // wide) + "x" * (room % wide)
    return head + pad + tail


def test_frames_past_the_limits_close_1009(
    make_server: Callable[..., ServerProc], long_run: bool
) -> None:
    unauth_limit, auth_limit = 4096, 65536
    srv = make_server(
        "--max-frame-unauthenticated", str(unauth_limit), "--max-frame", str(auth_limit)
    )
    admin = Wire(srv.ws_url, ("root", srv.password))
    token = admin.result("auth.generate_token", 3600, False)
    authed = Wire(srv.ws_url, (token,), "auth.login_with_token")
    anon = Wire(srv.ws_url)
    closes = Counter[str]()

    @fuzz_settings(long_run, 40)
    @given(
        authenticated=st.booleans(),
        ratio=st.floats(0.0, 3.0),
        char=st.sampled_from(["x", "é", "☃", "😀"]),
        kind=st.sampled_from(["exact", "deep", "batch"]),
    )
    @example(authenticated=False, ratio=1.0, char="x", kind="exact")
    @example(authenticated=False, ratio=1.001, char="x", kind="exact")
    @example(authenticated=True, ratio=1.0, char="😀", kind="exact")
    @example(authenticated=True, ratio=1.001, char="x", kind="exact")
    def run(authenticated: bool, ratio: float, char: str, kind: str) -> None:
        w, limit = (authed, auth_limit) if authenticated else (anon, unauth_limit)
        size = int(limit * ratio)
        if kind == "exact":
            frame = _frame_of_size(size, char)
        elif kind == "deep":
            frame = _request("test.subtract", f"[{_deep(min(size // 2, 1000))}, 1]")
            frame += " " * max(0, size - len(frame))
        else:
            one = _request("core.ping", "[]")
            frame = "[" + ", ".join([one] * max(1, size // (len(one) + 2))) + "]"
        nbytes = len(frame.encode())
        expect = predict(frame)
        if nbytes > limit:
            got = w.expect_close(frame)
            assert isinstance(got, Closed) and got.code == 1009, (nbytes, limit, got)
            closes["1009"] += 1
        else:
            replies = verify(expect, w.exchange(frame, expect.frames), frame)
            if kind == "exact" and authenticated:
                assert replies[0]["result"] == parse(frame)["params"][0]
            elif kind == "exact":
                assert replies[0]["error"]["data"]["error"] == ENOTAUTHENTICATED
            closes["served"] += 1
        w.alive()

    try:
        run()
        print(f"frame limit fuzz outcomes: {dict(closes)}")
        assert closes["1009"] and closes["served"], closes
        admin.alive()
    finally:
        for w in (admin, authed, anon):
            w.close()


def test_frame_of_exactly_the_limit_is_served_after_login(
    make_server: Callable[..., ServerProc],
) -> None:
    """Regression: aiohttp's max_msg_size is exclusive, so after login a frame of exactly
    --max-frame bytes was closed with 1009 while before login the limit was inclusive."""
    srv = make_server("--max-frame-unauthenticated", "4096", "--max-frame", "65536")
    outcomes = {}
    for login, limit in ((None, 4096), (("root", srv.password), 65536)):
        w = Wire(srv.ws_url, login)
        try:
            frame = _frame_of_size(limit, "x")
            got = w.exchange(frame, 1)
            outcomes[limit] = "closed" if isinstance(got, Closed) else "served"
        finally:
            w.close()
    assert outcomes == {4096: "served", 65536: "served"}, outcomes


@pytest.mark.parametrize(
    "frame",
    [
        _request("test.echo", f"[{_deep(300)}]"),
        _request("test.subtract", f"[{-(2**63)}, 1]"),
        _request("test.sum", f"[{2**63 - 1}, {2**63 - 1}, {2**63 - 1}]"),
        f"[{_request('test.echo', f'[{_deep(300)}]')}]",
    ],
    ids=["deep echo", "subtract overflow", "sum overflow", "in a batch"],
)
def test_unencodable_result_still_gets_a_reply(server: ServerProc, frame: str) -> None:
    """Regression: a result orjson cannot encode (nested past 254 levels, an integer past 64
    bits) killed Session._single in encode() and the caller waited forever."""
    w = Wire(server.ws_url, ("root", server.password))
    try:
        got = w.exchange(frame, 1, timeout=2.0)
        replies = verify(predict(frame), got, frame)
        assert "result" in replies[0] or replies[0]["error"]["code"] in (-32603, -32001)
    finally:
        w.close()


def test_big_integer_id_is_echoed_exactly(server: ServerProc) -> None:
    """Regression: orjson reads integers past 64 bits as floats, so a big integer id came
    back as a different number (JSON-RPC: the reply id MUST be the request's)."""
    big = 123456789012345678901234567890
    with connect(server.ws_url, max_size=None) as ws:
        ws.send(f'{{"jsonrpc": "2.0", "id": {big}, "method": "core.ping"}}')
        reply = json.loads(ws.recv(timeout=RECV_TIMEOUT))  # stdlib json: exact integers
    assert reply.get("id") == big or (
        reply["id"] is None and reply.get("error", {}).get("code") == -32600
    ), reply


# --- 2. query filters and options --------------------------------------------------------------

# Never true (the field is missing) and always decided in Python (``~`` never runs in SQL): an
# OR holding it sends the rest of the filter to Python as well.
MISSING_FIELD_COND = ["zz_fuzz_not_a_column", "~", "x"]


@pytest.fixture(scope="module")
def fuzz_jobs(wire: Wire) -> list[int]:
    """Ended jobs with varied fields for the filters to match."""
    wire.result("core.set_options", {"legacy_jobs": True})
    calls: list[tuple[str, list[Any]]] = [
        ("test.fail", ["Boom"]),
        ("test.fail", ["boom"]),
        ("test.fail", ["ÜNÏCÖDÉ ünïcödé ☃"]),
        ("test.fail", ["%_'\"\\ and more"]),
        ("test.fail", [""]),
        ("test.fail", ["nul\x00in the middle"]),
        ("test.progress", [3]),
        ("test.progress", [1]),
        ("test.secret", ["alice", "pw"]),
        ("test.logs", [2]),
        ("test.slow", [5]),
        ("test.flood", [10]),
        ("filesystem.copy", ["/not/inside", "/nor/this"]),
    ]
    ids = [wire.result(method, *params) for method, params in calls]
    wire.result("core.set_options", {"legacy_jobs": False})
    for job_id in ids:
        wire.call("core.job_wait", job_id)
    return ids


def _query_ok(reply: dict[str, Any], options: Any) -> None:
    """A result of the right shape, or a validation error, or not-found for ``get``."""
    if "result" in reply:
        result = reply["result"]
        opts = options if isinstance(options, dict) else {}
        if opts.get("count") is True:
            assert type(result) is int and result >= 0, result
        elif opts.get("get") is True:
            assert isinstance(result, dict), result
        else:
            assert isinstance(result, list), result
            assert all(isinstance(r, dict) for r in result), result
        return
    error = reply["error"]
    data = error["data"]
    if error["code"] == -32001 and data["error"] == ENOENT:
        assert isinstance(options, dict) and options.get("get") is True, error
        return
    assert error["code"] == -32602, error
    assert data["errname"] == "EINVAL", error
    assert isinstance(data["extra"], list) and data["extra"], error
    for item in data["extra"]:
        assert isinstance(item, list) and len(item) == 3, item
        assert isinstance(item[0], str) and isinstance(item[1], str) and type(item[2]) is int


def test_query_filters_and_options(wire: Wire, fuzz_jobs: list[int], long_run: bool) -> None:
    stats = Counter[str]()

    @fuzz_settings(long_run, 250)
    @given(
        method=st.sampled_from(["core.get_jobs", "core.get_jobs", "user.query", "api_key.query"]),
        filters=FILTERS,
        options=query_options(),
    )
    def run(method: str, filters: Any, options: Any) -> None:
        reply = wire.call(method, filters, options)
        sent = json.dumps([filters, options])
        check_reply(reply, sent)
        _query_ok(reply, options)
        stats["result" if "result" in reply else "error"] += 1
        if method != "core.get_jobs" or not isinstance(filters, list) or not filters:
            return
        # One semantics in SQL and in Python: an OR holding a condition SQL cannot decide is
        # evaluated in Python, so the same filter wrapped in it must select the same jobs.
        # Both are narrowed to this module's jobs.
        mine = ["id", "in", fuzz_jobs]
        sql = wire.call(method, [mine, *filters], options)
        python = wire.call(method, [mine, ["OR", [filters, MISSING_FIELD_COND]]], options)
        check_reply(sql, sent)
        check_reply(python, sent)
        if "error" in python and "deeper than" in python["error"]["data"]["reason"]:
            return
        if "result" in sql:
            stats["compared"] += 1
        assert ("result" in sql) == ("result" in python), (sql, python)
        if "result" in sql:
            assert sql["result"] == python["result"], (filters, options)
        else:
            assert sql["error"]["code"] == python["error"]["code"], (sql, python)

    run()
    print(f"query fuzz outcomes: {dict(stats)}")
    assert stats["result"] and stats["error"] and stats["compared"], stats
    wire.alive()


@pytest.mark.parametrize(
    ("method", "filters", "options"),
    [
        ("core.get_jobs", [], {"limit": 2**63}),
        ("core.get_jobs", [], {"offset": 2**64 - 1}),
        ("core.get_jobs", [["method", "~", "a{4294967296}"]], {}),
        ("core.get_jobs", [["method", "=", "DEEP"]], {}),
        ("user.query", [["username", "=", "DEEP"]], {}),
        ("api_key.query", [["name", "in", ["DEEP"]]], {}),
    ],
    ids=["limit", "offset", "regex repeat", "deep value", "deep user.query", "deep api_key"],
)
def test_query_crashers_are_validation_errors(
    wire: Wire, method: str, filters: Any, options: Any
) -> None:
    """Regression: these got past validation and crashed the query with EFAULT: limit/offset
    past 2**63-1 overflowed SQLite, a huge regex repeat raised OverflowError, a filter value
    nested ~500 deep raised RecursionError."""
    text = json.dumps([filters, options]).replace('"DEEP"', _deep(700))
    frame = _request(method, text)
    replies = roundtrip(wire, frame)
    assert "result" in replies[0] or replies[0]["error"]["code"] == -32602, replies[0]


def test_sql_and_python_agree_on_text_with_nul(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server()
    w = Wire(srv.ws_url, ("root", srv.password))
    try:
        w.result("core.set_options", {"legacy_jobs": True})
        # A real method: the job exists (and keeps its description) before it fails.
        job_id = w.result("filesystem.copy", "/a\x00b", "/dst")
        w.call("core.job_wait", job_id)
        record = w.result("core.get_jobs", [["id", "=", job_id]], {"get": True})
        assert record["description"] == "Copy /a\x00b to /dst"
        differ = []
        for cond in (
            ["description", "$", "to /dst"],
            ["description", "!$", "to /dst"],
            ["description", "C$", "TO /DST"],
            ["description", "^", "Copy /a\x00"],
        ):
            sql = w.result("core.get_jobs", [["id", "=", job_id], cond], {"count": True})
            python = w.result(
                "core.get_jobs",
                [["id", "=", job_id], ["OR", [cond, MISSING_FIELD_COND]]],
                {"count": True},
            )
            if sql != python:
                differ.append((cond, sql, python))
        assert not differ, differ
    finally:
        w.close()


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [("(g+)+x", True), ("(g+)+y", False), ("(g|g)+$", None), ("(g|gg)+$", None)],
)
def test_catastrophic_regex_does_not_freeze_the_server(
    server: ServerProc, pattern: str, matches: bool | None
) -> None:
    """Nested repetition over a field the caller controls: the query answers (a match, or
    an error saying the pattern took too long) and other connections are served meanwhile."""
    w = Wire(server.ws_url, ("root", server.password))
    other = Wire(server.ws_url)
    try:
        w.result("core.set_options", {"legacy_jobs": True})
        job_id = w.result("test.fail", "g" * 40 + "x!")
        w.call("core.job_wait", job_id)
        other.alive()
        replies: list[dict[str, Any]] = []

        def query() -> None:
            cond = ["error", "~", pattern]
            replies.append(w.call("core.get_jobs", [["id", "=", job_id], cond], timeout=120))

        worker = threading.Thread(target=query, daemon=True)
        worker.start()
        time.sleep(0.05)  # let the query reach the server before measuring
        started = time.monotonic()
        other.alive()
        latency = time.monotonic() - started
        worker.join(120)
        assert replies, "no reply to the query"
        reply = replies[0]
        if matches is None:  # exponential backtracking: stopped, with the reason
            assert reply["error"]["code"] == -32602, reply
            assert "took longer than" in reply["error"]["data"]["reason"], reply
        else:  # the engine's own optimisations answer these at once, as re would
            assert [j["id"] for j in reply["result"]] == ([job_id] if matches else []), reply
        assert latency < 0.5, f"core.ping took {latency:.2f} s while a filter ran"
        other.alive()
    finally:
        w.close()
        other.close()


# --- 3. filesystem paths -----------------------------------------------------------------------


@dataclass
class FsTree:
    root: Path
    base: Path
    outside: Path
    secret: str


@pytest.fixture(scope="module")
def fs_tree(server: ServerProc) -> FsTree:
    root = (server.data_dir / "files").resolve()
    base = root / "fz"
    secret = f"SECRET-{uuid.uuid4().hex[:8]}"
    outside = server.data_dir.resolve() / "files-outside"  # shares the root's name as prefix
    outside.mkdir()
    (outside / f"{secret}.txt").write_text("top secret")
    (base / "dir" / "sub").mkdir(parents=True)
    (base / "dir" / "a.txt").write_text("a")
    (base / "dir" / "sub" / "b.txt").write_text("b")
    (base / "ünïcödé ☃.txt").write_text("u")
    (base / "e\u0301.txt").write_text("nfd")
    (base / ("x" * 255)).write_text("long")
    links = {
        "in_link": "dir/a.txt",
        "abs_in": str(base / "dir"),
        "escape": "/etc",
        "escape_rel": "../../..",
        "pfx": str(outside),
        "secret_file": str(outside / f"{secret}.txt"),
        "dangling": "/nonexistent-fz/x",
        "dangling_in": "missing-target",
        "loop_a": "loop_b",
        "loop_b": "loop_a",
        "self": "self",
        "root_link": str(root),
    }
    for name, target in links.items():
        os.symlink(target, base / name)
    os.mkfifo(base / "fifo")
    return FsTree(root, base, outside, secret)


SEGMENTS = [
    "..",
    ".",
    "",
    "fz",
    "dir",
    "sub",
    "a.txt",
    "b.txt",
    "in_link",
    "abs_in",
    "escape",
    "escape_rel",
    "pfx",
    "secret_file",
    "dangling",
    "dangling_in",
    "loop_a",
    "self",
    "root_link",
    "fifo",
    "files",
    "files-outside",
    "etc",
    "passwd",
    "ünïcödé ☃.txt",
    "e\u0301.txt",
    "é.txt",
    "x" * 255,
    "x" * 256,
    "y" * 5000,
]


def lexical(path: str) -> Path:
    """``path`` normalised as text: what the server acts on (it resolves no symlink)."""
    return Path("/" + os.path.normpath(path).lstrip("/"))


def expected_ok(path: str, method: str, root: Path) -> bool:
    """Whether the path names something inside the root with no symlink on the way (what
    may be served): a symlink at the end is stat'ed as itself, never listed through."""
    if not path or len(path) > 4096 or "\x00" in path or not os.path.isabs(path):
        return False
    if len(os.fsencode(path)) > 4096:
        return False
    norm = lexical(path)
    if not norm.is_relative_to(root):
        return False
    here = root
    try:
        for part in norm.relative_to(root).parts:
            if here.is_symlink() or not here.is_dir():
                return False
            here = here / part
        here.lstat()
    except OSError:  # missing, or a name too long
        return False
    return method == "filesystem.stat" or (here.is_dir() and not here.is_symlink())


def test_filesystem_paths_stay_inside_the_root(wire: Wire, fs_tree: FsTree, long_run: bool) -> None:
    root, base = fs_tree.root, fs_tree.base
    prefixes = [str(root), str(base), "/", "", "//", f"{root}/", str(root.parent), "/etc"]
    prefixes += ["/proc/self", str(root).upper(), "~", "./", f"/{root}", f"{base}/dir/"]
    outcomes = Counter[str]()

    @fuzz_settings(long_run, 250)
    @given(
        method=st.sampled_from(["filesystem.stat", "filesystem.listdir"]),
        prefix=st.one_of(st.sampled_from([str(base), str(root)]), st.sampled_from(prefixes)),
        segments=st.lists(
            st.one_of(st.sampled_from(SEGMENTS), st.sampled_from(SEGMENTS), st.text(max_size=8)),
            max_size=5,
        ),
        trailing=st.booleans(),
        nul_at=st.one_of(st.none(), st.integers(0, 400)),
    )
    @example(
        method="filesystem.listdir",
        prefix=str(base),
        segments=["escape"],
        trailing=False,
        nul_at=None,
    )
    @example(
        method="filesystem.stat", prefix=str(base), segments=["pfx"], trailing=False, nul_at=None
    )
    def run(
        method: str, prefix: str, segments: list[str], trailing: bool, nul_at: int | None
    ) -> None:
        path = prefix + ("/" if segments and not prefix.endswith("/") else "")
        path += "/".join(segments) + ("/" if trailing else "")
        if nul_at is not None:
            path = path[:nul_at] + "\x00" + path[nul_at:]
        frame = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": [path]})
        (reply,) = roundtrip(wire, frame)
        text = json.dumps(reply)
        assert fs_tree.secret not in text or fs_tree.secret in path, reply
        ok = expected_ok(path, method, root)
        outcomes["served" if ok else "refused"] += 1
        if not ok:
            assert "error" in reply, (path, reply)
            assert reply["error"]["code"] == -32602, reply
            (item,) = reply["error"]["data"]["extra"]
            assert item[0] == "path", reply
            return
        assert "result" in reply, (path, reply)
        norm = lexical(path)
        entries = [reply["result"]] if method == "filesystem.stat" else reply["result"]
        for entry in entries:
            assert Path(entry["path"]).is_relative_to(root), entry
        if method == "filesystem.stat":
            assert reply["result"]["path"] == str(norm), (path, reply)
        else:
            assert [e["name"] for e in entries] == sorted(os.listdir(norm), key=Path), path

    run()
    print(f"filesystem fuzz outcomes: {dict(outcomes)}")
    assert outcomes["served"] and outcomes["refused"], outcomes


def test_symlink_escape_is_refused(wire: Wire, fs_tree: FsTree) -> None:
    for name in ("escape", "escape_rel", "pfx", "secret_file", "in_link", "abs_in"):
        # Listed through: refused, wherever the link points.
        reply = wire.call("filesystem.listdir", str(fs_tree.base / name))
        assert reply.get("error", {}).get("code") == -32602, (name, reply)
        assert reply["error"]["data"]["extra"][0][2] == errno.ELOOP, reply
        assert fs_tree.secret not in json.dumps(reply) and "passwd" not in json.dumps(reply)
        # Stat'ed: the link itself, which is inside.
        entry = wire.result("filesystem.stat", str(fs_tree.base / name))
        assert entry["type"] == "SYMLINK" and entry["path"] == str(fs_tree.base / name)
        assert fs_tree.secret not in json.dumps(entry)
    # Through the escape, outside files look exactly like missing ones: no existence oracle.
    there = wire.call("filesystem.stat", str(fs_tree.base / "escape" / "passwd"))
    absent = wire.call("filesystem.stat", str(fs_tree.base / "escape" / "no-such-file-here"))
    assert there["error"]["data"] == absent["error"]["data"]
    assert there["error"]["data"]["extra"][0][2] == errno.ELOOP, there
    listed = wire.result("filesystem.listdir", str(fs_tree.base))
    assert {e["name"] for e in listed} >= {"escape", "pfx"}  # the links themselves are inside
    assert all(Path(e["path"]).parent == fs_tree.base for e in listed)


# --- 4. multipart uploads ----------------------------------------------------------------------

UPLOAD_STATUSES = {200, 400, 401, 403, 405, 413, 422}
HEADER_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cc"], exclude_characters='"\\'),
    max_size=12,
)


@dataclass
class Part:
    name: str | None
    filename: str | None
    content_type: str | None
    body: bytes


@dataclass
class Upload:
    parts: list[Part]
    boundary: str
    auth: bool
    mode: str  # complete | cut | overdeclared
    cut_at: float = 1.0
    expect: set[int] = field(default_factory=set)


def http_post(
    srv: ServerProc, body: bytes, content_type: str, auth: bool, length: int, vanish: bool = False
) -> Any:
    """POST /_upload over a raw socket; (status, JSON body or raw bytes) or None if cut.

    ``vanish``: half-close after ``body`` as a client that went away mid-upload."""
    head = (
        f"POST /_upload HTTP/1.1\r\nHost: {srv.host}\r\nConnection: close\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n"
    )
    if auth:
        token = base64.b64encode(f"root:{srv.password}".encode()).decode()
        head += f"Authorization: Basic {token}\r\n"
    with socket.create_connection((srv.host, srv.port), timeout=RECV_TIMEOUT) as s:
        with suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(head.encode() + b"\r\n" + body)
            if vanish:
                s.shutdown(socket.SHUT_WR)
        return read_response(s)


def read_response(s: socket.socket) -> tuple[int, Any] | None:
    """The response as soon as it is complete (a refusal may be followed by a lingering
    read of the unsent body); None if the connection ends without one."""
    data = b""
    while True:
        head, sep, payload = data.partition(b"\r\n\r\n")
        if sep:
            lower = head.lower()
            length = re.search(rb"\r\ncontent-length: *(\d+)", lower)
            chunked = b"transfer-encoding: chunked" in lower
            if length is not None and len(payload) >= int(length.group(1)):
                break
            if chunked and payload.endswith(b"0\r\n\r\n"):
                payload = _dechunk(payload)
                break
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if not sep:
                return None
            break
        data += chunk
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload


def _dechunk(payload: bytes) -> bytes:
    out = b""
    while payload:
        size_line, _, rest = payload.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, payload = out + rest[:size], rest[size + 2 :]
    return out


def encode_multipart(parts: list[Part], boundary: str) -> bytes:
    out = b""
    for p in parts:
        disposition = ["form-data"]
        if p.name is not None:
            disposition.append(f'name="{p.name}"')
        if p.filename is not None:
            disposition.append(f'filename="{p.filename}"')
        headers = f"Content-Disposition: {'; '.join(disposition)}\r\n"
        if p.content_type is not None:
            headers += f"Content-Type: {p.content_type}\r\n"
        out += f"--{boundary}\r\n{headers}\r\n".encode() + p.body + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def data_parts(root: Path) -> st.SearchStrategy[tuple[bytes, set[int]]]:
    """The 'data' part's content and the statuses it allows once the parts are in order."""

    def put(params: Any) -> bytes:
        return json.dumps({"method": "filesystem.put", "params": params}).encode()

    def dest(kind: str) -> str:
        path = root / "uploads" / uuid.uuid4().hex
        if kind == "dir":
            path.mkdir(parents=True)
        return str(path)

    valid = st.one_of(
        st.builds(lambda k: (put([dest(k)]), {200}), st.sampled_from(["dir", "file"])),
        st.builds(lambda k: (put({"path": dest(k)}), {200}), st.sampled_from(["dir", "file"])),
        st.builds(lambda: (put([dest("dir"), {"overwrite": True, "mode": 0o600}]), {200})),
    )
    return st.one_of(
        valid,
        valid,
        valid,
        valid,
        st.builds(lambda p: (put(p), {200, 422}), st.lists(JSON_VALUES, max_size=3)),
        st.builds(
            lambda m, p: (json.dumps({"method": m, "params": p}).encode(), {422}),
            st.sampled_from(["no.such", "core.ping", "filesystem.copy", "test.echo"]),
            st.lists(st.text(max_size=5), max_size=2),
        ),
        st.builds(
            lambda v: (json.dumps(v).encode(), {400}),
            JSON_VALUES.filter(lambda v: not isinstance(v, dict) or "method" not in v),
        ),
        st.builds(lambda b: (b"\xff" + b, {400}), st.binary(max_size=50)),
        st.builds(lambda: (json.dumps({"method": "filesystem.put", "params": 5}).encode(), {400})),
    )


@st.composite
def uploads(draw: st.DrawFn, root: Path) -> Upload:
    content, after_data = draw(data_parts(root))
    data = Part("data", draw(st.sampled_from([None, "data.json"])), None, content)
    files = [
        Part(
            draw(st.sampled_from(["file"] * 12 + ["files", "FILE", "data", None])),
            draw(
                st.one_of(
                    st.sampled_from([None, "a.bin", "../../escape", "", ".", "..", "dir/x"]),
                    st.sampled_from(["ünï☃.txt", "a\\b", " ", "x" * 300]),
                    HEADER_TEXT,
                )
            ),
            draw(st.sampled_from([None, "application/octet-stream", "text/plain"])),
            draw(st.binary(max_size=2000)) * draw(st.integers(1, 60)),
        )
        for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2, 2, 3])))
    ]
    parts = [data, *files] if draw(st.integers(0, 4)) else draw(st.permutations([data, *files]))
    if draw(st.integers(0, 14)) == 0:
        parts = parts[: draw(st.integers(0, len(parts)))]
    boundary = "fz" + draw(
        st.text(alphabet="abcXYZ0123456789'()+_,-./:=?", min_size=1, max_size=40)
    )
    mode = draw(st.sampled_from(["complete"] * 6 + ["cut", "overdeclared"]))
    auth = draw(st.sampled_from([True] * 9 + [False]))
    up = Upload(parts, boundary, auth, mode, draw(st.floats(0.0, 0.999)))
    up.expect = expected_statuses(up, data, after_data)
    return up


def expected_statuses(up: Upload, data: Part, after_data: set[int]) -> set[int]:
    """The statuses the documented refusals allow for a complete upload."""
    if not up.auth:
        return {401}
    if up.mode == "overdeclared":
        return {413}
    if not up.parts:
        return {400}
    if up.parts[0].name != "data":
        return {405}
    if up.parts[0] is not data:
        return {400}  # a file part named "data" came first: its bytes are not the JSON
    if after_data != {200} and after_data != {200, 422}:
        return after_data
    rest = up.parts[1:]
    if any(p.name != "file" for p in rest):
        return {405} | (after_data - {200})
    if not rest:
        return {400} | (after_data - {200})
    return after_data


def test_multipart_uploads(wire: Wire, server: ServerProc, fs_tree: FsTree, long_run: bool) -> None:
    statuses = Counter[str]()

    dest = fs_tree.root / "uploads" / "known-good"
    good = Upload(
        [
            Part(
                "data",
                None,
                None,
                json.dumps({"method": "filesystem.put", "params": [str(dest)]}).encode(),
            ),
            Part("file", "a.bin", "application/octet-stream", b"\x00\xff" * 5000),
        ],
        "fzKnownGood",
        True,
        "complete",
        expect={200},
    )

    @fuzz_settings(long_run, 60)
    @given(up=uploads(fs_tree.root))
    @example(up=good)
    def run(up: Upload) -> None:
        body = encode_multipart(up.parts, up.boundary)
        length = {"complete": len(body), "cut": len(body), "overdeclared": 10**12}[up.mode]
        # Overdeclared: refused from the headers alone (a body would race the refusal).
        sent = {"complete": body, "cut": body[: int(len(body) * up.cut_at)], "overdeclared": b""}[
            up.mode
        ]
        special = any(c in up.boundary for c in '()<>@,;:\\"/[]?=')
        quoted = f'"{up.boundary}"' if special else up.boundary
        content_type = f"multipart/form-data; boundary={quoted}"
        got = http_post(server, sent, content_type, up.auth, length, up.mode == "cut")
        if got is None:
            assert up.mode != "complete", "a complete upload got no answer"
            statuses["cut"] += 1
        else:
            status, answer = got
            statuses[str(status)] += 1
            assert status != 500 and status in UPLOAD_STATUSES, (status, answer)
            assert isinstance(answer, dict), (status, answer)
            if status == 200:
                assert type(answer.get("job_id")) is int, answer
            else:
                assert isinstance(answer.get("error"), str) and answer["error"], answer
            if up.mode == "complete" or up.mode == "overdeclared":
                assert status in up.expect, (status, answer, up.expect)
        wire.alive()

    run()
    print(f"upload fuzz statuses: {dict(statuses)}")
    assert statuses["200"] and len(statuses) > 3, statuses


def test_files_after_the_job_failed_leave_no_spool_file(server: ServerProc) -> None:
    target = server.data_dir / "files" / f"exists-{uuid.uuid4().hex}"
    target.write_text("already here")  # filesystem.put refuses it: no overwrite
    spool = server.data_dir / "spool"
    before = set(spool.glob("*.upload"))
    parts = [Part("file", f"f{i}", None, bytes([65 + i]) * 100_000) for i in range(3)]
    body = encode_multipart(
        [
            Part(
                "data",
                None,
                None,
                json.dumps({"method": "filesystem.put", "params": [str(target)]}).encode(),
            ),
            *parts,
        ],
        "fzSpool",
    )
    first_file_end = body.index(b"--fzSpool", body.index(b'filename="f0"'))
    token = base64.b64encode(f"root:{server.password}".encode()).decode()
    head = (
        f"POST /_upload HTTP/1.1\r\nHost: {server.host}\r\nConnection: close\r\n"
        f"Authorization: Basic {token}\r\nContent-Type: multipart/form-data; boundary=fzSpool\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    w = Wire(server.ws_url, ("root", server.password))
    try:
        with socket.create_connection((server.host, server.port), timeout=RECV_TIMEOUT) as s:
            s.sendall(head.encode() + body[:first_file_end])

            def failed() -> bool:
                found = w.result(
                    "core.get_jobs",
                    [["method", "=", "filesystem.put"], ["arguments.0", "=", str(target)]],
                )
                return bool(found) and found[0]["state"] == "FAILED"

            deadline = time.monotonic() + RECV_TIMEOUT
            while not failed():
                assert time.monotonic() < deadline, "the job did not fail on the first file"
                time.sleep(0.05)
            s.sendall(body[first_file_end:])  # files 2 and 3 arrive after the job ended
            got = read_response(s)
        assert got is not None and got[0] in UPLOAD_STATUSES, got
        left = set(spool.glob("*.upload")) - before
        assert not left, f"spooled files left behind: {sorted(p.name for p in left)}"
    finally:
        w.close()


def test_malformed_multipart_is_refused_with_400(server: ServerProc, long_run: bool) -> None:
    good = encode_multipart(
        [
            Part("data", None, None, b'{"method": "filesystem.put", "params": ["/nowhere"]}'),
            Part("file", "f", None, b"hello"),
        ],
        "XyZ",
    )

    @fuzz_settings(long_run, 20)
    @given(
        body=st.one_of(
            # Up to the closing delimiter: the CRLF after it is optional (RFC 2046).
            st.integers(0, len(good) - 3).map(lambda n: good[:n]),
            st.binary(max_size=300),
        ),
        content_type=st.sampled_from(
            [
                "multipart/form-data; boundary=XyZ",
                "multipart/form-data",
                'multipart/form-data; boundary="a b\\x"',
            ]
        ),
    )
    @example(body=b"", content_type="multipart/form-data; boundary=XyZ")
    @example(body=good, content_type="multipart/form-data")
    @example(body=good[:-9], content_type="multipart/form-data; boundary=XyZ")
    def run(body: bytes, content_type: str) -> None:
        got = http_post(server, body, content_type, True, len(body))
        assert got is not None
        status, answer = got
        assert status in UPLOAD_STATUSES - {200} and isinstance(answer, dict), (status, answer)

    run()


# --- 5. bounds under fuzzing: batches, bulk, merges, subscriptions, names, logins -------------
#
# Each test starts a server of its own with small bounds, so that random sizes cross them
# cheaply, and checks every answer against a model of what the bound allows.


class Pipelined(Wire):
    """A Wire whose calls may overlap: a reply that arrives while another is awaited is kept
    for whoever asks for it, notifications are kept in ``events``, batch replies in
    ``batches``; message ids are unique across connections (merged jobs list them)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tag = uuid.uuid4().hex[:8]
        self.stash: dict[bytes, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.batches: list[list[Any]] = []

    def next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{self.tag}-{prefix}-{self._seq}"

    def send(self, method: str, *params: Any) -> str:
        """Send a call without waiting; its id (``reply`` takes the answer)."""
        msg_id = self.next_id("call")
        self.ws.send(
            json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": list(params)})
        )
        return msg_id

    def reply(self, msg_id: Any, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        k = key(msg_id)
        while k not in self.stash:
            self._keep(self.recv(timeout))
        return self.stash.pop(k)

    def call(self, method: str, *params: Any, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        return self.reply(self.send(method, *params), timeout)

    def batch(self, members: list[Any], timeout: float = RECV_TIMEOUT) -> list[Any]:
        """Send a batch frame; its reply (the batch must get one)."""
        self.ws.send(json.dumps(members))
        while not self.batches:
            self._keep(self.recv(timeout))
        return self.batches.pop(0)

    def pump(self, done: Callable[[], bool], what: str, timeout: float = RECV_TIMEOUT) -> None:
        """Read frames until ``done()`` holds (the event that says it happened came)."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            assert left > 0, f"timed out waiting for {what}"
            with suppress(TimeoutError):
                self._keep(self.recv(min(left, 0.2)))

    def _keep(self, msg: Any) -> None:
        if isinstance(msg, list):
            self.batches.append(msg)
        elif isinstance(msg, dict) and "id" in msg:
            self.stash[key(msg["id"])] = msg
        elif isinstance(msg, dict) and "method" in msg:
            self.events.append(msg)
        else:
            raise AssertionError(f"unexpected frame {msg!r:.300}")


def live_jobs(admin: Wire) -> int:
    count: int = admin.result("core.stats")["live_jobs"]
    return count


def settle_live_jobs(admin: Wire, expected: int, what: str) -> None:
    """Wait until the server holds ``expected`` live jobs (those of the model)."""
    wait_for(lambda: live_jobs(admin) == expected, f"{expected} live jobs ({what})", 10)


def errname_of(reply: dict[str, Any]) -> str | None:
    error = reply.get("error")
    return None if error is None else str(error["data"]["errname"])


# -- batches around --max-batch, with members past --max-inflight --

SMALL_BATCH = 8
SMALL_INFLIGHT = 4
OPEN_GATE = "fz-open-gate"
INVALID_MEMBERS: list[Callable[[str], Any]] = [
    lambda i: 1,
    lambda i: "x",
    lambda i: None,
    lambda i: [],
    lambda i: {},
    lambda i: {"jsonrpc": "2.0", "id": i, "method": 5},
    lambda i: {"jsonrpc": "1.0", "id": i, "method": "core.ping"},
    lambda i: {"jsonrpc": "2.0", "id": [1], "method": "core.ping"},
    lambda i: {"jsonrpc": "2.0", "id": i, "method": "core.ping", "params": 5},
]


@dataclass
class Planned:
    """One batch member: what is sent, and what a server with room for it answers."""

    obj: Any
    reply_id: bytes | None  # None: a notification (no reply)
    outcome: tuple[str, Any]  # ("result", value) or ("error", code)
    valid: bool = True  # False: an invalid member (-32600 whatever the room)
    holds: bool = False  # a job call: holds its in-flight slot across loop steps


@st.composite
def planned_member(draw: st.DrawFn, index: int, jobs: int) -> Planned:
    kinds = ["ping", "echo", "sub", "bad", "unknown", "invalid"] + ["job"] * jobs
    kind = draw(st.sampled_from(kinds))
    msg_id = f"m{index}"
    if kind == "invalid":
        obj = draw(st.sampled_from(INVALID_MEMBERS))(msg_id)
        found = _member(obj)
        assert found is not None and found[1] == -32600, obj
        return Planned(obj, found[0], ("error", -32600), valid=False)
    a, b = draw(st.integers(-9, 9)), draw(st.integers(-9, 9))
    value = draw(st.one_of(INT64, st.text(max_size=5), st.none()))
    method, params, outcome = {
        "ping": ("core.ping", [], ("result", "pong")),
        "echo": ("test.echo", [value], ("result", value)),
        "sub": ("test.subtract", [a, b], ("result", a - b)),
        "bad": ("test.subtract", ["a"], ("error", -32602)),
        "unknown": ("no.such_method", [], ("error", -32601)),
        "job": ("test.wait", [OPEN_GATE], ("result", OPEN_GATE)),
    }[kind]
    obj = {"jsonrpc": "2.0", "method": method, "params": params}
    notify = draw(st.integers(0, 3)) == 0
    if not notify:
        obj["id"] = msg_id
    return Planned(obj, None if notify else key(msg_id), outcome, holds=kind == "job")


@st.composite
def bounded_batches(draw: st.DrawFn) -> list[Planned]:
    n = draw(
        st.one_of(st.integers(0, 2 * SMALL_BATCH), st.sampled_from([SMALL_BATCH, SMALL_BATCH + 1]))
    )
    jobs = draw(st.sampled_from([2, 2, 12]))  # some batches mostly of job calls
    return [draw(planned_member(i, jobs)) for i in range(n)]


def job_call(index: int, notify: bool = False) -> Planned:
    obj: dict[str, Any] = {"jsonrpc": "2.0", "method": "test.wait", "params": [OPEN_GATE]}
    if not notify:
        obj["id"] = f"m{index}"
    reply_id = None if notify else key(f"m{index}")
    return Planned(obj, reply_id, ("result", OPEN_GATE), holds=True)


def batch_outcomes(plan: list[Planned]) -> tuple[Counter[tuple[bytes, str]], int]:
    """The replies (reply id, outcome) and the jobs started, members taken in order: the
    members of a batch start in one loop step, so a job call holds its slot while the later
    members start, and a call that answers at once gives its slot back before the next."""
    replies = Counter[tuple[bytes, str]]()
    inflight = jobs = 0
    for m in plan:
        outcome: tuple[str, Any] = m.outcome
        if m.valid and inflight >= SMALL_INFLIGHT:
            outcome = ("error", -32000)
        elif m.valid and m.holds:
            inflight += 1
            jobs += 1
        if m.reply_id is not None:
            replies[(m.reply_id, json.dumps(outcome))] += 1
    return replies, jobs


def test_batches_around_the_batch_and_inflight_bounds(
    make_server: Callable[..., ServerProc], long_run: bool
) -> None:
    srv = make_server("--max-batch", str(SMALL_BATCH), "--max-inflight", str(SMALL_INFLIGHT))
    w = Wire(srv.ws_url, ("root", srv.password))
    ctl = Wire(srv.ws_url, ("root", srv.password))
    ctl.result("test.open_gate", OPEN_GATE)
    seen = Counter[str]()

    def wait_jobs() -> int:
        count: int = ctl.result("core.get_jobs", [["method", "=", "test.wait"]], {"count": True})
        return count

    @fuzz_settings(long_run, 40)
    @given(plan=bounded_batches())
    @example(plan=[Planned({"jsonrpc": "2.0", "method": "core.ping"}, None, ("result", "pong"))])
    @example(plan=[])  # refused whole: each outcome checked below has an example of its own
    @example(plan=[*[job_call(i) for i in range(SMALL_INFLIGHT + 1)], job_call(9, notify=True)])
    def run(plan: list[Planned]) -> None:
        frame = json.dumps([m.obj for m in plan])
        jobs_before = wait_jobs()
        # The frame alone: a sentinel sent behind it could take an in-flight slot while the
        # members start.
        w.ws.send(frame)
        if not plan or len(plan) > SMALL_BATCH:
            # Refused whole: one -32600 with a null id, and no member runs.
            reply = w.recv()
            check_reply(reply, frame)
            assert reply["id"] is None and reply["error"]["code"] == -32600, reply
            assert wait_jobs() == jobs_before
            seen["refused"] += 1
            w.alive()
            return
        expected, jobs = batch_outcomes(plan)
        replies = w.recv() if expected else []
        assert isinstance(replies, list), (frame, replies)
        actual = Counter[tuple[bytes, str]]()
        for reply in replies:
            check_reply(reply, frame)
            outcome = ("result", reply["result"]) if "result" in reply else None
            if outcome is None:
                outcome = ("error", reply["error"]["code"])
            actual[(key(reply["id"]), json.dumps(outcome))] += 1
        assert actual == expected, (frame, replies)
        # Every job call that found room ran (with no reply to wait for, this is the sign
        # that the batch was taken).
        wait_for(lambda: wait_jobs() == jobs_before + jobs, f"{jobs} test.wait jobs", 10)
        seen["served"] += 1
        seen["over the in-flight bound"] += any("-32000" in outcome for _, outcome in expected)
        w.alive()

    try:
        run()
        print(f"bounded batch outcomes: {dict(seen)}")
        assert seen["refused"] and seen["served"] and seen["over the in-flight bound"], seen
        settle_live_jobs(ctl, 0, "every test.wait ended")
    finally:
        w.close()
        ctl.close()


# -- core.bulk around --max-bulk-calls, as an administrator and as a restricted user --

SMALL_BULK = 5
BULK_USER = "fzbulk"
BULK_GRANTS = ["test.echo", "test.keep", "test.fail"]
BULK_METHODS = [
    "core.ping",
    "core.stats",  # for administrators only
    "auth.logout",  # needs a connection, which a bulk call has not
    "test.echo",
    "test.keep",
    "test.fail",
    "test.subtract",  # not granted to BULK_USER
    "no.such_method",
    "",
    "core.get_jobs.x",
]
ENOMETHOD = 201
SMALL_VALUES = st.one_of(st.integers(-9, 9), st.text(max_size=4), st.none())


def bulk_entries(method: str) -> st.SearchStrategy[list[Any]]:
    """Params lists for ``method``: often valid, sometimes not."""
    valid: dict[str, st.SearchStrategy[list[Any]]] = {
        "test.echo": st.lists(SMALL_VALUES, min_size=1, max_size=1),
        "test.keep": st.lists(SMALL_VALUES, min_size=1, max_size=1),
        "test.fail": st.lists(st.text(max_size=6), min_size=1, max_size=1),
        "test.subtract": st.lists(st.integers(-9, 9), min_size=2, max_size=2),
    }
    generic = st.lists(SMALL_VALUES, max_size=3)
    if method == "core.bulk":
        nested = st.tuples(
            st.sampled_from(BULK_METHODS), st.lists(st.lists(SMALL_VALUES, max_size=2), max_size=3)
        ).map(list)
        return st.one_of(nested, nested, generic)
    return st.one_of(valid.get(method, st.just([])), generic)


def bulk_status(method: str, args: list[Any], admin: bool) -> tuple[str, Any, bool]:
    """What one entry of a bulk call gets: (kind, value, whether it ran as a job), kind being
    result, errno, stats (core.stats' dict) or nested (the statuses of an inner bulk)."""
    if method in ("no.such_method", "", "core.get_jobs.x"):
        return "errno", ENOMETHOD, False
    if not admin and (method == "core.stats" or method == "test.subtract"):
        return "errno", errno.EACCES, False
    one = len(args) == 1
    if method == "core.ping" or method == "core.stats" or method == "auth.logout":
        if args:
            return "errno", errno.EINVAL, False
        if method == "auth.logout":
            return "errno", errno.EFAULT, False
        return ("result", "pong", False) if method == "core.ping" else ("stats", None, False)
    if method == "test.echo" or method == "test.keep":
        return ("result", args[0], method == "test.keep") if one else ("errno", errno.EINVAL, False)
    if method == "test.fail":
        ok = one and isinstance(args[0], str)
        return ("errno", errno.EFAULT, True) if ok else ("errno", errno.EINVAL, False)
    if method == "test.subtract":
        ok = len(args) == 2 and all(type(a) is int for a in args)
        return ("result", args[0] - args[1], False) if ok else ("errno", errno.EINVAL, False)
    # core.bulk inside core.bulk
    if len(args) != 2 or not isinstance(args[0], str) or not isinstance(args[1], list):
        return "errno", errno.EINVAL, False
    inner, entries = args
    if not all(isinstance(e, list) for e in entries):
        return "errno", errno.EINVAL, False
    if len(entries) > SMALL_BULK:
        return "errno", errno.EINVAL, True
    return "nested", [bulk_status(inner, e, admin) for e in entries], True


def check_bulk_status(status: Any, expect: tuple[str, Any, bool], args: list[Any]) -> list[int]:
    """One status against the oracle; the ids of the jobs it names (inner ones too)."""
    kind, value, job = expect
    keys = {"job_id", "result", "error"} | ({"errno"} if kind == "errno" else set())
    assert isinstance(status, dict) and set(status) == keys, (status, expect)
    assert (type(status["job_id"]) is int) == job, (status, expect)
    jobs = [status["job_id"]] if job else []
    if kind == "errno":
        assert status["errno"] == value and status["result"] is None, (status, expect)
        assert isinstance(status["error"], str) and status["error"], status
        check_error({"code": -32001, "message": "m", "data": errdata(status)}, json.dumps(args))
        if job and value == errno.EFAULT:  # test.fail(message)
            assert status["error"] == (args[0] or "EFAULT: no reason given"), (status, args)
        return jobs
    assert status["error"] is None, (status, expect)
    if kind == "result":
        assert status["result"] == value, (status, expect)
    elif kind == "stats":
        assert isinstance(status["result"], dict) and "live_jobs" in status["result"], status
    else:
        assert isinstance(status["result"], list) and len(status["result"]) == len(value)
        for inner, inner_expect, inner_args in zip(status["result"], value, args[1], strict=True):
            jobs += check_bulk_status(inner, inner_expect, inner_args)
    return jobs


def errdata(status: dict[str, Any]) -> dict[str, Any]:
    """A bulk status's error as the ``data`` of an error object (to check its reason)."""
    code = status["errno"]
    name = errno.errorcode.get(code) or {ENOMETHOD: "ENOMETHOD"}[code]
    return {"error": code, "errname": name, "reason": status["error"], "extra": None, "trace": None}


@st.composite
def bulk_calls(draw: st.DrawFn) -> tuple[str, list[Any], list[Any]]:
    """(method, params, extra params after them)."""
    method = draw(st.sampled_from([*BULK_METHODS, "core.bulk", "core.bulk"]))
    n = draw(st.integers(0, SMALL_BULK + 1))
    params: list[Any] = [draw(bulk_entries(method)) for _ in range(n)]
    if params and draw(st.integers(0, 15)) == 0:
        params[draw(st.integers(0, len(params) - 1))] = draw(SMALL_VALUES)  # not a list
    extra: list[Any] = draw(st.sampled_from([[], [], [], [None], ["described"], [5]]))
    return method, params, extra


def test_bulk_calls_around_the_bound(
    make_server: Callable[..., ServerProc], long_run: bool
) -> None:
    srv = make_server("--max-bulk-calls", str(SMALL_BULK))
    ctl = Wire(srv.ws_url, ("root", srv.password))
    password = "pw-" + BULK_USER
    new_user = {"username": BULK_USER, "password": password, "allowlist": BULK_GRANTS}
    ctl.result("user.create", new_user)
    callers = {
        "root": Wire(srv.ws_url, ("root", srv.password)),
        BULK_USER: Wire(srv.ws_url, (BULK_USER, password)),
    }
    for w in callers.values():
        w.alive()  # connected before the baseline is taken
    before = ctl.result("core.stats")
    seen = Counter[str]()

    @fuzz_settings(long_run, 30)
    @given(call=bulk_calls(), user=st.sampled_from(["root", BULK_USER]))
    @example(call=("test.subtract", [[5, 3]], []), user=BULK_USER)
    # Every outcome checked below comes from an example, not from the luck of the draw.
    @example(call=("test.echo", [[1], ["x"], [1, 2]], []), user=BULK_USER)
    @example(
        call=("core.bulk", [["test.keep", [[1], [2]]], ["test.echo", [[1]] * 6]], []), user="root"
    )
    @example(call=("no.such_method", [[], [1]], ["described"]), user="root")
    @example(call=("core.ping", [[]] * (SMALL_BULK + 1), []), user=BULK_USER)
    def run(call: tuple[str, list[Any], list[Any]], user: str) -> None:
        method, params, extra = call
        sent = json.dumps([method, params, *extra])
        reply = callers[user].call("core.bulk", method, params, *extra)
        check_reply(reply, sent)
        bad_top = (
            len(params) > SMALL_BULK or not all(isinstance(p, list) for p in params) or extra == [5]
        )
        if bad_top:
            assert reply.get("error", {}).get("code") == -32602, (sent, reply)
            seen["refused"] += 1
        else:
            assert "result" in reply, (sent, reply)
            statuses = reply["result"]
            assert isinstance(statuses, list) and len(statuses) == len(params), (sent, reply)
            jobs: list[int] = []
            for status, args in zip(statuses, params, strict=True):
                expect = bulk_status(method, args, user == "root")
                jobs += check_bulk_status(status, expect, args)
                seen[expect[0] if expect[0] != "errno" else f"errno {expect[1]}"] += 1
            # The jobs the entries ran are the caller's own.
            records = ctl.result("core.get_jobs", [["id", "in", jobs]]) if jobs else []
            assert len(records) == len(jobs), (jobs, records)
            for record in records:
                assert record["credentials"]["data"]["username"] == user, record
                assert record["origin"].startswith("bulk:"), record
        # Live jobs are given back: the server holds none once the bulk answered.
        settle_live_jobs(ctl, 0, "after a bulk call")
        callers[user].alive()

    try:
        run()
        print(f"bulk fuzz outcomes: {dict(seen)}")
        for outcome in ("refused", "result", "errno 13", "errno 22", "errno 201", "nested"):
            assert seen[outcome], (outcome, seen)
        after = ctl.result("core.stats")
        assert after["sessions"] == before["sessions"], (before, after)
        wait_for(
            lambda: ctl.result("core.stats")["tasks"] <= before["tasks"], "tasks back to baseline"
        )
        # Nothing a bulk call held stays: far less than one MiB per example.
        assert after["rss_bytes"] - before["rss_bytes"] < 64 * 1024 * 1024, (before, after)
    finally:
        ctl.close()
        for w in callers.values():
            w.close()


# -- merges of identical calls into a waiting job (lock_queue_size=1) --

MERGE_USER = "fzmerge"
MERGE_LOCKS = 2
MERGE_GATES = 3
MERGE_USERS = st.sampled_from(["root", MERGE_USER])
MERGE_STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("call"),
            MERGE_USERS,
            st.integers(0, MERGE_LOCKS - 1),
            st.integers(0, MERGE_GATES - 1),
            st.booleans(),  # legacy_jobs: answered with the job id at once
        ),
        st.tuples(
            st.just("call"),
            MERGE_USERS,
            st.integers(0, MERGE_LOCKS - 1),
            st.integers(0, MERGE_GATES - 1),
            st.booleans(),
        ),
        # Identical calls in one batch frame (legacy_jobs), up to the merge bound.
        st.tuples(
            st.just("burst"),
            MERGE_USERS,
            st.integers(0, MERGE_LOCKS - 1),
            st.integers(0, MERGE_GATES - 1),
            st.sampled_from([2, 3, 20, MAX_MERGED_CALLS]),
        ),
        st.tuples(st.just("open"), st.integers(0, MERGE_GATES - 1)),
    ),
    max_size=12,
)


@dataclass
class MergedJob:
    user: str
    lock: int
    gate: int
    calls: list[str]  # the message ids it answers, in arrival order


@dataclass
class MergeModel:
    """Under one lock: one job runs, one waits (lock_queue_size=1); a call finding the queue
    full joins the waiting job when it is the same call of the same user and that job
    answers fewer than MAX_MERGED_CALLS calls; otherwise EBUSY. A job runs until its gate
    opens."""

    running: dict[int, MergedJob] = field(default_factory=dict)
    waiting: dict[int, MergedJob] = field(default_factory=dict)
    opened: set[int] = field(default_factory=set)
    jobs: list[MergedJob] = field(default_factory=list)

    def call(
        self, user: str, lock: int, gate: int, msg_id: str, settle: bool = True
    ) -> MergedJob | None:
        """``settle=False``: more calls come in the same loop step (a batch), before any job
        can end."""
        queued = self.waiting.get(lock)
        if lock not in self.running or queued is None:
            job = MergedJob(user, lock, gate, [msg_id])
            self.jobs.append(job)
            if lock in self.running:
                self.waiting[lock] = job
            else:
                self.running[lock] = job
            if settle:
                self.settle()
            return job
        if (queued.user, queued.gate) == (user, gate) and len(queued.calls) < MAX_MERGED_CALLS:
            queued.calls.append(msg_id)
            return queued
        return None

    def open(self, gate: int) -> None:
        self.opened.add(gate)
        self.settle()

    def settle(self) -> None:
        for lock in list(self.running):
            while lock in self.running and self.running[lock].gate in self.opened:
                nxt = self.waiting.pop(lock, None)
                if nxt is None:
                    del self.running[lock]
                else:
                    self.running[lock] = nxt

    def live(self) -> int:
        return len(self.running) + len(self.waiting)


def test_merged_calls_are_answered_by_their_own_job(
    make_server: Callable[..., ServerProc], long_run: bool
) -> None:
    srv = make_server()
    ctl = Wire(srv.ws_url, ("root", srv.password))
    ctl.result(
        "user.create", {"username": MERGE_USER, "password": "pw-fz-merge", "allowlist": ["test.*"]}
    )
    logins = {"root": ("root", srv.password), MERGE_USER: (MERGE_USER, "pw-fz-merge")}
    conns = {
        (user, legacy): Pipelined(srv.ws_url, login)
        for user, login in logins.items()
        for legacy in (True, False)
    }
    for (_, legacy), conn in conns.items():
        conn.result("core.set_options", {"legacy_jobs": legacy})
    # ADDED reaches subscribers once a job's record is stored: the sign that later merges
    # into it are counted at once (merging waits for the target to be stored).
    watcher = Pipelined(srv.ws_url, ("root", srv.password))
    watcher.result("core.subscribe", "core.get_jobs")
    seen = Counter[str]()

    def added(tag: str) -> int:
        return sum(
            1
            for e in watcher.events
            if e["params"].get("msg") == "added"
            and str(e["params"]["fields"]["arguments"][0]).startswith(tag)
        )

    @fuzz_settings(long_run, 15)
    @given(steps=MERGE_STEPS)
    @example(
        steps=[
            ("call", "root", 0, 0, True),
            ("call", "root", 0, 1, False),
            ("burst", "root", 0, 1, MAX_MERGED_CALLS),
            ("call", MERGE_USER, 0, 1, True),
            ("open", 0),
            ("call", MERGE_USER, 0, 1, False),
        ]
    )
    def run(steps: list[tuple[Any, ...]]) -> None:
        tag = uuid.uuid4().hex[:8]
        locks = [f"{tag}-lock{i}" for i in range(MERGE_LOCKS)]
        gates = [f"{tag}-gate{i}" for i in range(MERGE_GATES)]
        model = MergeModel()
        # (message id, user, lock, gate, the model's job or None for EBUSY, reply or None)
        calls: list[list[Any]] = []
        pending: list[tuple[Pipelined, list[Any]]] = []
        for step in steps:
            if step[0] == "open":
                ctl.result("test.open_gate", gates[step[1]])
                model.open(step[1])
            elif step[0] == "call":
                _, user, lock, gate, legacy = step
                conn = conns[(user, legacy)]
                msg_id = conn.send("test.locked", locks[lock], gates[gate])
                call = [msg_id, user, lock, gate, model.call(user, lock, gate, msg_id), None]
                calls.append(call)
                if legacy:
                    call[5] = conn.reply(msg_id)
                else:
                    pending.append((conn, call))
                    conn.alive()  # the call was taken (merged, queued or refused)
            else:
                _, user, lock, gate, n = step
                conn = conns[(user, True)]
                members: list[dict[str, Any]] = [
                    {
                        "jsonrpc": "2.0",
                        "id": conn.next_id("burst"),
                        "method": "test.locked",
                        "params": [locks[lock], gates[gate]],
                    }
                    for _ in range(n)
                ]
                replies = {key(r["id"]): r for r in conn.batch(members)}
                for m in members:
                    job = model.call(user, lock, gate, m["id"], settle=False)
                    calls.append([m["id"], user, lock, gate, job, replies[key(m["id"])]])
                model.settle()
            watcher.pump(lambda: added(tag) >= len(model.jobs), "ADDED of every new job")
            settle_live_jobs(ctl, model.live(), f"after {step}")
        for i, gate_name in enumerate(gates):
            ctl.result("test.open_gate", gate_name)
            model.open(i)
        # Every job ends once all gates are open, and every call is answered.
        settle_live_jobs(ctl, 0, "all gates open")
        for conn, call in pending:
            call[5] = conn.reply(call[0])
        check_merges(ctl, locks, gates, calls, model)
        seen["merged"] += sum(len(j.calls) > 1 for j in model.jobs)
        seen["bound reached"] += any(len(j.calls) == MAX_MERGED_CALLS for j in model.jobs)
        seen["EBUSY"] += sum(c[4] is None for c in calls)
        watcher.events.clear()

    try:
        run()
        print(f"merge fuzz outcomes: {dict(seen)}")
        assert seen["merged"] and seen["bound reached"] and seen["EBUSY"], seen
    finally:
        for w in (ctl, watcher, *conns.values()):
            w.close()


def check_merges(
    admin: Wire, locks: list[str], gates: list[str], calls: list[list[Any]], model: MergeModel
) -> None:
    """Every call got the outcome of its own job (the model's): a job of its own user and
    arguments that lists its message id, never more than MAX_MERGED_CALLS ids; or EBUSY."""
    ids: dict[int, int] = {}  # the model's job (by position) -> the server's job id
    for msg_id, _, _, _, job, reply in calls:
        if job is None:
            assert errname_of(reply) == "EBUSY", (msg_id, reply)
            check_error(reply["error"], "")
            continue
        assert "result" in reply and type(reply["result"]) is int, (msg_id, reply)
        ids.setdefault(model.jobs.index(job), reply["result"])
        assert ids[model.jobs.index(job)] == reply["result"], (msg_id, reply, ids)
    assert len(set(ids.values())) == len(model.jobs), (ids, model.jobs)
    records = admin.result("core.get_jobs", [["id", "in", list(ids.values())]])
    by_id = {r["id"]: r for r in records}
    for index, job_id in ids.items():
        job, record = model.jobs[index], by_id[job_id]
        assert record["state"] == "SUCCESS" and record["result"] == job_id, record
        assert record["credentials"]["data"]["username"] == job.user, record
        assert record["arguments"] == [locks[job.lock], gates[job.gate]], record
        assert record["message_ids"] == job.calls, (record["message_ids"], job.calls)
        assert len(record["message_ids"]) <= MAX_MERGED_CALLS, record


def test_merges_into_a_job_not_yet_stored_are_bounded(
    make_server: Callable[..., ServerProc],
) -> None:
    srv = make_server()
    w = Pipelined(srv.ws_url, ("root", srv.password))
    try:
        w.result("core.set_options", {"legacy_jobs": True})
        lock, gate, other = (f"{uuid.uuid4().hex[:8]}-{n}" for n in ("lock", "gate", "other"))
        members = [
            {"jsonrpc": "2.0", "id": w.next_id("m"), "method": "test.locked", "params": p}
            for p in [[lock, other], *[[lock, gate]] * (MAX_MERGED_CALLS + 50)]
        ]
        replies = w.batch(members)
        ids = sorted({r["result"] for r in replies if "result" in r})
        w.result("test.open_gate", other)
        w.result("test.open_gate", gate)
        records = w.result("core.get_jobs", [["id", "in", ids]])
        counts = [len(r["message_ids"]) for r in records]
        assert max(counts) <= MAX_MERGED_CALLS, counts
    finally:
        w.close()


# -- subscriptions around --max-subscriptions --

SMALL_SUBS = 4
SUB_USER = "fzsubs"
KNOWN_COLLECTIONS = ("core.get_jobs", "*", "hard.things")  # all open to every user
SUB_STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("sub"), st.sampled_from(KNOWN_COLLECTIONS)),
        st.tuples(st.just("sub"), st.sampled_from(["core.get_jobs", "*"])),
        st.tuples(
            st.just("sub"),
            st.one_of(
                st.sampled_from(["nope", "core.get_jobs ", "CORE.GET_JOBS", "core", "**", ""]),
                st.text(max_size=8),
                st.sampled_from([None, 5, ["*"]]),
            ),
        ),
        st.tuples(st.just("unsub"), st.sampled_from(["live", "live", "stale", "unknown", "bad"])),
        st.tuples(st.just("relogin")),
    ),
    max_size=14,
)


@dataclass
class Subscriptions:
    """What one connection holds (the model) and the checks of each step against it."""

    w: Pipelined
    seen: Counter[str]
    live: dict[str, str] = field(default_factory=dict)  # subscription id -> collection
    stale: list[str] = field(default_factory=list)

    def subscribe(self, name: Any) -> None:
        reply = self.w.call("core.subscribe", name)
        check_reply(reply, json.dumps(name))
        if not isinstance(name, str) or not name:
            assert reply["error"]["code"] == -32602, (name, reply)
        elif name not in KNOWN_COLLECTIONS:
            assert errname_of(reply) == "ENOENT", (name, reply)
        elif len(self.live) >= SMALL_SUBS:
            assert errname_of(reply) == "EBUSY", (name, reply)
            self.seen["EBUSY"] += 1
        else:
            sub_id = reply.get("result")
            assert isinstance(sub_id, str) and sub_id not in [*self.live, *self.stale], reply
            self.live[sub_id] = name
            self.seen["at the bound"] += len(self.live) == SMALL_SUBS

    def unsubscribe(self, which: str) -> None:
        sub_id: Any = {
            "live": next(reversed(self.live), "none-live"),
            "stale": self.stale[-1] if self.stale else "none-stale",
            "unknown": uuid.uuid4().hex[:16],
            "bad": 5,
        }[which]
        reply = self.w.call("core.unsubscribe", sub_id)
        check_reply(reply, json.dumps(sub_id))
        if sub_id == 5:
            assert reply["error"]["code"] == -32602, reply
        else:
            assert reply == {"jsonrpc": "2.0", "id": reply["id"], "result": None}
        if sub_id in self.live:
            del self.live[sub_id]
            self.stale.append(sub_id)
            self.seen["room freed"] += 1

    def login_again(self, login: tuple[str, str]) -> None:
        """Logging in again ends the subscriptions made before."""
        assert self.w.result("auth.login", *login) is True
        self.stale += self.live
        self.live.clear()

    def hear_own_job(self) -> None:
        """The subscriptions kept deliver: the connection hears of its own job."""
        if all(name == "hard.things" for name in self.live.values()):
            return
        marker = uuid.uuid4().hex
        assert self.w.result("test.keep", marker) == marker

        def heard() -> bool:
            return any(
                e["params"].get("fields", {}).get("arguments") == [marker]
                and e["params"]["fields"]["state"] == "SUCCESS"
                for e in self.w.events
            )

        self.w.pump(heard, "the events of the connection's own job")


def test_subscriptions_stay_within_the_bound(
    make_server: Callable[..., ServerProc], long_run: bool
) -> None:
    srv = make_server("--max-subscriptions", str(SMALL_SUBS))
    ctl = Wire(srv.ws_url, ("root", srv.password))
    password = "pw-" + SUB_USER * 2
    ctl.result("user.create", {"username": SUB_USER, "password": password, "allowlist": ["test.*"]})
    logins = {"root": ("root", srv.password), SUB_USER: (SUB_USER, password)}
    baseline = ctl.result("core.stats")["subscriptions"]
    seen = Counter[str]()

    def subscriptions() -> int:
        count: int = ctl.result("core.stats")["subscriptions"]
        return count

    @fuzz_settings(long_run, 25)
    @given(user=st.sampled_from(["root", SUB_USER]), steps=SUB_STEPS)
    @example(user=SUB_USER, steps=[("sub", "*")] * (SMALL_SUBS + 1) + [("unsub", "live")] * 2)
    def run(user: str, steps: list[tuple[Any, ...]]) -> None:
        subs = Subscriptions(Pipelined(srv.ws_url, logins[user]), seen)
        try:
            for step in steps:
                if step[0] == "sub":
                    subs.subscribe(step[1])
                elif step[0] == "unsub":
                    subs.unsubscribe(step[1])
                else:
                    subs.login_again(logins[user])
                assert subscriptions() == baseline + len(subs.live), (step, subs.live)
            subs.hear_own_job()
        finally:
            subs.w.close()
        # Closing the connection gives its subscriptions back.
        wait_for(lambda: subscriptions() == baseline, "subscriptions back to the baseline", 10)

    try:
        run()
        print(f"subscription fuzz outcomes: {dict(seen)}")
        assert seen["EBUSY"] and seen["room freed"] and seen["at the bound"], seen
    finally:
        ctl.close()


# -- names that are not UTF-8 --

NAME_BYTES = st.one_of(
    st.binary(min_size=1, max_size=24),
    st.text(min_size=1, max_size=12).map(str.encode),
    st.tuples(st.text(max_size=6), st.binary(min_size=1, max_size=3), st.text(max_size=6)).map(
        lambda t: t[0].encode() + t[1] + t[2].encode()
    ),
    st.sampled_from(
        [
            b"caf\xe9.txt",
            b"\xed\xb2\x80",  # a surrogate's UTF-8 form: not UTF-8
            b"\xff",
            b"\xc0\xaf",  # an overlong '/'
            b"\xf4\x90\x80\x80",  # past U+10FFFF
            b"\\udc80",  # the escape as plain text
            b"\xef\xbb\xbfbom",
            b"\xe2\x80\xa8",
            b"a\nb\tc\"d'",
        ]
    ),
).map(lambda b: b.replace(b"/", b"_").replace(b"\x00", b"_"))


def is_utf8(name: bytes) -> bool:
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_names_that_are_not_utf8_round_trip(
    make_server: Callable[..., ServerProc], long_run: bool
) -> None:
    srv = make_server()
    root = (srv.data_dir / "files").resolve()
    w = Pipelined(srv.ws_url, ("root", srv.password))
    watcher = Pipelined(srv.ws_url, ("root", srv.password))
    watcher.result("core.subscribe", "core.get_jobs")
    seen = Counter[str]()

    @fuzz_settings(long_run, 20)
    @given(
        entries=st.lists(
            st.tuples(NAME_BYTES.filter(lambda b: b not in (b".", b"..")), st.booleans()),
            min_size=1,
            max_size=8,
            unique_by=lambda t: t[0],
        )
    )
    @example(entries=[(b"caf\xe9.txt", False), (b"\xed\xb2\x80", True), (b"plain", False)])
    def run(entries: list[tuple[bytes, bool]]) -> None:
        base = root / f"nm-{uuid.uuid4().hex[:8]}"
        base.mkdir()
        raw_base = os.fsencode(base)
        for i, (name, is_dir) in enumerate(entries):
            path = raw_base + b"/" + name
            if is_dir:
                os.mkdir(path)
                path += b"/inner"
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
            try:
                os.write(fd, b"x" * (i + 1))  # its size tells the entries apart
            finally:
                os.close(fd)
        listed = w.result("filesystem.listdir", str(base))
        names = [e["name"] for e in listed]
        assert names == sorted(names), names
        by_name = {os.fsencode(e["name"]): e for e in listed}
        assert set(by_name) == {name for name, _ in entries}, (names, entries)
        for i, (name, is_dir) in enumerate(entries):
            entry = by_name[name]
            escaped = not is_utf8(name)
            seen["escaped" if escaped else "UTF-8"] += 1
            assert entry["escaped"] is escaped, (name, entry)
            assert entry["path"] == f"{base}/{entry['name']}", entry
            assert entry["type"] == ("DIRECTORY" if is_dir else "FILE"), entry
            # The name as it came back reaches the same file.
            local = os.lstat(raw_base + b"/" + name)
            again = w.result("filesystem.stat", entry["path"])
            assert again == entry, (again, entry)
            assert (again["size"], again["mode"]) == (local.st_size, local.st_mode), again
            if is_dir:
                (inner,) = w.result("filesystem.listdir", entry["path"])
                assert inner["path"] == entry["path"] + "/inner", inner
                assert inner["size"] == i + 1 and inner["escaped"] is escaped, inner
            else:
                assert entry["size"] == i + 1, entry
        # The names travel in a job's arguments, result and events too.
        value = [base.name, *names]
        assert w.result("test.keep", value) == value

        def heard() -> bool:
            return any(
                e["params"].get("fields", {}).get("arguments") == [value]
                and e["params"]["fields"]["state"] == "SUCCESS"
                and e["params"]["fields"]["result"] == value
                for e in watcher.events
            )

        watcher.pump(heard, "the job's events")
        watcher.events.clear()
        w.alive()

    try:
        run()
        print(f"name fuzz outcomes: {dict(seen)}")
        assert seen["escaped"] and seen["UTF-8"], seen
    finally:
        w.close()
        watcher.close()


# -- concurrent logins from one address against --login-max-failures --

SMALL_FAILURES = 3
_ADDRESSES = iter(range(1, 250 * 250))


def fresh_address() -> str:
    """A loopback address no example used: a client whose failures start at none."""
    n = next(_ADDRESSES)
    return f"127.77.{n // 250}.{n % 250 + 1}"


# right: logs in; password checks run in the hashing pool (other checks answer at once).
RIGHT = {"password", "token", "single_token", "key"}
HASHED = {"password", "bad_password", "bad_user"}
LOGIN_KINDS = [
    *["password", "bad_password", "bad_user", "token", "single_token", "bad_token"],
    *["key", "bad_key", "key_other_user", "malformed"],
]
ATTEMPTS = st.tuples(st.sampled_from(LOGIN_KINDS), st.sampled_from(["plain", "ex"]))


@dataclass
class LoginSecrets:
    password: str
    key: str
    token: str = ""
    single_token: str = ""


def login_request(kind: str, via: str, s: LoginSecrets) -> tuple[str, list[Any]]:
    """The call that makes one attempt of ``kind`` with auth.login* (plain) or login_ex."""
    if via == "plain":
        return {
            "password": ("auth.login", ["root", s.password]),
            "bad_password": ("auth.login", ["root", "x" + s.password]),
            "bad_user": ("auth.login", ["fz-nobody", s.password]),
            "token": ("auth.login_with_token", [s.token]),
            "single_token": ("auth.login_with_token", [s.single_token]),
            "bad_token": ("auth.login_with_token", ["fz-not-a-token"]),
            "key": ("auth.login_with_api_key", [s.key]),
            "bad_key": ("auth.login_with_api_key", [s.key + "x"]),
            "key_other_user": ("auth.login_with_api_key", ["999-" + s.key.split("-", 1)[1]]),
            "malformed": ("auth.login", ["root"]),
        }[kind]
    data: dict[str, Any] = {
        "password": {"mechanism": "PASSWORD_PLAIN", "username": "root", "password": s.password},
        "bad_password": {"mechanism": "PASSWORD_PLAIN", "username": "root", "password": "x"},
        "bad_user": {"mechanism": "PASSWORD_PLAIN", "username": "fz-nobody", "password": "x"},
        "token": {"mechanism": "TOKEN_PLAIN", "token": s.token},
        "single_token": {"mechanism": "TOKEN_PLAIN", "token": s.single_token},
        "bad_token": {"mechanism": "TOKEN_PLAIN", "token": "fz-not-a-token"},
        "key": {"mechanism": "API_KEY_PLAIN", "username": "root", "api_key": s.key},
        "bad_key": {"mechanism": "API_KEY_PLAIN", "username": "root", "api_key": s.key + "x"},
        "key_other_user": {"mechanism": "API_KEY_PLAIN", "username": "nobody", "api_key": s.key},
        "malformed": {"mechanism": "NOPE"},
    }[kind]
    return "auth.login_ex", [data]


def login_outcome(reply: dict[str, Any]) -> str:
    """ok, fail (the credential was checked and is wrong), busy (not checked) or invalid."""
    check_reply(reply, "")
    if "error" in reply:
        if reply["error"]["code"] == -32602:
            return "invalid"
        assert errname_of(reply) == "EBUSY", reply
        return "busy"
    result = reply["result"]
    if isinstance(result, dict):
        assert result["response_type"] in ("SUCCESS", "AUTH_ERR"), result
        return "ok" if result["response_type"] == "SUCCESS" else "fail"
    assert type(result) is bool, reply
    return "ok" if result else "fail"


def login_batch_model(attempts: list[tuple[str, str]]) -> list[str]:
    """The outcomes of one batch of attempts, members taken in order. Each attempt is counted
    as a failure when it begins (refused, not checked, once the count is at the bound) and
    taken back when it logs in; the members start in one loop step, so a password check in
    progress holds its count while the later members start."""
    held = 0
    spent = False
    out = []
    for kind, _ in attempts:
        if kind == "malformed":
            out.append("invalid")
            continue
        if held >= SMALL_FAILURES:
            out.append("busy")
            continue
        held += 1
        right = kind in RIGHT and not (kind == "single_token" and spent)
        spent = spent or kind == "single_token"
        out.append("ok" if right else "fail")
        if right and kind not in HASHED:
            held -= 1
    return out


def test_concurrent_logins_check_at_most_the_bound(
    make_server: Callable[..., ServerProc], long_run: bool
) -> None:
    srv = make_server(
        "--login-max-failures", str(SMALL_FAILURES), "--login-window", "3600"
    )  # no failure leaves the window during the test
    ctl = Wire(srv.ws_url, ("root", srv.password))
    secrets = LoginSecrets(srv.password, ctl.result("api_key.create", {"name": "fz-login"})["key"])
    seen = Counter[str]()

    @fuzz_settings(long_run, 20)
    @given(
        attempts=st.lists(ATTEMPTS, min_size=1, max_size=10),
        spread=st.sampled_from([0, 0, 2, 3, 5]),  # 0: one batch frame; else connections
    )
    @example(attempts=[("bad_password", "plain")] * 4 + [("password", "ex")], spread=0)
    @example(attempts=[("bad_token", "plain")] * 2 + [("password", "plain")] * 3, spread=0)
    def run(attempts: list[tuple[str, str]], spread: int) -> None:
        secrets.token = ctl.result("auth.generate_token", 600, False)
        secrets.single_token = ctl.result("auth.generate_token", 600, True)
        address = fresh_address()
        requests = [login_request(kind, via, secrets) for kind, via in attempts]
        if spread == 0:
            outcomes = login_batch(srv, address, requests)
            assert outcomes == login_batch_model(attempts), (attempts, outcomes)
        else:
            outcomes = login_spread(srv, address, requests, spread)
        # Whatever the order they were checked in: never more wrong credentials checked than
        # the bound, never a wrong one accepted, a right one refused only unchecked.
        wrong = outcomes.count("fail")
        assert wrong <= SMALL_FAILURES, (attempts, outcomes)
        for (kind, _), outcome in zip(attempts, outcomes, strict=True):
            assert outcome != "ok" or kind in RIGHT, (attempts, outcomes)
            assert outcome != "fail" or kind not in RIGHT - {"single_token"}, (attempts, outcomes)
            assert (outcome == "invalid") == (kind == "malformed"), (attempts, outcomes)
        accepted = [kind for (kind, _), o in zip(attempts, outcomes, strict=True) if o == "ok"]
        assert accepted.count("single_token") <= 1, (attempts, outcomes)
        # Afterwards the right password logs in exactly while the address is not blocked.
        probe = Pipelined(srv.ws_url, source=address)
        try:
            expected = "busy" if wrong >= SMALL_FAILURES else "ok"
            assert login_outcome(probe.call("auth.login", "root", srv.password)) == expected
        finally:
            probe.close()
        seen["blocked" if wrong >= SMALL_FAILURES else "not blocked"] += 1
        seen["refused unchecked"] += "busy" in outcomes
        ctl.alive()

    try:
        run()
        print(f"login fuzz outcomes: {dict(seen)}")
        assert seen["blocked"] and seen["not blocked"] and seen["refused unchecked"], seen
    finally:
        ctl.close()


def login_batch(srv: ServerProc, address: str, requests: list[tuple[str, list[Any]]]) -> list[str]:
    """All the attempts in one batch frame from ``address``; their outcomes in order."""
    w = Pipelined(srv.ws_url, source=address)
    try:
        members = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
            for i, (method, params) in enumerate(requests)
        ]
        replies = {r["id"]: r for r in w.batch(members)}
        assert sorted(replies) == list(range(len(requests))), replies
        return [login_outcome(replies[i]) for i in range(len(requests))]
    finally:
        w.close()


def login_spread(
    srv: ServerProc, address: str, requests: list[tuple[str, list[Any]]], spread: int
) -> list[str]:
    """The attempts dealt over ``spread`` connections from ``address``, all sent before any
    answer is read; their outcomes in order."""
    conns = [Pipelined(srv.ws_url, source=address) for _ in range(spread)]
    try:
        for w in conns:
            w.alive()  # connected: the attempts below leave at once
        sent = [
            (conns[i % spread], conns[i % spread].send(method, *params))
            for i, (method, params) in enumerate(requests)
        ]
        return [login_outcome(w.reply(msg_id)) for w, msg_id in sent]
    finally:
        for w in conns:
            w.close()


def test_bulk_is_no_password_oracle(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server()
    ctl = Wire(srv.ws_url, ("root", srv.password))
    ctl.result("user.create", {"username": "fzoracle", "password": "pw-fzoracle"})
    user = Wire(srv.ws_url, ("fzoracle", "pw-fzoracle"))
    try:
        wrong, right = user.result(
            "core.bulk", "auth.login", [["root", "x"], ["root", srv.password]]
        )
        assert wrong == right, (wrong, right)
    finally:
        user.close()
        ctl.close()
