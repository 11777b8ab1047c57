"""The ``filesystem.files`` collection: a path's event, published once its writes settle (seen
by the watcher) or at once with its job as cause (the API's own writes, ``announce_written``).

Who sees the events: whoever's allow-list grants ``filesystem.files`` (``filesystem.*`` does;
administrators have it), as a subscription to the collection needs: the files in the roots
are no one's, so the events carry that grant instead of an owner, and each is checked against
the subscriber's (or a trigger owner's) rights as they are when it is published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import stat as st
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from middlewared.events.bus import ADDED, CHANGED, REMOVED, Event
from middlewared.roots import escaped, normalise

from .fileechoes import Claims, Echoes, signature
from .settle import Change, Settled, Settler

log = logging.getLogger(__name__)

COLLECTION = "filesystem.files"
SETTINGS_SCHEMA = {
    "type": "object",
    "properties": {
        "settle": {
            "type": "number",
            "minimum": 0.01,
            "maximum": 3600,
            "description": "seconds without a change before a path's filesystem.files event "
            "is published (a file being written keeps waiting); default 0.5",
        },
        "max_pending": {
            "type": "integer",
            "minimum": 1,
            "maximum": 10_000_000,
            "description": "paths waiting to settle at most; past that the oldest is dropped "
            "(counted in filesystem.watch_status, logged); default 100000",
        },
    },
    "additionalProperties": False,
}
SETTINGS_DEFAULTS: dict[str, Any] = {"settle": 0.5, "max_pending": 100_000}
# Settled paths described per round, so the loop keeps serving during a flood.
BATCH = 1_000


def file_type(mode: int) -> str:
    """FILE, DIRECTORY, SYMLINK or OTHER (a symlink is never followed)."""
    if st.S_ISLNK(mode):
        return "SYMLINK"
    if st.S_ISDIR(mode):
        return "DIRECTORY"
    if st.S_ISREG(mode):
        return "FILE"
    return "OTHER"


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def fields(path: str, s: os.stat_result, cause: int | None = None) -> dict[str, Any]:
    """An event's fields; ``cause``: the job that wrote the path (None: another program).
    The type is guessed from the name only: reading what another program is writing would
    race it, and a FIFO or a device must never be opened."""
    kind = file_type(s.st_mode)
    mime = None
    if kind == "FILE":
        mime = mimetypes.guess_type(path, strict=False)[0] or "application/octet-stream"
    return {
        "path": path,
        "type": kind,
        "size": s.st_size,
        "mime": mime,
        "mtime": s.st_mtime,
        "escaped": escaped(path),
        "cause": cause,
    }


def _describe(paths: list[str]) -> list[os.stat_result | None]:
    return [_lstat(p) for p in paths]


class FileEvents:
    """One per server: turns settled changes and the API's announcements into events."""

    def __init__(self, app: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.clock = clock
        # The watcher's threads feed changes; the event loop takes what is due.
        self.lock = threading.Lock()
        self.settler = Settler(SETTINGS_DEFAULTS["max_pending"])
        self.settle: float = SETTINGS_DEFAULTS["settle"]
        self.echoes = Echoes()
        self.claims = Claims()
        self.published = 0
        self.suppressed = 0
        self.announced = 0
        self._dropped_told = 0
        # Called (from any thread) when something starts waiting: the timer's wake-up.
        self.wake: Callable[[], None] = lambda: None

    def configure(self, settings: dict[str, Any]) -> None:
        with self.lock:
            self.settle = float(settings["settle"])
            self.settler.max_pending = int(settings["max_pending"])

    def change(self, path: str, change: Change) -> None:
        """A change the watcher saw (any thread)."""
        with self.lock:
            was_empty = self.settler.touch(path, change, self.clock())
        if was_empty:
            self.wake()

    def _report_drops(self) -> None:
        """Warn of drops past ``max_pending``: at the first, then once per thousand."""
        dropped = self.settler.dropped
        if dropped != self._dropped_told and (
            self._dropped_told == 0 or dropped // 1000 != self._dropped_told // 1000
        ):
            log.warning(
                "filesystem.files: more than %d paths waiting to settle: %d dropped so far",
                self.settler.max_pending,
                dropped,
            )
            self._dropped_told = dropped

    def next_due(self) -> float | None:
        with self.lock:
            return self.settler.next_due(self.settle)

    async def flush(self) -> bool:
        """Publish what has settled; True when more is due at once."""
        with self.lock:
            due = self.settler.due(self.clock(), self.settle, BATCH)
        self._report_drops()
        if not due:
            return False
        found = await asyncio.to_thread(_describe, [s.path for s in due])
        now = self.clock()
        for settled, s in zip(due, found, strict=True):
            self._settled(settled, s, now)
        return len(due) == BATCH

    def _own(self, settled: Settled, s: os.stat_result | None, now: float) -> bool:
        """Whether the burst is the API's own write (then it was announced already)."""
        path = settled.path
        with self.lock:
            if self.claims.covers(path, now, now) and not self.claims.covers(
                path, settled.last, now
            ):
                # Being written by a job right now: its announcement will say.
                self.settler.defer(settled, now)
                return True
            if self.claims.covers(path, settled.last, now) or self.echoes.is_echo(
                path, signature(s), now
            ):
                self.suppressed += 1
                return True
            self.echoes.forget(path)
            return False

    def _settled(self, settled: Settled, s: os.stat_result | None, now: float) -> None:
        if self._own(settled, s, now):
            return
        if s is None:
            if settled.existed:
                self._publish(Event(COLLECTION, REMOVED, settled.path, granted=COLLECTION))
            return  # created and removed within the burst: nothing happened
        msg = CHANGED if settled.existed else ADDED
        self._publish(
            Event(COLLECTION, msg, settled.path, fields(settled.path, s), granted=COLLECTION)
        )

    def _publish(self, event: Event) -> None:
        self.published += 1
        self.app.publish(event)

    async def announce(self, path: str, job_id: int | None, created: bool) -> None:
        path = normalise(path)
        s = await asyncio.to_thread(_lstat, path)
        with self.lock:
            self.echoes.expect(path, signature(s), self.clock())
        self.announced += 1
        if s is None:
            event = Event(COLLECTION, REMOVED, path, cause=job_id, granted=COLLECTION)
        else:
            msg = ADDED if created else CHANGED
            event = Event(
                COLLECTION, msg, path, fields(path, s, job_id), cause=job_id, granted=COLLECTION
            )
        self._publish(event)

    @contextlib.contextmanager
    def writing(self, path: str) -> Iterator[None]:
        path = normalise(path)
        with self.lock:
            claim = self.claims.begin(path, self.clock())
        try:
            yield
        finally:
            with self.lock:
                self.claims.end(claim, self.clock())

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "settle": self.settle,
                "pending": len(self.settler),
                "dropped": self.settler.dropped,
                "published": self.published,
                "announced": self.announced,
                "suppressed": self.suppressed,
            }


