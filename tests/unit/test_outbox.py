"""The outbox: replies in order, events coalesced to each object's latest state, bounded."""

from __future__ import annotations

import asyncio
from typing import Any

from middlewared.events.bus import ADDED, CHANGED, REMOVED, Event
from middlewared.ws.outbox import Outbox, OutItem

JOBS = "core.get_jobs"


def event(msg: str, obj_id: Any, version: int = 0, collection: str = JOBS) -> Event:
    fields = None if msg == REMOVED else {"id": obj_id, "version": version}
    return Event(collection, msg, obj_id, fields)


def shape(items: list[OutItem]) -> list[Any]:
    """Frames as themselves, events as (msg, id, version)."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            out.append(item)
        else:
            version = None if item.fields is None else item.fields["version"]
            out.append((item.msg, item.id, version))
    return out


def test_replies_keep_their_order() -> None:
    box = Outbox()
    frames = [f'{{"id": {i}}}' for i in range(50)]
    for frame in frames:
        box.put_frame(frame)
    assert len(box) == 50
    assert box.pop_all() == frames
    assert len(box) == 0
    assert box.pop_all() == []


def test_identical_replies_are_not_merged() -> None:
    box = Outbox()
    box.put_frame("same")
    box.put_frame("same")
    assert box.pop_all() == ["same", "same"]


def test_frames_and_events_interleave_in_arrival_order() -> None:
    box = Outbox()
    box.put_frame("a")
    box.put_event(event(CHANGED, 1))
    box.put_frame("b")
    box.put_event(event(CHANGED, 2))
    assert shape(box.pop_all()) == ["a", (CHANGED, 1, 0), "b", (CHANGED, 2, 0)]


def test_changes_of_one_object_coalesce_to_the_latest_in_the_first_slot() -> None:
    box = Outbox()
    box.put_event(event(CHANGED, 1, 0))
    box.put_frame("reply")
    box.put_event(event(CHANGED, 1, 1))
    box.put_event(event(CHANGED, 1, 2))
    # The latest state takes the first one's place: it goes out before the later reply.
    assert shape(box.pop_all()) == [(CHANGED, 1, 2), "reply"]


def test_objects_are_told_apart_by_collection_and_id() -> None:
    box = Outbox()
    box.put_event(event(CHANGED, 1, 0, "a"))
    box.put_event(event(CHANGED, 1, 0, "b"))
    box.put_event(event(CHANGED, 2, 0, "a"))
    box.put_event(event(CHANGED, 1, 1, "a"))
    items = box.pop_all()
    assert [(e.collection, e.id) for e in items if isinstance(e, Event)] == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
    ]
    assert shape(items)[0] == (CHANGED, 1, 1)


def test_added_keeps_its_own_slot_before_the_changes_that_follow() -> None:
    box = Outbox()
    box.put_event(event(ADDED, 7, 0))
    box.put_event(event(CHANGED, 7, 1))
    box.put_event(event(CHANGED, 7, 2))
    box.put_event(event(CHANGED, 7, 3))
    assert shape(box.pop_all()) == [(ADDED, 7, 0), (CHANGED, 7, 3)]


def test_added_after_the_reader_took_it_is_not_merged_again() -> None:
    box = Outbox()
    box.put_event(event(ADDED, 7, 0))
    assert shape(box.pop_all()) == [(ADDED, 7, 0)]
    box.put_event(event(CHANGED, 7, 1))
    box.put_event(event(CHANGED, 7, 2))
    assert shape(box.pop_all()) == [(CHANGED, 7, 2)]


def test_removed_before_seen_drops_added_and_changed() -> None:
    box = Outbox()
    box.put_frame("before")
    box.put_event(event(ADDED, 3, 0))
    box.put_event(event(CHANGED, 3, 1))
    box.put_event(event(REMOVED, 3))
    box.put_frame("after")
    assert shape(box.pop_all()) == ["before", "after"]


def test_removed_right_after_added_drops_both() -> None:
    box = Outbox()
    box.put_event(event(ADDED, 3, 0))
    box.put_event(event(REMOVED, 3))
    assert box.pop_all() == []
    assert len(box) == 0


def test_removed_of_an_object_already_seen_replaces_its_pending_change() -> None:
    box = Outbox()
    box.put_event(event(ADDED, 3, 0))
    box.pop_all()
    box.put_event(event(CHANGED, 3, 1))
    box.put_event(event(REMOVED, 3))
    assert shape(box.pop_all()) == [(REMOVED, 3, None)]


def test_removed_of_one_object_leaves_the_others() -> None:
    box = Outbox()
    box.put_event(event(ADDED, 1, 0))
    box.put_event(event(ADDED, 2, 0))
    box.put_event(event(REMOVED, 1))
    assert shape(box.pop_all()) == [(ADDED, 2, 0)]


def test_size_is_bounded_by_objects_not_updates() -> None:
    objects, updates = 200, 50
    box = Outbox()
    for version in range(updates):
        for obj in range(objects):
            box.put_event(event(ADDED if version == 0 else CHANGED, obj, version))
        # Never more than two entries per object (its ADDED and its latest CHANGED).
        assert len(box) <= 2 * objects
    items = shape(box.pop_all())
    assert len(items) == 2 * objects
    latest = {i[1]: i[2] for i in items if i[0] == CHANGED}
    assert latest == dict.fromkeys(range(objects), updates - 1)


def test_size_without_added_is_one_per_object() -> None:
    box = Outbox()
    for version in range(30):
        for obj in range(100):
            box.put_event(event(CHANGED, obj, version))
    assert len(box) == 100


async def test_wait_returns_once_something_is_put() -> None:
    box = Outbox()
    waiter = asyncio.create_task(box.wait())
    box.put_event(event(CHANGED, 1))
    await waiter
    assert len(box.pop_all()) == 1
    waiter = asyncio.create_task(box.wait())
    box.put_frame("x")
    await waiter


async def test_close_releases_a_waiter_and_drops_what_waits() -> None:
    box = Outbox()
    box.put_frame("x")
    box.close()
    await box.wait()
    assert box.pop_all() == []
    box.put_frame("y")
    box.put_event(event(CHANGED, 1))
    assert len(box) == 0


async def test_wait_room_blocks_until_the_writer_takes_the_replies() -> None:
    box = Outbox()
    await box.wait_room(2)  # room at once
    box.put_frame("a")
    box.put_frame("b")
    waiter = asyncio.create_task(box.wait_room(2))
    await asyncio.sleep(0)
    assert not waiter.done()
    box.put_event(event(CHANGED, 1))  # events do not count against replies
    await asyncio.sleep(0)
    assert not waiter.done()
    assert len(box.pop_all()) == 3
    await waiter
    box.put_frame("c")
    box.put_frame("d")
    waiter = asyncio.create_task(box.wait_room(2))
    await asyncio.sleep(0)
    box.close()
    await waiter
