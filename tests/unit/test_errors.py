"""The exception tree: JSON-RPC code and errno of every class, and the error data shape."""

from __future__ import annotations

import errno
import json

import pytest

from middlewared.errors import (
    CODE_TO_CLASS,
    ENOMETHOD,
    ENOTAUTHENTICATED,
    RPC_MESSAGES,
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
    RpcCode,
    TooManyCalls,
    ValidationErrors,
    errname,
    validation_error,
)
from middlewared.jobs.engine import JobAborted
from middlewared.rpc.errors import error_object

DATA_KEYS = {"error", "errname", "reason", "extra", "trace"}

# (an instance, its JSON-RPC code, its errno)
CASES: list[tuple[MiddlewareError, int, int]] = [
    (CallError("failed"), -32001, errno.EFAULT),
    (ParseError("bad json"), -32700, errno.EINVAL),
    (InvalidRequest("bad request"), -32600, errno.EINVAL),
    (MethodNotFound("x.y"), -32601, ENOMETHOD),
    (InternalError("oops"), -32603, errno.EFAULT),
    (TooManyCalls("slow down"), -32000, errno.EBUSY),
    (NotAuthenticated(), -32001, ENOTAUTHENTICATED),
    (PermissionDenied(), -32001, errno.EACCES),
    (NotFound(), -32001, errno.ENOENT),
    (Busy("locked"), -32001, errno.EBUSY),
    (ValidationErrors([("a", "bad", errno.EINVAL)]), -32602, errno.EINVAL),
    (JobAborted(), -32001, errno.ECANCELED),
]


def ids(case: tuple[MiddlewareError, int, int]) -> str:
    return type(case[0]).__name__


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_code_and_errno(case: tuple[MiddlewareError, int, int]) -> None:
    exc, code, err = case
    assert exc.rpc_code == code
    assert exc.errno == err
    rpc = exc.to_rpc_error()
    assert rpc["code"] == code
    assert rpc["message"] == RPC_MESSAGES[code]
    assert rpc["data"]["error"] == err
    assert rpc["data"]["errname"] == errname(err)


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_error_data_always_has_the_five_keys(case: tuple[MiddlewareError, int, int]) -> None:
    exc = case[0]
    data = exc.error_data()
    assert set(data) == DATA_KEYS
    assert data["trace"] is None
    assert data["reason"] == exc.reason
    trace = {"class": "X", "formatted": "Traceback..."}
    assert exc.error_data(trace)["trace"] == trace
    # Always JSON: the wire and the store both encode it.
    json.dumps(exc.to_rpc_error(trace))


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_every_class_is_a_middleware_error(case: tuple[MiddlewareError, int, int]) -> None:
    assert isinstance(case[0], MiddlewareError)
    assert isinstance(case[0], Exception)


def test_the_rpc_codes_are_exactly_truenas_set() -> None:
    assert {int(c) for c in RpcCode} == {-32700, -32600, -32601, -32602, -32603, -32000, -32001}
    assert set(RPC_MESSAGES) == set(RpcCode)
    assert RPC_MESSAGES[RpcCode.METHOD_NOT_FOUND] == "Method does not exist"


def test_code_to_class_rebuilds_the_class_of_each_code() -> None:
    for code, cls in CODE_TO_CLASS.items():
        assert cls.rpc_code == code


def test_call_errors_share_the_call_error_code() -> None:
    for cls in (NotAuthenticated, PermissionDenied, NotFound, Busy, JobAborted):
        assert issubclass(cls, CallError)
    assert not issubclass(ValidationErrors, CallError)


def test_explicit_errno_overrides_the_default() -> None:
    assert CallError("x", errno.ENOSPC).errno == errno.ENOSPC
    assert Busy("x", errno.EAGAIN).errno == errno.EAGAIN
    assert CallError("x", 0).errno == 0


def test_str_has_errname_and_reason() -> None:
    assert str(CallError("disk full", errno.ENOSPC)) == "[ENOSPC] disk full"
    assert str(NotAuthenticated()) == "[ENOTAUTHENTICATED] Not authenticated"


def test_extra_is_carried() -> None:
    exc = CallError("x", extra=[["f", "m", 22]])
    assert exc.error_data()["extra"] == [["f", "m", 22]]
    assert CallError("x").error_data()["extra"] is None


