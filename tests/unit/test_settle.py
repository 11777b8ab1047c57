"""Settling of file changes with an injected clock: one outcome per path once it is quiet."""

from __future__ import annotations

from middlewared_plugins.settle import Change, Settled, Settler

C, M, D = Change.CREATED, Change.MODIFIED, Change.DELETED


def paths(found: list[Settled]) -> list[str]:
    return [s.path for s in found]


def test_a_path_written_in_chunks_settles_once_after_its_last_change() -> None:
    s = Settler(100)
    assert s.touch("/r/a", C, 0.0) is True  # the timer must wake
    for t in (0.1, 0.2, 0.3, 0.4):
        assert s.touch("/r/a", M, t) is False
        assert s.due(t, 0.5) == []
    assert s.next_due(0.5) is not None
    assert s.due(0.89, 0.5) == []
    [done] = s.due(0.9, 0.5)
    assert done == Settled("/r/a", existed=False, first=0.0, last=0.4)
    assert len(s) == 0 and s.due(100.0, 0.5) == [] and s.next_due(0.5) is None


def test_what_the_path_was_before_the_burst_comes_from_its_first_change() -> None:
    s = Settler(100)
    s.touch("/r/new", C, 0.0)
    s.touch("/r/new", D, 0.1)  # created then removed: the caller publishes nothing
    s.touch("/r/old", M, 0.0)
    s.touch("/r/gone", D, 0.0)
    s.touch("/r/gone", C, 0.1)  # removed then created again: a change
    found = {x.path: x.existed for x in s.due(1.0, 0.5)}
    assert found == {"/r/new": False, "/r/old": True, "/r/gone": True}


def test_paths_come_out_in_the_order_they_went_quiet() -> None:
    s = Settler(100)
    s.touch("/a", C, 0.0)
    s.touch("/b", C, 0.1)
    s.touch("/a", M, 0.2)
    assert paths(s.due(0.65, 0.5)) == ["/b"]
    assert paths(s.due(0.7, 0.5)) == ["/a"]


def test_a_path_that_keeps_changing_keeps_waiting() -> None:
    s = Settler(100)
    t = 0.0
    s.touch("/log", C, t)
    for _ in range(1000):
        t += 0.4
        assert s.due(t, 0.5) == []
        s.touch("/log", M, t)
    assert paths(s.due(t + 0.5, 0.5)) == ["/log"]


def test_a_new_settle_time_applies_to_the_paths_waiting() -> None:
    s = Settler(100)
    s.touch("/a", C, 0.0)
    assert s.due(1.0, 5.0) == []
    assert s.next_due(5.0) == 5.0
    assert paths(s.due(1.0, 0.5)) == ["/a"]


def test_at_most_max_pending_paths_wait_the_oldest_dropped_and_counted() -> None:
    s = Settler(3)
    for i in range(10):
        s.touch(f"/f{i}", C, i * 0.001)
    assert len(s) == 3 and s.dropped == 7
    assert paths(s.due(10.0, 0.5)) == ["/f7", "/f8", "/f9"]
    # A flood of new names keeps the timer heap bounded too.
    for i in range(100_000):
        s.touch(f"/g{i}", C, 20.0)
    assert len(s) == 3 and s.dropped == 7 + 99_997
    assert len(s._heap) <= 2 * 3 + 1
    assert paths(s.due(30.0, 0.5)) == ["/g99997", "/g99998", "/g99999"]


def test_a_dropped_path_changed_again_waits_afresh() -> None:
    s = Settler(1)
    s.touch("/a", C, 0.0)
    s.touch("/b", C, 0.1)  # drops /a
    s.touch("/a", M, 0.2)  # drops /b; /a is back, as a change
    assert s.due(10.0, 0.5) == [Settled("/a", True, 0.2, 0.2)]


def test_due_hands_out_at_most_limit_at_a_time() -> None:
    s = Settler(100)
    for i in range(10):
        s.touch(f"/f{i}", C, 0.0)
    assert len(s.due(1.0, 0.5, limit=4)) == 4
    assert len(s.due(1.0, 0.5, limit=4)) == 4
    assert len(s.due(1.0, 0.5, limit=4)) == 2


def test_a_deferred_path_waits_again_and_keeps_what_it_was() -> None:
    s = Settler(100)
    s.touch("/a", M, 0.0)
    [done] = s.due(1.0, 0.5)
    s.defer(done, 1.0)
    assert s.due(1.4, 0.5) == []
    assert s.due(1.5, 0.5) == [Settled("/a", True, 0.0, 1.0)]
    # Deferred while a new burst already began: the new one keeps the old one's past.
    s.touch("/b", C, 2.0)
    [b] = s.due(3.0, 0.5)
    s.touch("/b", M, 3.1)
    s.defer(b, 3.2)
    assert s.due(4.0, 0.5) == [Settled("/b", False, 3.1, 3.2)]
