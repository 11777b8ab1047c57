"""The client's pure parts: error decoding, job tracking, midclt's text in and out (no sockets)."""

from __future__ import annotations

import errno
import io
from typing import Any

import pytest

from middlewared.errors import (
    ENOMETHOD,
    ENOTAUTHENTICATED,
    Busy,
    CallError,
    InternalError,
    InvalidRequest,
    MethodNotFound,
    MiddlewareError,
    NotAuthenticated,
    NotFound,
    ParseError,
    PermissionDenied,
    TooManyCalls,
    ValidationErrors,
)
from middlewared_client.clitext import (
    ProgressBar,
    format_error,
    format_jobs_table,
    format_result,
    parse_arg,
    render_progress,
)
from middlewared_client.errors import ConnectionLost, error_from_rpc
from middlewared_client.jobs import JobHandle, JobProgress, JobTracker
from middlewared_client.midclt import main
from middlewared_client.options import Credentials, ReconnectPolicy
from middlewared_client.subscriptions import Listener, Subscriptions


def rpc_error(code: int, err: int, reason: str, extra: Any = None, trace: Any = None) -> Any:
    data = {"error": err, "errname": "", "reason": reason, "extra": extra, "trace": trace}
    return {"code": code, "message": "m", "data": data}


# Error objects back into exceptions.

SERVER_ERRORS: list[MiddlewareError] = [
    CallError("it broke"),
    CallError("no space", errno.ENOSPC),
    NotAuthenticated(),
    PermissionDenied("not yours"),
    NotFound("no such job"),
    Busy("locked", errno.EBUSY),
    ValidationErrors([("name", "required", errno.EINVAL), ("size", "too big", errno.ERANGE)]),
    ParseError("bad json"),
    InvalidRequest("no method"),
    InternalError("oops"),
    TooManyCalls("slow down"),
]


@pytest.mark.parametrize("exc", SERVER_ERRORS, ids=lambda e: type(e).__name__)
def test_round_trip_keeps_class_errno_reason_extra(exc: MiddlewareError) -> None:
    back = error_from_rpc(exc.to_rpc_error())
    assert type(back) is type(exc)
    assert (back.errno, back.reason, back.extra) == (exc.errno, exc.reason, exc.extra)
    assert str(back) == str(exc)


def test_method_not_found_keeps_the_method_called() -> None:
    exc = error_from_rpc(MethodNotFound("nope.x").to_rpc_error(), "nope.x")
    assert isinstance(exc, MethodNotFound)
    assert exc.method == "nope.x"
    assert exc.errno == ENOMETHOD
    assert "nope.x" in exc.reason


def test_validation_errors_rebuild_their_list() -> None:
    exc = error_from_rpc(rpc_error(-32602, 22, "a: bad", [["a", "bad", 22], ["b", "worse"]]))
    assert isinstance(exc, ValidationErrors)
    assert exc.errors == [("a", "bad", 22), ("b", "worse", errno.EINVAL)]


@pytest.mark.parametrize(
    ("err", "cls"),
    [
        (ENOTAUTHENTICATED, NotAuthenticated),
        (errno.EACCES, PermissionDenied),
        (errno.ENOENT, NotFound),
        (errno.EBUSY, Busy),
        (errno.EINVAL, CallError),
    ],
)
def test_call_errors_become_the_class_of_their_errno(err: int, cls: type[Exception]) -> None:
    exc = error_from_rpc(rpc_error(-32001, err, "why"))
    assert type(exc) is cls
    assert isinstance(exc, CallError)
    assert (exc.errno, exc.reason) == (err, "why")


def test_malformed_errors_still_give_an_exception() -> None:
    assert isinstance(error_from_rpc("text"), CallError)
    exc = error_from_rpc({"code": -32099, "message": "Strange"})
    assert isinstance(exc, CallError)
    assert exc.reason == "Strange"
    assert exc.errno == errno.EFAULT


def test_remote_trace_becomes_a_note() -> None:
    trace = {"class": "KeyError", "formatted": "Traceback ...\nKeyError: 'x'"}
    exc = error_from_rpc(rpc_error(-32603, errno.EFAULT, "boom", trace=trace))
    assert isinstance(exc, InternalError)
    assert any("KeyError: 'x'" in note for note in exc.__notes__)


def test_client_errors_are_middleware_errors() -> None:
    exc = ConnectionLost()
    assert isinstance(exc, MiddlewareError)
    assert exc.errno == errno.ECONNRESET
    assert str(exc) == "[ECONNRESET] Connection lost"


