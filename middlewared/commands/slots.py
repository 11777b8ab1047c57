"""Room to run: at most ``--max-running-commands`` runs at once across all commands, and at
most a command's own ``max_concurrency`` of each. Runs wait in their job, which says so."""

from __future__ import annotations

import asyncio


class Slots:
    def __init__(self, max_running: int) -> None:
        self.max_running = max_running
        self.running = 0
        self._by_name: dict[str, int] = {}
        self._waiters: list[asyncio.Future[None]] = []

    def free(self, name: str, limit: int) -> bool:
        return self.running < self.max_running and self._by_name.get(name, 0) < limit

    async def acquire(self, name: str, limit: int) -> None:
        while not self.free(name, limit):
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.running += 1
        self._by_name[name] = self._by_name.get(name, 0) + 1

    def release(self, name: str) -> None:
        self.running -= 1
        left = self._by_name.pop(name, 1) - 1
        if left:
            self._by_name[name] = left
        self._wake()

    def resize(self, max_running: int) -> None:
        """A new bound (karajo's max_job_running reloaded): runs waiting may start now."""
        self.max_running = max_running
        self._wake()

    def _wake(self) -> None:
        # Each waiter checks again whether its turn came (in the order they came).
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def running_of(self, name: str) -> int:
        return self._by_name.get(name, 0)
