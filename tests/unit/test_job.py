"""A job: its state machine, progress, failure details and the record clients see."""

from __future__ import annotations

import errno
import itertools
from pathlib import Path
from typing import Any

import pytest

from middlewared.auth.credentials import CredentialKind, Credentials, Identity
from middlewared.errors import CallError, NotFound, ValidationErrors
from middlewared.jobs.job import ENDED, InvalidTransition, Job, JobState
from middlewared.jobs.logs import JobLog
from middlewared.registry import JobOptions
from middlewared.store.base import Op, latest

ALICE = Credentials(
    "alice",
    admin=False,
    kind=CredentialKind.LOGIN_PASSWORD,
    user_id=2,
    identity=Identity(CredentialKind.LOGIN_PASSWORD, 2),
)
ALLOWED = {
    (JobState.WAITING, JobState.RUNNING),
    (JobState.WAITING, JobState.FAILED),
    (JobState.WAITING, JobState.ABORTED),
    (JobState.RUNNING, JobState.SUCCESS),
    (JobState.RUNNING, JobState.FAILED),
    (JobState.RUNNING, JobState.ABORTED),
    # A failed attempt that will be retried goes back to waiting (JobOptions.retry).
    (JobState.RUNNING, JobState.WAITING),
}
RECORD_KEYS = {
    "id",
    "method",
    "arguments",
    "message_ids",
    "description",
    "abortable",
    "transient",
    "logs_path",
    "logs_excerpt",
    "progress",
    "result",
    "error",
    "exception",
    "exc_info",
    "state",
    "time_started",
    "time_finished",
    "credentials",
    "origin",
    "attempt",
    "result_size",
}


def make_job(
    options: JobOptions | None = None,
    credentials: Credentials = ALICE,
    message_id: Any = None,
) -> Job:
    return Job(
        7,
        "pool.scrub",
        options or JobOptions(),
        ["tank", "hunter2"],
        ["tank", "********"],
        credentials,
        message_id=message_id,
        description="Scrubbing",
    )


def at(state: JobState) -> Job:
    """A job brought to ``state`` through allowed transitions."""
    job = make_job()
    if state is JobState.WAITING:
        return job
    if state in (JobState.RUNNING, JobState.SUCCESS):
        job.transition(JobState.RUNNING)
    if state is not JobState.RUNNING:
        job.transition(state)
    return job


# -- state machine ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst"), list(itertools.product(JobState, JobState)), ids=lambda s: s.value
)
async def test_transitions(src: JobState, dst: JobState) -> None:
    job = at(src)
    if (src, dst) in ALLOWED:
        job.transition(dst)
        assert job.state is dst
    else:
        with pytest.raises(InvalidTransition):
            job.transition(dst)
        assert job.state is src


@pytest.mark.parametrize("state", sorted(ENDED))
async def test_ended_states_never_change(state: JobState) -> None:
    job = at(state)
    finished = job.time_finished
    assert job.ended
    for other in JobState:
        with pytest.raises(InvalidTransition):
            job.transition(other)
    assert job.state is state
    assert job.time_finished == finished


async def test_a_new_job_is_waiting_and_unfinished() -> None:
    job = make_job()
    assert job.state is JobState.WAITING
    assert not job.ended
    assert job.time_finished is None
    assert isinstance(job.time_started, int)


async def test_ending_sets_time_finished() -> None:
    job = at(JobState.RUNNING)
    assert job.time_finished is None
    job.transition(JobState.FAILED)
    assert job.time_finished is not None and job.time_finished >= job.time_started


async def test_success_sets_percent_100() -> None:
    job = at(JobState.RUNNING)
    job.set_progress(40, "almost")
    job.transition(JobState.SUCCESS)
    assert job.progress == {"percent": 100.0, "description": "almost", "extra": None}


@pytest.mark.parametrize("state", [JobState.FAILED, JobState.ABORTED])
async def test_failure_keeps_the_percent_reached(state: JobState) -> None:
    job = at(JobState.RUNNING)
    job.set_progress(40)
    job.transition(state)
    assert job.progress["percent"] == 40.0


# -- progress ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [(-5, 0.0), (0, 0.0), (42, 42.0), (42.5, 42.5), (100, 100.0), (150, 100.0), (1e9, 100.0)],
)
async def test_set_progress_clamps_percent(given: float, stored: float) -> None:
    job = make_job()
    job.set_progress(given)
    assert job.progress["percent"] == stored
    assert isinstance(job.progress["percent"], float)


async def test_set_progress_keeps_what_is_not_given() -> None:
    job = make_job()
    job.set_progress(10, "copying", {"bytes": 1})
    job.set_progress(20)
    assert job.progress == {"percent": 20.0, "description": "copying", "extra": {"bytes": 1}}
    job.set_progress(description="verifying")
    assert job.progress == {"percent": 20.0, "description": "verifying", "extra": {"bytes": 1}}


