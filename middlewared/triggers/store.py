"""Triggers in the store: rows in, rows out, through the named queries."""

from __future__ import annotations

from typing import Any

from middlewared import jsonc
from middlewared.store.base import Op, Row, Store
from middlewared.triggers.model import Trigger


class TriggerStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def all(self) -> list[Row]:
        return await self.store.fetch("all_triggers")

    async def windows(self) -> list[Row]:
        return await self.store.fetch("all_trigger_windows")

    async def next_id(self) -> int:
        row = await self.store.fetch_one("get_counter", name="triggers")
        return int(row["value"]) + 1 if row else 1

    async def insert(self, trigger: Trigger) -> None:
        await self.store.write(
            [
                Op("insert_trigger", trigger.row()),
                Op("raise_counter", {"name": "triggers", "value": trigger.id}),
            ]
        )

    async def save(self, trigger: Trigger) -> None:
        # Every save sets the whole row: a later one in the same group commit replaces it
        # (a busy webhook trigger's fires and job ends then cost one row write a commit).
        await self.store.write([Op("update_trigger", trigger.row(), ("trigger", trigger.id))])

    async def delete(self, trigger_id: int) -> None:
        await self.store.write(
            [
                Op("delete_trigger", {"id": trigger_id}),
                Op("delete_trigger_fires", {"trigger_id": trigger_id}),
                Op("close_trigger_window", {"trigger_id": trigger_id}),
            ]
        )

    async def open_window(self, trigger_id: int, fires_at: int, events: list[Any]) -> None:
        await self.store.write(
            [
                Op(
                    "open_trigger_window",
                    {"trigger_id": trigger_id, "fires_at": fires_at, "events": jsonc.dumps(events)},
                )
            ]
        )

    async def close_window(self, trigger_id: int) -> None:
        await self.store.write([Op("close_trigger_window", {"trigger_id": trigger_id})])
