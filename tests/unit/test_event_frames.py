"""An event's frame embeds the fields' JSON when the publisher has it, and reads the same."""

from __future__ import annotations

import json
from typing import Any

import pytest

from middlewared import jsonc
from middlewared.events.bus import ADDED, CHANGED, REMOVED, Event

ALICE = 2  # events carry their owner's user id
RECORD: dict[str, Any] = {"id": 7, "state": "FAILED", "exception": "Traceback: secret", "n": 2**70}


def frame(event: Event, admin: bool) -> Any:
    text = event.frame(admin)
    assert text is not None
    return json.loads(text)


@pytest.mark.parametrize("msg", [ADDED, CHANGED])
@pytest.mark.parametrize("admin", [True, False])
def test_embedded_fields_read_as_encoded_ones(msg: str, admin: bool) -> None:
    shown = {**RECORD, "exception": None}
    admin_only = {"exception": RECORD["exception"]}
    encoded = Event("jobs", msg, 7, shown, ALICE, admin_only)
    embedded = Event("jobs", msg, 7, shown, ALICE, admin_only, jsonc.dumps(RECORD))
    assert frame(embedded, admin) == frame(encoded, admin)
    assert frame(embedded, admin)["params"]["fields"]["exception"] == (
        RECORD["exception"] if admin else None
    )


def test_without_admin_fields_everyone_gets_the_embedded_json() -> None:
    record = {"id": 8, "state": "SUCCESS", "exception": None}
    event = Event("jobs", CHANGED, 8, record, None, None, jsonc.dumps(record))
    assert event.frame(True) == event.frame(False)
    assert frame(event, False) == {
        "jsonrpc": "2.0",
        "method": "collection_update",
        "params": {"msg": CHANGED, "collection": "jobs", "id": 8, "fields": record},
    }


def test_a_merged_event_keeps_who_may_see_it() -> None:
    """A reader behind gets ADDED with the latest fields: still only for those who may
    see the job (its owner, its method)."""
    added = Event("jobs", ADDED, 9, {"v": 1}, ALICE, method="t.run")
    changed = Event("jobs", CHANGED, 9, {"v": 2}, ALICE, method="t.run")
    merged = changed.merged_after(added)
    assert merged is not None
    assert (merged.msg, merged.fields, merged.owner, merged.method, merged.everyone) == (
        ADDED,
        {"v": 2},
        ALICE,
        "t.run",
        False,
    )
    assert Event("jobs", REMOVED, 9).merged_after(added) is None


def test_an_event_with_no_json_form_has_no_frame_and_lone_surrogates_are_escaped() -> None:
    assert Event("jobs", CHANGED, 9, {"extra": {1, 2}}).frame(False) is None
    text = Event("jobs", CHANGED, 9, {"name": "caf\udce9"}).frame(False)
    assert text is not None and text.isascii()
    assert json.loads(text)["params"]["fields"]["name"] == "caf\udce9"
