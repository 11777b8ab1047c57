"""``midclt trigger``'s pure parts: its operands and data, and the text it prints."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

import pytest

from middlewared_client.midclt import build_parser
from middlewared_client.midclt_trigger import create_data
from middlewared_client.triggertext import (
    format_trigger,
    format_triggers_table,
    last_run_text,
    local_time,
    state_text,
)

# 2026-07-01T03:00:00Z
MS = 1_782_874_800_000


@pytest.fixture
def kolkata(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["trigger", "create", *argv])


@pytest.mark.parametrize(
    ("argv", "arguments", "method", "params"),
    [
        (["@client", "x.run"], None, "x.run", []),
        (["@client", "x.run", "[1]"], None, "x.run", [1]),
        (["@daily", "x.run", '["a", {"b": 2}]'], None, "x.run", ["a", {"b": 2}]),
        (["@daily", "between 8am and 6pm", "x.run"], "between 8am and 6pm", "x.run", []),
        (["@cron", "0 3 * * *", "x.run", " [2]"], "0 3 * * *", "x.run", [2]),
        (["@every", "1h", "x.run", "[]"], "1h", "x.run", []),
    ],
)
def test_operands_split_into_argument_method_and_params(
    argv: list[str], arguments: str | None, method: str, params: list[Any]
) -> None:
    args = parse(*argv)
    assert (args.arguments, args.method, args.params) == (arguments, method, params)


def test_create_data_puts_options_over_the_json_fields() -> None:
    args = parse(
        *("@cron", "0 3 * * *", "x.run", "[1]", "--tz", "UTC", "--name", "nightly"),
        *("--json", '{"options": {"missed": "once", "timezone": "Europe/Paris"}, "type": "@x"}'),
    )
    assert create_data(args) == {
        "type": "@cron",
        "arguments": "0 3 * * *",
        "method": "x.run",
        "params": [1],
        "description": "nightly",
        "options": {"missed": "once", "timezone": "UTC"},
    }
    args = parse("@event", "a.b", "x.run", "--pass-event", "--paused", "--debounce", "3m")
    assert create_data(args) == {
        "type": "@event",
        "arguments": "a.b",
        "method": "x.run",
        "params": [],
        "debounce": "3m",
        "pass_event": True,
        "paused": True,
    }


def record(**fields: Any) -> dict[str, Any]:
    state = {"status": None, "last_executed_job_id": None, "last_error": None}
    return {
        "id": 7,
        "type": "@cron",
        "arguments": "0 3 * * *",
        "method": "x.run",
        "params": [],
        "description": "",
        "paused": False,
        "next_run": {"$date": MS},
        "current_state": {**state, **fields.pop("current_state", {})},
        **fields,
    }


def test_times_are_local(kolkata: None) -> None:
    assert local_time({"$date": MS}) == "2026-07-01 08:30:00"
    assert local_time(None) == local_time({"$date": "soon"}) == "-"


def test_state_and_last_run() -> None:
    assert state_text(record()) == "active"
    assert state_text(record(paused=True)) == "paused"
    reason = {"last_error": "owner\ngone  away"}
    assert state_text(record(paused=True, current_state=reason)) == "paused: owner gone away"
    assert state_text(record(current_state=reason)) == "active"  # an error, not a pause
    assert last_run_text(record()) == "-"
    ran = {"status": "errored", "last_executed_job_id": 12}
    assert last_run_text(record(current_state=ran)) == "errored (job 12)"


def test_table_and_one_trigger(kolkata: None) -> None:
    rows = format_triggers_table([record(), record(id=12, paused=True, description="b  c")])
    assert rows.splitlines() == [
        "ID  NAME  TRIGGER          METHOD  NEXT RUN             LAST RUN  STATE",
        "7   -     @cron 0 3 * * *  x.run   2026-07-01 08:30:00  -         active",
        "12  b c   @cron 0 3 * * *  x.run   -                    -         paused",
    ]
    shown = format_trigger(record(type="@webhook", arguments="", auth={"kind": "github"}))
    assert "webhook:      POST /hooks/7 signed github" in shown.splitlines()
    assert "debounce" not in shown and "pass event" not in shown
