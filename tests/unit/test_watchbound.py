"""The bound on watchdog's inotify reader: installed, bounded, and resting under a flood."""

from __future__ import annotations

from watchdog.observers import inotify_c

from middlewared_plugins import watchbound


def test_the_reader_queue_is_bounded_once_installed() -> None:
    watchbound.bound_watchdog()
    watchbound.bound_watchdog()  # idempotent
    assert watchbound.is_bounded()
    assert inotify_c.InotifyFD.__init__ is watchbound._bounded_init
    assert watchbound._PacedQueue().maxsize == watchbound.RAW_BUFFERS


def test_a_backlog_past_full_speed_makes_the_parser_rest(monkeypatch: object) -> None:
    q = watchbound._PacedQueue()
    slept: list[float] = []
    clock = [1000.0]
    monkeypatch.setattr(watchbound.time, "monotonic", lambda: clock[0])  # type: ignore[attr-defined]
    monkeypatch.setattr(watchbound.time, "sleep", slept.append)  # type: ignore[attr-defined]
    for _ in range(10):
        q.put(b"x")
    q.get()  # a backlog begins
    clock[0] += 0.01  # the buffer took 10 ms
    q.get()
    assert slept == []  # a burst: full speed
    clock[0] += watchbound.FULL_SPEED_SECONDS
    q.get()
    assert slept and abs(slept[-1] - min(watchbound.FULL_SPEED_SECONDS * 3, 1.0)) < 1e-9
    while not q.empty():
        q.get_nowait()
    q._rest()  # the parser asks for more and finds nothing: it has caught up
    q.put(b"y")
    slept.clear()
    clock[0] += 10
    q.get()  # a new backlog: full speed again
    assert slept == []
