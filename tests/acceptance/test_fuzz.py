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

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from middlewared.config import Limits
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
        self, url: str, login: tuple[str, ...] | None = None, method: str = "auth.login"
    ) -> None:
        self.url = url
        self.login = login
        self.login_method = method
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
                    self.url, max_size=None, open_timeout=10, close_timeout=2, ping_interval=None
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
