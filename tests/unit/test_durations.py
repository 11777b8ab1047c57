"""Durations as cozy writes them: the accepted forms, and a precise refusal of everything else."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from middlewared.errors import ValidationErrors
from middlewared.triggers.durations import (
    MAX_DURATION,
    parse_debounce,
    parse_duration,
    show_duration,
)
from middlewared.triggers.karajo import parse_interval


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10s", timedelta(seconds=10)),
        ("3m", timedelta(minutes=3)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("30m10s", timedelta(minutes=30, seconds=10)),
        ("1.5h", timedelta(minutes=90)),
        (".5m", timedelta(seconds=30)),
        ("2.s", timedelta(seconds=2)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("1m1m", timedelta(minutes=2)),  # Go's ParseDuration adds repeated units too
        ("  90s ", timedelta(seconds=90)),
        ("0.000001s", timedelta(microseconds=1)),
        ("36500d", MAX_DURATION),
    ],
)
def test_accepted(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty duration"),
        ("   ", "empty duration"),
        ("0s", "must be more than zero"),
        ("0", "missing unit after 0"),
        ("0.0000001s", "must be more than zero"),
        ("-5m", "a duration has no sign"),
        ("+5m", "a duration has no sign"),
        ("10", "missing unit after 10"),
        ("5 m", "missing unit after 5"),
        ("5x", "unknown unit 'x'"),
        ("300ms", "unknown unit 'ms'"),
        ("1w", "unknown unit 'w'"),
        ("1H", "unknown unit 'H'"),
        ("h", "is not a duration"),
        ("1h30", "missing unit after 30"),
        ("36501d", "too long: at most 36500d"),
        ("99999999999999999999999999999d", "too long"),
        ("9" * 65 + "s", "longer than 64 characters"),
        ("1e3s", "unknown unit 'e'"),
    ],
)
def test_refused(text: str, message: str) -> None:
    with pytest.raises(ValidationErrors) as e:
        parse_duration(text)
    [(field, reason, _)] = e.value.errors
    assert field == "arguments"
    assert message in reason


@pytest.mark.parametrize("value", [None, 10, 1.5, ["1m"], {"m": 1}])
def test_not_a_string(value: object) -> None:
    with pytest.raises(ValidationErrors, match="a duration is a string"):
        parse_duration(value)


def test_field_and_minimum() -> None:
    with pytest.raises(ValidationErrors) as e:
        parse_duration("30s", field="options.x", minimum=timedelta(minutes=1))
    assert e.value.errors == [("options.x", "'30s' is too short: at least 1m", 22)]


def test_debounce() -> None:
    assert parse_debounce(None) is None
    assert parse_debounce("") is None
    assert parse_debounce("3m") == timedelta(minutes=3)
    with pytest.raises(ValidationErrors) as e:
        parse_debounce("0.5s")
    assert e.value.errors[0][:2] == ("debounce", "'0.5s' is too short: at least 1s")
    with pytest.raises(ValidationErrors) as e:
        parse_debounce("soon")
    assert e.value.errors[0][0] == "debounce"


def test_karajo_interval_minimum() -> None:
    assert parse_interval("1m") == timedelta(minutes=1)
    assert parse_interval("5m30s") == timedelta(minutes=5, seconds=30)
    with pytest.raises(ValidationErrors, match="too short: at least 1m"):
        parse_interval("59s")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=1, seconds=1), "1d1s"),
        (timedelta(0), "0s"),
    ],
)
def test_show(value: timedelta, text: str) -> None:
    assert show_duration(value) == text


@given(st.integers(min_value=1, max_value=int(MAX_DURATION.total_seconds())))
def test_show_parse_round_trip(seconds: int) -> None:
    value = timedelta(seconds=seconds)
    assert parse_duration(show_duration(value)) == value
