"""Failed-login throttling per client address, in a sliding window."""

from __future__ import annotations

import time
from collections import deque

from middlewared.config import LoginThrottle


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
        if not q:
            q = self._failures[address] = deque()
        q.append(now)
        # Bound memory: keep at most what decides the answer.
        while len(q) > self.policy.max_failures:
            q.popleft()