_hubs: weakref.WeakKeyDictionary[Any, FileEvents] = weakref.WeakKeyDictionary()


def hub_for(app: Any) -> FileEvents:
    """The server's ``FileEvents`` (made on first use)."""
    hub = _hubs.get(app)
    if hub is None:
        hub = _hubs[app] = FileEvents(app)
    return hub


async def announce_written(
    app: Any, path: str, job_id: int | None, *, created: bool = True
) -> None:
    """Publish the ``filesystem.files`` event of a file a job just wrote, at once, with the
    job as its ``cause`` (so a trigger never fires on what its own jobs wrote).

    Call it after the file is complete (renamed into place, metadata set): ``added`` when
    ``created``, else ``changed``; ``removed`` when the path is gone (call it after removing a
    path too). The watcher's echo of the same write is suppressed: a settled change that
    finds the path exactly as it was announced (inode, size, times) is not published again.
    Wrap long writes in ``writing(app, path)`` too, so that a change the watcher sees while
    the job writes is never taken for another program's.
    """
    await hub_for(app).announce(path, job_id, created)


def writing(app: Any, path: str) -> contextlib.AbstractContextManager[None]:
    """``with writing(app, path):`` around a job's writes to ``path`` or below it: the changes
    the watcher sees there meanwhile are the job's own and never published by the watcher
    (the job announces what it wrote with ``announce_written``)."""
    return hub_for(app).writing(path)
