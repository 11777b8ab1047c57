"""First-class in-process consumers of the bus (triggers, notifications, hook scripts, later
the cluster relay): each has its own bounded queue and task, so a slow one never blocks
``publish`` nor the job engine.

A listener that falls behind holds at most the latest state of each object, as a
WebSocket subscriber does (an ADDED not yet handled absorbs the CHANGED that follow it;
an object added and removed before it was handled is never seen). Past ``max_pending``
distinct objects the oldest waiting event is dropped and counted; ``core.stats`` shows the
counters of every listener.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from middlewared.events.bus import Event

log = logging.getLogger(__name__)

Handler = Callable[[Event], Awaitable[None]]

DEFAULT_MAX_PENDING = 10_000


class Listener:
    def __init__(
        self,
        name: str,
        collections: Iterable[str],
        handler: Handler,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.name = name
        self.collections = tuple(collections)
        self.handler = handler
        self.max_pending = max_pending
        self._pending: OrderedDict[tuple[str, Any], Event] = OrderedDict()
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.delivered = 0
        self.coalesced = 0
        self.dropped = 0
        self.failed = 0

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, event: Event) -> None:
        """Called by the bus: O(1), never waits."""
        key = (event.collection, event.id)
        older = self._pending.get(key)
        if older is not None:
            self.coalesced += 1
            merged = event.merged_after(older)
            if merged is None:
                del self._pending[key]
                if not self._pending and not self._busy:
                    self._idle.set()
            else:
                self._pending[key] = merged  # keeps its place in the order
            return
        self._pending[key] = event
        self._idle.clear()
        if len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("listener %s is behind: %d events dropped", self.name, self.dropped)
        self._ready.set()

    def start(self) -> None:
        """Take events (again, after ``stop``); a listener already taking them goes on."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"listener-{self.name}")

    async def stop(self) -> None:
        """Stop taking events (those pending are not handled)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def drain(self) -> None:
        """Return once every event pushed so far has been handled (tests, shutdown)."""
        await self._idle.wait()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._pending:
                _, event = self._pending.popitem(last=False)
                self._busy = True
                try:
                    await self.handler(event)
                    self.delivered += 1
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.failed += 1
                    log.exception("listener %s failed on %s %s", self.name, event.msg, event.id)
                finally:
                    self._busy = False
            if not self._pending:
                self._idle.set()

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "collections": list(self.collections),
            "pending": len(self._pending),
            "delivered": self.delivered,
            "coalesced": self.coalesced,
            "dropped": self.dropped,
            "failed": self.failed,
        }