async def test_changes_are_reported_to_the_manager_and_watchers() -> None:
    job = make_job()
    calls: list[tuple[int, bool]] = []
    watched: list[Any] = []
    job.on_change = lambda j, progress_only: calls.append((j.id, progress_only))
    job.watchers.append(lambda j: watched.append(j.progress["percent"]))
    job.set_progress(5)
    job.set_description("renamed")
    assert calls == [(7, True), (7, False)]
    assert watched == [5.0]
    assert job.description == "renamed"


async def test_log_without_a_log_file_is_ignored() -> None:
    make_job().log("nowhere to go")


# -- record -----------------------------------------------------------------------------


async def test_record_of_a_new_job() -> None:
    job = make_job(JobOptions(abortable=True), message_id=12)
    record = job.record()
    assert set(record) == RECORD_KEYS
    assert record == {
        "id": 7,
        "method": "pool.scrub",
        "arguments": ["tank", "********"],
        "message_ids": [12],
        "description": "Scrubbing",
        "abortable": True,
        "transient": False,
        "logs_path": None,
        "logs_excerpt": None,
        "progress": {"percent": None, "description": None, "extra": None},
        "result": None,
        "error": None,
        "exception": None,
        "exc_info": None,
        "state": "WAITING",
        "time_started": {"$date": job.time_started},
        "time_finished": None,
        "credentials": {"type": "LOGIN_PASSWORD", "data": {"username": "alice"}},
        "origin": "call",
        "attempt": 1,
        "result_size": None,
    }


async def test_a_job_belongs_to_its_callers_user_id() -> None:
    job = Job(1, "pool.scrub", JobOptions(), [], [], ALICE, origin="bulk:3")
    assert job.owner_id == 2
    record = job.record()
    assert (record["origin"], record["attempt"]) == ("bulk:3", 1)


async def test_a_retried_attempt_waits_again_and_says_which_it_is() -> None:
    job = at(JobState.RUNNING)
    job.set_failure(CallError("busy", errno.EBUSY))
    job.transition(JobState.WAITING)
    job.attempt += 1
    record = job.record()
    assert (record["state"], record["attempt"], record["time_finished"]) == ("WAITING", 2, None)
    # The failure of the last attempt is shown until the next one ends.
    assert record["error"] == "busy"


async def test_a_result_kept_beside_the_record_is_not_in_it() -> None:
    job = at(JobState.RUNNING)
    job.result = {"big": "x" * 100}
    job.result_size = 120
    job.transition(JobState.SUCCESS)
    record = job.record()
    assert (record["result"], record["result_size"]) == (None, 120)


async def test_record_without_a_message_id_has_no_message_ids() -> None:
    assert make_job().record()["message_ids"] == []


async def test_record_of_a_successful_job() -> None:
    job = at(JobState.RUNNING)
    job.result = {"scrubbed": 3}
    job.transition(JobState.SUCCESS)
    record = job.record()
    assert set(record) == RECORD_KEYS
    assert record["state"] == "SUCCESS"
    assert record["result"] == {"scrubbed": 3}
    assert record["time_finished"] == {"$date": job.time_finished}
    assert record["progress"]["percent"] == 100.0
    assert record["error"] is None and record["exc_info"] is None


async def test_record_is_a_snapshot() -> None:
    job = make_job(message_id=1)
    record = job.record()
    record["message_ids"].append(2)
    record["progress"]["percent"] = 99
    assert job.message_ids == [1]
    assert job.progress["percent"] is None


async def test_exception_only_for_admins() -> None:
    job = at(JobState.RUNNING)
    job.set_failure(RuntimeError("disk on fire"))
    job.transition(JobState.FAILED)
    assert job.record(admin=True)["exception"] is not None
    assert job.record(admin=False)["exception"] is None
    # Everything else is the same for both audiences.
    admin = {k: v for k, v in job.record(admin=True).items() if k != "exception"}
    user = {k: v for k, v in job.record(admin=False).items() if k != "exception"}
    assert admin == user


async def test_record_with_logs(tmp_path: Path) -> None:
    job = make_job(JobOptions(logs=True))
    job.logs = JobLog(tmp_path / "7.log")
    job.log("line one")
    job.log("line two\n")
    job.logs_excerpt = job.logs.close()
    record = job.record()
    assert record["logs_path"] == str(tmp_path / "7.log")
    assert record["logs_excerpt"] == "line one\nline two\n"


