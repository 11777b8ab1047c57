"""Failed-login throttling per client address, in a sliding window."""

from __future__ import annotations

import contextlib
import time
from collections import deque

from middlewared.config import LoginThrottle
from middlewared.errors import Busy


class LoginThrottler:
    """Past ``max_failures`` failures in ``window_seconds``, an address is refused until the
    oldest failure leaves the window. Successful logins are never counted."""

    def __init__(self, policy: LoginThrottle) -> None:
        self.policy = policy
        self._failures: dict[str, deque[float]] = {}

    def _prune(self, address: str, now: float) -> deque[float]:
        q = self._failures.get(address)
        if q is None:
            return deque()
        while q and now - q[0] >= self.policy.window_seconds:
            q.popleft()
        if not q:
            del self._failures[address]
        return q

    def blocked(self, address: str) -> bool:
        return len(self._prune(address, time.monotonic())) >= self.policy.max_failures

    def retry_after(self, address: str) -> float:
        q = self._prune(address, time.monotonic())
        return max(0.0, self.policy.window_seconds - (time.monotonic() - q[0])) if q else 0.0

    def failed(self, address: str) -> None:
        now = time.monotonic()
        q = self._prune(address, now)
        # Most recent failure last: the dict is ordered by each address's newest failure.
        self._failures.pop(address, None)
        self._failures[address] = q
        q.append(now)
        # Bound memory: keep at most what decides the answer ...
        while len(q) > self.policy.max_failures:
            q.popleft()
        # ... and forget addresses whose newest failure has left the window.
        for other in list(self._failures):
            newest = self._failures[other][-1]
            if now - newest < self.policy.window_seconds:
                break
            del self._failures[other]

    def begin(self, address: str) -> float:
        """A login attempt starts: refused (EBUSY) when the address failed too often, else
        counted as a failure at once, before any password is checked, so that attempts made
        concurrently cannot all be checked. ``succeeded`` takes the count back."""
        if self.blocked(address):
            wait = self.retry_after(address)
            raise Busy(f"Too many failed logins from this address; retry in {wait:.0f} seconds")
        self.failed(address)
        return self._failures[address][-1]

    def succeeded(self, address: str, ticket: float) -> None:
        """The attempt begun with ``ticket`` logged in: it is not a failure."""
        q = self._failures.get(address)
        if q is not None:
            with contextlib.suppress(ValueError):
                q.remove(ticket)
            if not q:
                del self._failures[address]
