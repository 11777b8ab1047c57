"""The named notifiers, kept in the store: create, read, update, delete. Read from the store
each time (the list is small), so a restored snapshot is seen at once."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

from middlewared.errors import Busy, NotFound
from middlewared.notify.notifier import Notifier, check, unique_name
from middlewared.store.base import Op, Store

log = logging.getLogger(__name__)


class NotifierBook:
    def __init__(self, store: Store, max_notifiers: int) -> None:
        self.store = store
        self.max_notifiers = max_notifiers
        # Checks and writes one at a time: two creates of one name cannot both pass.
        self._lock = asyncio.Lock()

    async def all(self) -> dict[int, Notifier]:
        return {
            row["id"]: Notifier.from_row(row) for row in await self.store.fetch("all_notifiers")
        }

    async def by_name(self) -> dict[str, Notifier]:
        return {n.name: n for n in (await self.all()).values()}

    async def records(self) -> list[dict[str, Any]]:
        return [n.record() for n in (await self.all()).values()]

    async def create(self, data: dict[str, Any], declared: str | None = None) -> Notifier:
        async with self._lock:
            current = await self.all()
            if len(current) >= self.max_notifiers:
                raise Busy(
                    f"There are {len(current)} notifiers already (the limit is "
                    f"{self.max_notifiers}, --max-notifiers)"
                )
            unique_name(current, data["name"], None)
            row = await self.store.fetch_one("get_counter", name="notifiers")
            nid = max(int(row["value"]) if row else 0, max(current, default=0)) + 1
            blank = Notifier(
                nid, data["name"], data["kind"], created=int(time.time() * 1000), declared=declared
            )
            notifier = blank.with_changes(data)
            check(notifier)
            await self.store.write(
                [
                    Op("insert_notifier", notifier.row()),
                    Op("raise_counter", {"name": "notifiers", "value": nid}),
                ]
            )
        log.info("notifier %d (%s, %s) created", nid, notifier.name, notifier.kind)
        return notifier

    async def update(self, nid: int, data: dict[str, Any]) -> Notifier:
        async with self._lock:
            current = await self.all()
            old = current.get(nid)
            if old is None:
                raise NotFound(f"Notifier {nid} does not exist")
            if "name" in data:
                unique_name(current, data["name"], nid)
            notifier = old.with_changes(data)
            check(notifier)
            await self.store.write([Op("update_notifier", notifier.row())])
        log.info("notifier %d (%s) updated", nid, notifier.name)
        return notifier

    async def replace(self, old: Notifier, data: dict[str, Any]) -> Notifier:
        """A declared notifier made exactly ``data`` (what it does not say takes its default,
        nothing of the old one stays but its id)."""
        async with self._lock:
            blank = Notifier(old.id, data["name"], data["kind"], created=old.created)
            notifier = replace(blank.with_changes(data), declared=old.declared)
            check(notifier)
            await self.store.write([Op("update_notifier", notifier.row())])
        log.info("notifier %d (%s) changed by %s", old.id, notifier.name, old.declared)
        return notifier

    async def delete(self, nid: int) -> None:
        async with self._lock:
            old = (await self.all()).get(nid)
            if old is None:
                raise NotFound(f"Notifier {nid} does not exist")
            await self.store.write([Op("delete_notifier", {"id": nid})])
        log.info("notifier %d (%s) deleted", nid, old.name)
