"""A connection's outgoing frames: replies in order, events coalesced to the latest state."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from middlewared.events.bus import ADDED, Event

OutItem = str | Event


class Outbox:
    """Frames wait here until the writer sends them.

    An event for an object that already has one waiting replaces it in place (an ADDED
    keeps its own slot, so a reader always sees ADDED before the CHANGED that follows),
    so a slow reader holds at most two entries per object, never a backlog. Replies do not
    coalesce: ``frames`` counts them, so that the connection can stop reading requests
    while too many wait (``wait_room``).
    """

    def __init__(self) -> None:
        self._items: OrderedDict[Any, OutItem] = OrderedDict()
        self._seq = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self.frames = 0
        # Nothing more will be sent: what is put is dropped, nobody waits for room.
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def put_frame(self, frame: str) -> None:
        if self.closed:
            return
        self._seq += 1
        self._items[self._seq] = frame
        self.frames += 1
        self._ready.set()

    def put_event(self, event: Event) -> None:
        if self.closed:
            return
        added = event.msg == ADDED
        key = (event.collection, event.id, added)
        if not added:
            pending_add = self._items.get((event.collection, event.id, True))
            if isinstance(pending_add, Event) and event.msg != "changed":
                # Removed before the reader even saw it added: it never needs to know.
                del self._items[(event.collection, event.id, True)]
                self._items.pop(key, None)
                return
        # Assigning an existing key keeps its place in the order.
        self._items[key] = event
        self._ready.set()

    def pop_all(self) -> list[OutItem]:
        items = list(self._items.values())
        self._items.clear()
        self._ready.clear()
        self.frames = 0
        self._room.set()
        return items

    async def wait(self) -> None:
        await self._ready.wait()

    async def wait_room(self, limit: int) -> None:
        """Return once fewer than ``limit`` replies wait (or the outbox is closed)."""
        while self.frames >= limit and not self.closed:
            self._room.clear()
            await self._room.wait()

    def close(self) -> None:
        """Drop what waits and release every waiter: nothing more will be sent."""
        self.closed = True
        self._items.clear()
        self.frames = 0
        self._ready.set()
        self._room.set()