# Options.


def test_credentials_pick_the_login_method_and_hide_secrets() -> None:
    creds = Credentials("root", "secret")
    assert creds.login_call() == ("auth.login", ["root", "secret"])
    assert "secret" not in repr(creds)
    assert Credentials(api_key="k").login_call() == ("auth.login_with_api_key", ["k"])
    assert Credentials(token="t").login_call() == ("auth.login_with_token", ["t"])
    assert Credentials().empty
    with pytest.raises(ValueError):
        Credentials("root", "pw", api_key="k")
    with pytest.raises(ValueError):
        Credentials(password="pw")


def test_backoff_grows_to_its_cap_and_stops_after_max_attempts() -> None:
    delays = list(ReconnectPolicy(0.1, 0.5, 2.0, jitter=0.0, max_attempts=5).delays())
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


# Job tracking from events.


class FakeControl:
    def __init__(self) -> None:
        self.aborted: list[int] = []

    async def abort_job(self, job_id: int) -> None:
        self.aborted.append(job_id)

    async def job_id_for_call(self, call_id: str) -> int | None:
        return 77 if call_id == "known" else None


def event(msg: str, job_id: int, **fields: Any) -> dict[str, Any]:
    return {"msg": msg, "collection": "core.get_jobs", "id": job_id, "fields": fields}


def progress(percent: float, description: str | None = None) -> dict[str, Any]:
    return {"percent": percent, "description": description, "extra": None}


async def test_tracker_binds_by_message_id_and_forgets_on_reply() -> None:
    tracker, control = JobTracker(), FakeControl()
    handle = JobHandle("c-1", "test.progress", control)
    seen: list[JobProgress] = []
    handle.add_progress_callback(seen.append)
    tracker.track(handle)
    tracker.on_event(event("added", 5, id=5, message_ids=["other"], state="WAITING"))
    assert handle.id is None
    tracker.on_event(event("added", 9, id=9, message_ids=["c-1"], state="WAITING"))
    assert await handle.wait_id() == 9
    tracker.on_event(event("changed", 9, state="RUNNING", progress=progress(50, "half")))
    assert (handle.state, handle.progress.percent) == ("RUNNING", 50)
    tracker.on_event(event("changed", 9, state="SUCCESS", progress=progress(100, "done")))
    tracker.finish(handle, result=3)
    assert len(tracker) == 0
    assert await handle.result() == 3
    assert [p.percent for p in seen] == [50, 100]
    await handle.abort()
    assert control.aborted == [9]


async def test_merged_call_learns_its_job_from_a_changed_event() -> None:
    tracker = JobTracker()
    first = JobHandle("c-1", "m", FakeControl())
    second = JobHandle("c-2", "m", FakeControl())
    tracker.track(first)
    tracker.track(second)
    tracker.on_event(event("added", 4, id=4, message_ids=["c-1"], state="WAITING"))
    tracker.on_event(event("changed", 4, id=4, message_ids=["c-1", "c-2"], state="WAITING"))
    assert (first.id, second.id) == (4, 4)
    tracker.on_event(event("changed", 4, progress=progress(10)))
    assert first.progress.percent == second.progress.percent == 10


async def test_failed_job_raises_its_error_and_records_the_state() -> None:
    tracker = JobTracker()
    handle = JobHandle("c-1", "test.fail", FakeControl())
    tracker.track(handle)
    tracker.on_event(event("added", 2, id=2, message_ids=["c-1"], state="RUNNING"))
    tracker.finish(handle, error=CallError("boom"))
    assert handle.state == "FAILED"
    with pytest.raises(CallError, match="boom"):
        await handle.result()


async def test_reply_before_event_asks_the_server_for_the_id() -> None:
    tracker = JobTracker()
    known = JobHandle("known", "m", FakeControl())
    unknown = JobHandle("lost", "m", FakeControl())
    for handle in (known, unknown):
        tracker.track(handle)
        tracker.finish(handle, error=NotFound("gone") if handle is unknown else None)
    assert await known.wait_id() == 77
    with pytest.raises(NotFound):
        await unknown.wait_id()


async def test_dropped_connection_fails_every_tracked_job() -> None:
    tracker = JobTracker()
    handle = JobHandle("c-1", "m", FakeControl())
    tracker.track(handle)
    tracker.fail_all(ConnectionLost())
    assert len(tracker) == 0
    with pytest.raises(ConnectionLost):
        await handle.result(timeout=1)


