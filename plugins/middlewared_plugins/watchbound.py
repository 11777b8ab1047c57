"""Bounds on what watchdog's inotify reader holds in memory and the CPU its parser takes.

watchdog 7 reads the inotify descriptor as fast as it can into an unbounded queue of raw
buffers that a Python thread then parses: a process that changes files in a loop (a local
process racing the server inside a root) made the server grow by ~17 MiB a second. With the
queue bounded, the reader waits for the parser; the kernel's own inotify queue then fills and
overflows, which watchdog reports as lost events (``filesystem.watch_status`` counts them):
memory stays flat whatever the flood. And once a backlog has lasted a few seconds (a flood,
not a burst), the thread that parses those buffers takes at most a quarter of the time (it
rests three times as long as each buffer took), so that a flood cannot starve the event loop
of the GIL: what it cannot parse overflows the kernel's queue and is counted as lost. The
only code that touches watchdog's internals; ``tests/unit/test_watchbound.py`` fails by name
if they move.
"""

from __future__ import annotations

import queue
import time
from typing import Any

from watchdog.observers import inotify_c

# Raw buffers (up to 64 KiB each with coalescing) waiting for the parser, at most (16 MiB).
RAW_BUFFERS = 256
# A backlog the parser may work through at full speed (a burst: 10,000 new files); past it
# (a flood that does not stop), it rests this many times as long as each buffer took.
FULL_SPEED_SECONDS = 5.0
REST = 3.0


class _PacedQueue(queue.Queue[bytes]):
    """Bounded; once a backlog has lasted FULL_SPEED_SECONDS, each take waits until the
    parser has rested after the last one."""

    def __init__(self) -> None:
        super().__init__(maxsize=RAW_BUFFERS)
        self._handed = 0.0
        self._behind_since: float | None = None

    def _rest(self) -> None:
        now = time.monotonic()
        if self.empty():
            self._behind_since = None  # caught up
            return
        if self._behind_since is None:
            self._behind_since = now
        if self._handed and now - self._behind_since > FULL_SPEED_SECONDS:
            time.sleep(min((now - self._handed) * REST, 1.0))

    def get(self, block: bool = True, timeout: float | None = None) -> bytes:
        self._rest()
        item = super().get(block, timeout)
        self._handed = time.monotonic()
        return item

    def get_nowait(self) -> bytes:
        self._rest()
        item = super().get_nowait()
        self._handed = time.monotonic()
        return item


_original_init = inotify_c.InotifyFD.__init__


def _bounded_init(self: Any, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    if not hasattr(self, "_raw_queue"):
        raise RuntimeError("watchdog changed: InotifyFD has no _raw_queue to bound")
    self._raw_queue = _PacedQueue()


def bound_watchdog() -> None:
    """Install the bound (once; idempotent)."""
    if inotify_c.InotifyFD.__init__ is not _bounded_init:
        inotify_c.InotifyFD.__init__ = _bounded_init  # type: ignore[method-assign]


def is_bounded() -> bool:
    return inotify_c.InotifyFD.__init__ is _bounded_init
