"""Log lines that a client could repeat at will on a hot path: at most one per interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

# A line every this many seconds at most, per call site.
INTERVAL_SECONDS = 10.0


class RateLimitedLog:
    """One per call site. Lines within the interval after a logged one are only counted; the
    next line logged says how many were held back."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._quiet_until = float("-inf")
        self._held = 0

    def warning(self, msg: str, *args: Any, exc_info: bool = False) -> None:
        self.log(logging.WARNING, msg, *args, exc_info=exc_info)

    def error(self, msg: str, *args: Any, exc_info: bool = False) -> None:
        self.log(logging.ERROR, msg, *args, exc_info=exc_info)

    def log(self, level: int, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = self._clock()
        if now < self._quiet_until:
            self._held += 1
            return
        self._quiet_until = now + self.interval
        if self._held:
            msg += " (and %d more like it since the last one logged)"
            args = (*args, self._held)
            self._held = 0
        self.logger.log(level, msg, *args, exc_info=exc_info)
