"""Watching the roots with inotify (watchdog, recursively): each change under them is fed to
``FileEvents``, and what has settled is published from the event loop.

watchdog rather than watchfiles: watchfiles turns a single name that is not UTF-8 into an
error that every later read repeats (its watcher is dead from then on), where watchdog hands
such names over as ``os.fsdecode`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import mimetypes
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from watchdog.events import (
    EVENT_TYPE_ATTRIB,
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from middlewared.lograte import RateLimitedLog

from .fileevents import FileEvents, hub_for
from .settle import Change
from .tempfiles import is_temp
from .watchbound import bound_watchdog

log = logging.getLogger(__name__)
_trouble = RateLimitedLog(log)
EVENTS_LOST = "events_lost"
SETTINGS = "filesystem"

_REASONS = {
    errno.ENOSPC: "inotify watch limit reached (raise the sysctl fs.inotify.max_user_watches)",
    errno.EMFILE: "inotify instance limit reached (raise fs.inotify.max_user_instances)",
}


def _text(path: bytes | str) -> str:
    return os.fsdecode(path)


def changes(event: FileSystemEvent) -> list[tuple[str, Change]]:
    """What a watchdog event means for each path it names."""
    kind = event.event_type
    if kind == EVENT_TYPE_MOVED:
        return [(_text(event.src_path), Change.DELETED), (_text(event.dest_path), Change.CREATED)]
    if kind == EVENT_TYPE_CREATED:
        return [(_text(event.src_path), Change.CREATED)]
    if kind == EVENT_TYPE_DELETED:
        return [(_text(event.src_path), Change.DELETED)]
    if kind == EVENT_TYPE_MODIFIED and event.is_directory:
        return []  # an entry in it changed: that entry is reported itself
    if kind in (EVENT_TYPE_MODIFIED, EVENT_TYPE_CLOSED, EVENT_TYPE_ATTRIB):
        return [(_text(event.src_path), Change.MODIFIED)]
    return []  # opened, closed without writing


def outermost(roots: Sequence[Path]) -> list[str]:
    """The roots to watch: one inside another is watched through it."""
    texts = sorted({str(r) for r in roots})
    kept: list[str] = []
    for root in texts:
        if not any(root == k or root.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(root)
    return kept


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.watcher.seen(event)


class Watcher:
    """One inotify observer over every root, and the task that publishes what settled."""

    def __init__(
        self, app: Any, hub: FileEvents, roots: Sequence[Path], observer: BaseObserver | None = None
    ) -> None:
        self.app = app
        self.hub = hub
        self.roots = outermost(roots)
        self.watching: list[str] = []
        # Roots not watched, with the reason (logged once each).
        self.failed: dict[str, str] = {}
        self.lost = 0
        self._observer = observer if observer is not None else Observer()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _in_loop(self, func: Callable[..., None], *args: Any) -> None:
        """Run ``func`` in the event loop (from watchdog's threads)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(func, *args)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.hub.wake = lambda: self._in_loop(self._wake.set)
        self._task = asyncio.create_task(self._run(), name="filesystem-watch")
        # Registering a watch per directory takes a while on a large tree: serve meanwhile.
        self._starting = asyncio.create_task(self._watch_all(), name="filesystem-watch-start")

    async def _watch_all(self) -> None:
        # Logged from the event loop: a line from another thread could land inside the
        # server's "listening on" line, which scripts read.
        try:
            await asyncio.to_thread(self._observer.start)
        except Exception:
            log.exception("filesystem.files: the inotify observer did not start")
            return
        handler = _Handler(self)
        for root in self.roots:
            if self._stopping.is_set():
                return
            try:
                await asyncio.to_thread(self._observer.schedule, handler, root, recursive=True)
            except OSError as e:
                self._fail(root, _REASONS.get(e.errno or 0) or e.strerror or str(e))
            except Exception as e:
                self._fail(root, repr(e))
            else:
                self.watching.append(root)
                log.info("watching %s for filesystem.files", root)

    def _fail(self, root: str, reason: str) -> None:
        if root in self.failed:
            return
        self.failed[root] = reason
        if root in self.watching:
            self.watching.remove(root)
        log.warning("%s is not watched (no filesystem.files events from it): %s", root, reason)

    def seen(self, event: FileSystemEvent) -> None:
        """Called in watchdog's thread for every event."""
        if event.event_type == EVENTS_LOST:
            self.lost += 1
            message = "inotify queue overflowed under %s: changes were lost"
            self._in_loop(_trouble.warning, message, _text(event.src_path))
            return
        for path, change in changes(event):
            if path in self.roots:
                if change is Change.DELETED and not os.path.isdir(path):
                    self._in_loop(self._fail, path, "the root disappeared")
                continue
            if is_temp(os.path.basename(path)):
                continue  # the API's upload in progress: its result is announced
            self.hub.change(path, change)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                self.hub.configure(self.app.get_settings(SETTINGS))
                if await self.hub.flush():
                    continue
            except Exception:
                _trouble.error("filesystem.files: publishing settled changes failed", exc_info=True)
            due = self.hub.next_due()
            timeout = None if due is None else max(0.0, due - self.hub.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def stop(self) -> None:
        self.hub.wake = lambda: None
        self._stopping.set()
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._observer.is_alive():
            self._observer.stop()
            await asyncio.to_thread(self._observer.join)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return {
            "watching": list(self.watching),
            "failed": dict(self.failed),
            "lost": self.lost,
            **self.hub.stats(),
        }


_watchers: weakref.WeakKeyDictionary[Any, Watcher] = weakref.WeakKeyDictionary()


def status(app: Any) -> dict[str, Any]:
    watcher = _watchers.get(app)
    if watcher is None:
        return {"watching": [], "failed": {}, "lost": 0, **hub_for(app).stats()}
    return watcher.status()


@contextlib.asynccontextmanager
async def watching(app: Any) -> AsyncIterator[None]:
    """Watch the server's roots while the server runs."""
    await asyncio.to_thread(mimetypes.init)  # once, before threads guess types
    bound_watchdog()
    watcher = Watcher(app, hub_for(app), app.config.roots)
    _watchers[app] = watcher
    await watcher.start()
    try:
        yield
    finally:
        await watcher.stop()
        _watchers.pop(app, None)