async def test_record_credentials_of_an_api_key() -> None:
    creds = Credentials("bob", admin=True, kind=CredentialKind.API_KEY, api_key_id=4)
    record = make_job(credentials=creds).record()
    assert record["credentials"] == {
        "type": "API_KEY",
        "data": {"username": "bob", "api_key": {"id": 4}},
    }


# -- failures ---------------------------------------------------------------------------


def failed_with(exc: BaseException, aborted: bool = False) -> Job:
    job = at(JobState.RUNNING)
    try:
        raise exc
    except BaseException as raised:
        job.set_failure(raised, aborted=aborted)
    job.transition(JobState.ABORTED if aborted else JobState.FAILED)
    return job


async def test_set_failure_with_a_call_error() -> None:
    exc = CallError("pool tank is offline", errno.ENXIO)
    job = failed_with(exc)
    assert job.error == "pool tank is offline"
    assert job.failure is exc
    assert job.exc_info == {
        "type": "CallError",
        "errno": errno.ENXIO,
        "errname": "ENXIO",
        "extra": None,
        "repr": repr(exc),
    }
    assert job.exception is not None and "pool tank is offline" in job.exception


async def test_set_failure_with_a_subclass_of_call_error() -> None:
    job = failed_with(NotFound("no such pool"))
    assert job.exc_info is not None
    assert (job.exc_info["type"], job.exc_info["errno"]) == ("NotFound", errno.ENOENT)
    assert job.exc_info["errname"] == "ENOENT"


async def test_set_failure_with_validation_errors() -> None:
    exc = ValidationErrors([("pool.name", "Required", errno.EINVAL)])
    exc.add("pool.size", "Too small", errno.ERANGE)
    job = failed_with(exc)
    assert job.error == "pool.name: Required; pool.size: Too small"
    assert job.failure is exc
    assert job.exc_info == {
        "type": "VALIDATION",
        "errno": errno.EINVAL,
        "errname": "EINVAL",
        "extra": [["pool.name", "Required", errno.EINVAL], ["pool.size", "Too small", 34]],
        "repr": repr(exc),
    }


async def test_set_failure_with_a_plain_exception() -> None:
    exc = ValueError("bad block")
    job = failed_with(exc)
    assert job.error == "bad block"
    assert job.failure is None
    assert job.exc_info == {
        "type": "ValueError",
        "errno": None,
        "errname": None,
        "extra": None,
        "repr": "ValueError('bad block')",
    }
    assert job.exception is not None
    assert "Traceback" in job.exception and "ValueError: bad block" in job.exception


async def test_set_failure_with_an_exception_without_text_uses_its_repr() -> None:
    job = failed_with(KeyError())
    assert job.error == "KeyError()"


async def test_set_failure_aborted() -> None:
    job = failed_with(CallError("Job aborted", errno.ECANCELED), aborted=True)
    assert job.state is JobState.ABORTED
    assert job.exc_info is not None
    assert job.exc_info["type"] == "JobAborted"
    assert job.exc_info["errname"] == "ECANCELED"


async def test_failure_record() -> None:
    job = failed_with(CallError("nope", errno.EPERM))
    record = job.record(admin=False)
    assert set(record) == RECORD_KEYS
    assert record["state"] == "FAILED"
    assert record["error"] == "nope"
    assert record["exc_info"]["errname"] == "EPERM"
    assert record["exception"] is None
    assert record["result"] is None


# -- encoding ---------------------------------------------------------------------------


async def test_a_result_with_no_json_form_is_refused_with_the_reason() -> None:
    job = make_job()
    with pytest.raises(CallError, match="cannot be encoded as JSON") as info:
        job.set_result({1, 2})
    assert info.value.errno == errno.EINVAL
    job.set_result({"name": "caf\udce9"})
    assert job.result == {"name": "caf\udce9"}


async def test_a_snapshot_is_always_encodable() -> None:
    job = make_job()
    job.set_progress(40, "caf\udce9", {"bad": {1, 2}, "good": 1})
    snap = job.snapshot()
    assert snap.encoded.isascii()
    assert snap.record["progress"] == {"percent": 40.0, "description": "caf\udce9", "extra": None}
    assert snap.record["arguments"] == ["tank", "********"]


def test_latest_keeps_the_last_op_of_each_key_in_order() -> None:
    ops = [
        Op("update_job", {"n": 1}, ("job", 1)),
        Op("insert_job", {"n": 2}),
        Op("update_job", {"n": 3}, ("job", 2)),
        Op("update_job", {"n": 4}, ("job", 1)),
        Op("raise_counter", {"n": 5}),
        Op("raise_counter", {"n": 6}),
    ]
    assert [op.params["n"] for op in latest(ops)] == [2, 3, 4, 5, 6]
    unkeyed = ops[1:2] + ops[4:]
    assert latest(unkeyed) == unkeyed
