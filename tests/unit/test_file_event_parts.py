"""filesystem.files without a server: what a settled change publishes, the API's own writes
(claims and echoes) with an injected clock, the watchdog events' meaning, and a root that
cannot be watched (a fake observer stands for the kernel's inotify limits)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from watchdog.events import (
    DirCreatedEvent,
    DirModifiedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
)
from watchdog.observers.api import BaseObserver

from middlewared.events.bus import Event
from middlewared_plugins.fileechoes import Claims, Echoes, signature
from middlewared_plugins.fileevents import SETTINGS_DEFAULTS, FileEvents
from middlewared_plugins.fswatch import Watcher, changes, outermost
from middlewared_plugins.settle import Change


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class App:
    def __init__(self, settle: float = 0.5) -> None:
        self.events: list[Event] = []
        self.settings = {**SETTINGS_DEFAULTS, "settle": settle}

    def publish(self, event: Event) -> None:
        self.events.append(event)

    def get_settings(self, namespace: str) -> dict[str, Any]:
        return dict(self.settings)


def hub() -> tuple[FileEvents, App, Clock]:
    app, clock = App(), Clock()
    events = FileEvents(app, clock)
    events.configure(app.settings)
    return events, app, clock


def write(path: str | Path, data: bytes, mode: str = "wb") -> None:
    with open(path, mode) as f:
        f.write(data)


def seen(app: App) -> list[tuple[str, Any, Any]]:
    return [(e.msg, e.id, e.cause) for e in app.events]


async def test_settled_changes_become_one_event_each(tmp_path: Path) -> None:
    events, app, clock = hub()
    new, old, temp, gone = (str(tmp_path / n) for n in ("new", "old", "temp", "gone"))
    write(new, b"12345")
    write(old, b"x")
    events.change(new, Change.CREATED)
    events.change(new, Change.MODIFIED)
    events.change(old, Change.MODIFIED)
    events.change(temp, Change.CREATED)  # created and removed again: nothing
    events.change(gone, Change.DELETED)
    assert await events.flush() is False and app.events == []
    clock.now += 0.5
    await events.flush()
    assert sorted(seen(app)) == [
        ("added", new, None),
        ("changed", old, None),
        ("removed", gone, None),
    ]
    added = next(e for e in app.events if e.id == new)
    assert added.fields == {
        "path": new,
        "type": "FILE",
        "size": 5,
        "mime": "application/octet-stream",
        "mtime": os.lstat(new).st_mtime,
        "escaped": False,
        "cause": None,
    }


async def test_an_announced_write_is_published_at_once_and_its_echo_is_not(
    tmp_path: Path,
) -> None:
    events, app, clock = hub()
    path = str(tmp_path / "report.txt")
    write(path, b"done")
    events.change(path, Change.CREATED)  # what inotify saw of the job's write
    await events.announce(path, 42, created=True)
    assert seen(app) == [("added", path, 42)]
    assert app.events[0].fields is not None and app.events[0].fields["cause"] == 42
    assert app.events[0].fields["mime"] == "text/plain"
    clock.now += 1
    await events.flush()
    assert len(app.events) == 1 and events.suppressed == 1
    # Another program changes it afterwards: that is news.
    write(path, b"!", "ab")
    events.change(path, Change.MODIFIED)
    clock.now += 1
    await events.flush()
    assert seen(app)[1:] == [("changed", path, None)]
    # The API removes it: removed at once, and the watcher's removal is its echo.
    os.unlink(path)
    await events.announce(path, 43, created=False)
    events.change(path, Change.DELETED)
    clock.now += 1
    await events.flush()
    assert seen(app)[2:] == [("removed", path, 43)]


async def test_changes_under_a_claimed_path_are_the_jobs_own(tmp_path: Path) -> None:
    events, app, clock = hub()
    dst = tmp_path / "copy"
    with events.writing(str(dst)):
        dst.mkdir()
        (dst / "a").write_text("a")
        events.change(str(dst), Change.CREATED)
        events.change(str(dst / "a"), Change.CREATED)
        clock.now += 1
        await events.flush()  # settled while the job still writes: held back
        assert app.events == []
        events.change(str(dst / "a"), Change.MODIFIED)
    clock.now += 1
    await events.flush()
    assert app.events == [] and events.suppressed >= 2
    # After the claim, a change by another program is published.
    (dst / "b").write_text("b")
    events.change(str(dst / "b"), Change.CREATED)
    clock.now += 1
    await events.flush()
    assert seen(app) == [("added", str(dst / "b"), None)]


def test_echoes_match_the_exact_state_for_a_while_and_are_bounded(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("1")
    before = signature(os.lstat(f))
    echoes = Echoes(limit=2, window=10.0)
    echoes.expect(str(f), before, 0.0)
    assert echoes.is_echo(str(f), before, 5.0)
    f.write_text("22")
    assert not echoes.is_echo(str(f), signature(os.lstat(f)), 5.0)
    assert not echoes.is_echo(str(f), before, 10.5)  # expired
    for name in ("a", "b", "c"):
        echoes.expect(name, None, 11.0)
    assert len(echoes) == 2 and not echoes.is_echo("a", None, 11.0)
    assert echoes.is_echo("c", None, 11.0)
    echoes.forget("c")
    assert not echoes.is_echo("c", None, 11.0)
    # A directory's times change with its entries: only what it is counts.
    d = tmp_path / "d"
    d.mkdir()
    sig = signature(os.lstat(d))
    (d / "x").write_text("x")
    assert signature(os.lstat(d)) == sig


def test_claims_cover_their_path_and_below_during_their_time() -> None:
    claims = Claims(window=10.0, ended_limit=2)
    claim = claims.begin("/r/dst", 1.0)
    assert claims.covers("/r/dst/a/b", 2.0, 2.0)
    assert claims.covers("/r/dst", 2.0, 2.0)
    assert not claims.covers("/r/dstx", 2.0, 2.0)
    assert not claims.covers("/r/dst/a", 0.5, 2.0)  # before the job began
    claims.end(claim, 3.0)
    assert claims.covers("/r/dst/a", 2.5, 5.0)  # a late echo of the job's write
    assert not claims.covers("/r/dst/a", 3.5, 5.0)  # after it
    assert not claims.covers("/r/dst/a", 2.5, 13.5)  # forgotten after the window
    assert len(claims) == 0
    for i in range(5):
        claims.end(claims.begin(f"/r/{i}", 20.0), 21.0)
    assert len(claims) == 2


def test_what_watchdog_events_mean() -> None:
    assert changes(FileMovedEvent("/r/.a.part", "/r/a")) == [
        ("/r/.a.part", Change.DELETED),
        ("/r/a", Change.CREATED),
    ]
    assert changes(DirCreatedEvent("/r/d")) == [("/r/d", Change.CREATED)]
    assert changes(FileDeletedEvent("/r/a")) == [("/r/a", Change.DELETED)]
    assert changes(FileModifiedEvent("/r/a")) == [("/r/a", Change.MODIFIED)]
    assert changes(FileClosedEvent("/r/a")) == [("/r/a", Change.MODIFIED)]
    assert changes(FileModifiedEvent(b"/r/caf\xe9")) == [("/r/caf\udce9", Change.MODIFIED)]
    for ignored in (
        DirModifiedEvent("/r"),
        FileOpenedEvent("/r/a"),
        FileClosedNoWriteEvent("/r/a"),
    ):
        assert changes(ignored) == []
    assert outermost([Path("/r/b"), Path("/r"), Path("/rx"), Path("/r/b/c")]) == ["/r", "/rx"]


class LimitedObserver(BaseObserver):
    """The kernel's answer when fs.inotify.max_user_watches is reached."""

    def __init__(self) -> None:
        super().__init__(emitter_class=None)  # type: ignore[arg-type]

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")


async def test_a_root_past_the_watch_limit_is_logged_once_and_the_rest_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events, app, _ = hub()
    watcher = Watcher(app, events, [tmp_path / "a", tmp_path / "b"], observer=LimitedObserver())
    with caplog.at_level(logging.WARNING, logger="middlewared_plugins.fswatch"):
        await watcher.start()
        assert watcher._starting is not None
        await watcher._starting
        watcher._fail(str(tmp_path / "a"), "again")  # said once only
    reason = "inotify watch limit reached (raise the sysctl fs.inotify.max_user_watches)"
    assert watcher.status()["failed"] == {str(tmp_path / "a"): reason, str(tmp_path / "b"): reason}
    assert watcher.status()["watching"] == []
    warnings = [r for r in caplog.records if "is not watched" in r.getMessage()]
    assert len(warnings) == 2 and "max_user_watches" in warnings[0].getMessage()
    # Announcements still work without a watch.
    (tmp_path / "x").write_text("x")
    await events.announce(str(tmp_path / "x"), 7, created=True)
    assert seen(app) == [("added", str(tmp_path / "x"), 7)]
    await watcher.stop()
