"""File descriptors: how many are open against RLIMIT_NOFILE, and accept errors logged at most
once an interval."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Where the open descriptors of this process are listed (Linux, then the BSDs and macOS).
_FD_DIRS = ("/proc/self/fd", "/dev/fd")
# Listing costs about 0.25 us per open descriptor: between listings the count follows the
# connections opened and closed, and is listed again this often (more often near the line).
RECOUNT_SECONDS = 0.5
RECOUNT_NEAR_LINE_SECONDS = 0.05
# Errors that say the process (or system) ran out of something, not that a client misbehaved.
RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
REPORT_INTERVAL_SECONDS = 60.0


def _soft_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not on this platform: nothing to keep in reserve
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def count_open() -> int | None:
    """Open descriptors of this process, or None where the system does not list them."""
    for path in _FD_DIRS:
        try:
            # The listing's own descriptor is in it.
            return len(os.listdir(path)) - 1
        except FileNotFoundError:
            continue
        except OSError as e:
            if e.errno in RESOURCE_ERRNOS:
                # No descriptor left even to list them: as many as allowed are open.
                return _soft_limit()
            raise
    return None


class FdBudget:
    """New connections are admitted while ``reserve`` descriptors would remain for the work of
    those logged in (job logs, files, the store)."""

    def __init__(self, reserve: int) -> None:
        self.reserve = reserve
        # No reserve: connections are accepted until the system refuses them (EMFILE).
        self.limit = _soft_limit() if reserve > 0 else None
        counted = count_open()
        self._open = counted or 0
        self._counted_at = time.monotonic()
        if self.limit is not None and counted is None:
            log.warning("cannot count open file descriptors here: --fd-reserve is not enforced")
            self.limit = None

    def opened(self) -> None:
        self._open += 1

    def closed(self) -> None:
        self._open -= 1

    def room(self) -> bool:
        """True while the open descriptors (this connection's included) leave the reserve."""
        if self.limit is None:
            return True
        now = time.monotonic()
        age = now - self._counted_at
        if age >= RECOUNT_SECONDS or (not self._fits() and age >= RECOUNT_NEAR_LINE_SECONDS):
            self._recount(now)
        return self._fits()

    def _fits(self) -> bool:
        return self.limit is None or self._open + self.reserve <= self.limit

    def _recount(self, now: float) -> None:
        self.limit = _soft_limit()  # it can be changed while we run (prlimit)
        self._open = count_open() or self._open
        self._counted_at = now

    @property
    def open(self) -> int:
        return self._open


class Recurring:
    """A warning for a condition that may recur many times a second: logged when first seen,
    then at most once an interval with how many times it recurred meanwhile."""

    def __init__(
        self, interval: float = REPORT_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._since: dict[str, int] = {}

    def warn(self, key: str, message: str, *args: Any) -> bool:
        """Log now unless ``key`` was logged less than an interval ago; True if logged."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._since[key] = self._since.get(key, 0) + 1
            return False
        self._last[key] = now
        again = self._since.pop(key, 0)
        suffix = f" ({again} more times in the last {now - last:.0f} s)" if last and again else ""
        log.warning(message + "%s", *args, suffix)
        return True


def throttle_accept_errors(loop: asyncio.AbstractEventLoop, recurring: Recurring) -> None:
    """asyncio reports each failed accept (EMFILE ...) once a second while it lasts: log them
    at most once an interval instead; anything else goes to the handler there was."""
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if (
            isinstance(exc, OSError)
            and exc.errno in RESOURCE_ERRNOS
            and "accept" in str(context.get("message", ""))
        ):
            recurring.warn("accept", "cannot accept connections: %s", exc)
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