def test_method_not_found_names_the_method() -> None:
    exc = MethodNotFound("pool.frobnicate")
    assert exc.method == "pool.frobnicate"
    assert "pool.frobnicate" in exc.reason


# -- errname ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "name"),
    [
        (ENOMETHOD, "ENOMETHOD"),
        (ENOTAUTHENTICATED, "ENOTAUTHENTICATED"),
        (201, "ENOMETHOD"),
        (207, "ENOTAUTHENTICATED"),
        (errno.EINVAL, "EINVAL"),
        (errno.ENOENT, "ENOENT"),
        (errno.EACCES, "EACCES"),
        (errno.EBUSY, "EBUSY"),
        (errno.EFAULT, "EFAULT"),
        (errno.ECANCELED, "ECANCELED"),
        (99999, "E99999"),
    ],
)
def test_errname(code: int, name: str) -> None:
    assert errname(code) == name


# -- validation errors ------------------------------------------------------------------


def test_validation_errors_start_empty_and_falsy() -> None:
    exc = ValidationErrors()
    assert not exc
    assert exc.errors == []
    assert exc.reason == "Invalid params"
    assert exc.extra == []
    assert set(exc.error_data()) == DATA_KEYS


def test_validation_errors_add() -> None:
    exc = ValidationErrors()
    exc.add("user.name", "Required")
    exc.add("user.uid", "Out of range", errno.ERANGE)
    exc.add("", "Inconsistent")
    assert exc
    assert exc.errors == [
        ("user.name", "Required", errno.EINVAL),
        ("user.uid", "Out of range", errno.ERANGE),
        ("", "Inconsistent", errno.EINVAL),
    ]
    assert exc.extra == [
        ["user.name", "Required", errno.EINVAL],
        ["user.uid", "Out of range", errno.ERANGE],
        ["", "Inconsistent", errno.EINVAL],
    ]
    assert exc.reason == "user.name: Required; user.uid: Out of range; Inconsistent"
    assert exc.args == (exc.reason,)
    # The errno of the whole is EINVAL whatever its members say.
    assert exc.errno == errno.EINVAL
    rpc = exc.to_rpc_error()
    assert rpc["code"] == -32602
    assert rpc["data"]["extra"] == exc.extra


def test_validation_errors_from_a_list() -> None:
    exc = ValidationErrors([("a", "m1", errno.EINVAL), ("b", "m2", errno.EEXIST)])
    assert exc.extra == [["a", "m1", errno.EINVAL], ["b", "m2", errno.EEXIST]]
    assert exc.reason == "a: m1; b: m2"


def test_validation_error_helper() -> None:
    exc = validation_error("path", "Does not exist", errno.ENOENT)
    assert isinstance(exc, ValidationErrors)
    assert exc.extra == [["path", "Does not exist", errno.ENOENT]]
    assert exc.to_rpc_error()["data"]["error"] == errno.EINVAL


def test_an_empty_reason_still_says_something() -> None:
    data = CallError("").error_data()
    assert data["reason"] == "EFAULT: no reason given"
    assert str(CallError("", 2)) == "[ENOENT] ENOENT: no reason given"


# -- error_object (rpc/errors.py: what any call that raised answers) ---------------------


def test_error_object_of_a_middleware_error_is_its_own() -> None:
    exc = NotFound("no such pool")
    assert error_object(exc, "pool.get", with_trace=False) == exc.to_rpc_error()


def test_error_object_wraps_an_unexpected_exception(caplog: pytest.LogCaptureFixture) -> None:
    error = error_object(KeyError("tank"), "pool.get", with_trace=False)
    assert error["code"] == -32001
    assert error["data"]["reason"] == "KeyError: 'tank'"
    assert error["data"]["errname"] == "EFAULT"
    assert error["data"]["trace"] is None
    # Logged once, with the method's name, for the operator.
    assert any("pool.get" in r.getMessage() for r in caplog.records)
    assert error_object(KeyError(), "x.y", False)["data"]["reason"] == "KeyError"


def test_error_object_has_a_trace_only_when_asked() -> None:
    try:
        raise CallError("disk full", errno.ENOSPC)
    except CallError as e:
        raised = e
    error = error_object(raised, "x.y", with_trace=True)
    trace = error["data"]["trace"]
    assert trace["class"] == "CallError"
    assert "disk full" in trace["formatted"] and "Traceback" in trace["formatted"]
    json.dumps(error)