def test_subscriptions_dispatch_by_collection_and_star() -> None:
    subs = Subscriptions()
    jobs: list[Any] = []
    everything: list[Any] = []
    ended: list[Any] = []

    def broken(params: dict[str, Any]) -> None:
        raise RuntimeError("a bad callback must not stop the others")

    subs.add(Listener("core.get_jobs", broken))
    subs.add(Listener("core.get_jobs", jobs.append, on_end=ended.append))
    subs.add(Listener("*", everything.append))
    subs.dispatch(event("added", 1))
    subs.dispatch({"msg": "added", "collection": "other", "id": 1, "fields": {}})
    assert (len(jobs), len(everything)) == (1, 2)
    subs.end("core.get_jobs", None)
    assert ended == [None]
    assert subs.user_names() == {"*"}


# midclt text.


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("-2.5", -2.5),
        ('"quoted"', "quoted"),
        ("plain", "plain"),
        ("", ""),
        ("true", True),
        ("null", None),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("[1, {bad", "[1, {bad"),
        ("/mnt/tank", "/mnt/tank"),
    ],
)
def test_parse_arg_takes_json_else_the_string(text: str, value: Any) -> None:
    assert parse_arg(text) == value


def test_format_result_prints_strings_raw_and_the_rest_as_json() -> None:
    assert format_result("pong") == "pong"
    assert format_result({"a": [1, None, True]}) == '{"a":[1,null,true]}'
    assert format_result(None) == "null"
    assert format_result(5) == "5"


def test_format_error_names_the_errno_and_lists_validation_errors() -> None:
    assert format_error(MethodNotFound("x.y")) == "[ENOMETHOD] Method 'x.y' does not exist"
    text = format_error(ValidationErrors([("a", "bad", 22), ("b", "worse", 22)]))
    assert text.splitlines() == ["[EINVAL] a: bad; b: worse", "  a: bad", "  b: worse"]


@pytest.mark.parametrize(
    ("percent", "filled", "number"),
    [
        (0, 0, "  0.0%"),
        (50, 5, " 50.0%"),
        (100, 10, "100.0%"),
        (150, 10, "100.0%"),
        (-3, 0, "  0.0%"),
        (33.333, 3, " 33.3%"),
        (None, 0, " --.-%"),
    ],
)
def test_render_progress(percent: float | None, filled: int, number: str) -> None:
    line = render_progress(JobProgress(percent, "copying\n files"), width=10)
    assert line == f"[{'#' * filled}{'.' * (10 - filled)}] {number} copying files"


def test_render_progress_fits_the_terminal() -> None:
    line = render_progress(JobProgress(10, "x" * 200), columns=60)
    assert len(line) == 59


def test_progress_bar_redraws_in_place_and_ends_the_line() -> None:
    out = io.StringIO()
    bar = ProgressBar(out)
    bar.update(JobProgress(50, "a long description"))
    bar.update(JobProgress(50, "a long description"))
    bar.update(JobProgress(100, "done"))
    bar.finish()
    frames = out.getvalue().split("\r")[1:]
    assert len(frames) == 2
    assert len(frames[1].rstrip("\n")) == len(frames[0])  # padded over the longer line
    assert frames[1].endswith("\n") and "done" in frames[1]


def test_jobs_table_has_one_aligned_row_per_job() -> None:
    jobs = [
        {"id": 1, "method": "test.progress", "state": "SUCCESS", "progress": progress(100, "ok")},
        {"id": 12, "method": "x", "state": "FAILED", "error": "boom", "progress": progress(5)},
        {"id": 13, "method": "y", "state": "WAITING", "progress": None},
    ]
    lines = format_jobs_table(jobs).splitlines()
    assert lines[0].split() == ["ID", "METHOD", "STATE", "PERCENT", "DESCRIPTION"]
    assert lines[1].split() == ["1", "test.progress", "SUCCESS", "100", "ok"]
    assert lines[2].split() == ["12", "x", "FAILED", "5", "boom"]
    assert lines[3].split() == ["13", "y", "WAITING", "-"]
    assert lines[0].index("STATE") == lines[1].index("SUCCESS") == lines[2].index("FAILED")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["bogus"],
        ["call"],
        ["-U", "root", "ping"],
        ["-K", "k", "-U", "u", "-P", "p", "ping"],
        ["jobs", "--state", "nope"],
        ["subscribe", "-n", "0", "x"],
    ],
)
def test_midclt_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_midclt_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "subscribe" in capsys.readouterr().out
