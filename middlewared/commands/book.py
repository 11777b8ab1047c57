"""Commands and their runs, kept in the store. Commands are read from the store at each use
(the list is small), so a restored snapshot is seen at once; changes are published on
``command.query`` (administrators only)."""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from middlewared.commands.model import Command
from middlewared.errors import Busy, NotFound, ValidationErrors
from middlewared.events.bus import ADDED, CHANGED, REMOVED, Event
from middlewared.store.base import Op, Row, Store

log = logging.getLogger(__name__)

COLLECTION = "command.query"
Publish = Callable[[Event], None]


def now_ms() -> int:
    return int(time.time() * 1000)


class CommandBook:
    def __init__(self, store: Store, publish: Publish, max_commands: int) -> None:
        self.store = store
        self.publish = publish
        self.max_commands = max_commands
        # Checks and writes one at a time: two creates of one name cannot both pass.
        self._lock = asyncio.Lock()
        # The last counter handed out per command (its store write may not be durable yet).
        self._issued: dict[str, int] = {}

    # -- commands ---------------------------------------------------------------------------
    async def all(self) -> list[Command]:
        return [Command.from_row(r) for r in await self.store.fetch("all_commands")]

    async def get(self, name: str) -> Command:
        row = await self.store.fetch_one("get_command", name=name)
        if row is None:
            raise NotFound(f"Command {name!r} does not exist")
        return Command.from_row(row)

    async def create(self, data: dict[str, Any], declared: str | None = None) -> Command:
        async with self._lock:
            command = Command.create(data, now_ms(), declared)
            current = await self.store.fetch("all_commands")
            if any(r["name"] == command.name for r in current):
                raise ValidationErrors([("name", f"{command.name!r} is taken", errno.EEXIST)])
            if len(current) >= self.max_commands:
                raise Busy(
                    f"There are {len(current)} commands already (the limit is "
                    f"{self.max_commands}, --max-commands)"
                )
            await self.store.write([Op("insert_command", command.row())])
        log.info("command %s created", command.name)
        self._publish(command, ADDED)
        return command

    async def update(self, name: str, data: dict[str, Any]) -> Command:
        async with self._lock:
            command = (await self.get(name)).with_changes(data)
            await self.store.write([Op("update_command", command.row())])
        log.info("command %s updated", name)
        self._publish(command, CHANGED)
        return command

    async def replace(self, old: Command, data: dict[str, Any]) -> Command:
        """A declared command made exactly ``data`` (what it does not say takes its default);
        its runs and counter stay."""
        async with self._lock:
            fresh = Command.create(data, old.created, old.declared)
            command = replace(fresh, runs=(await self.get(old.name)).runs)
            await self.store.write([Op("update_command", command.row())])
        log.info("command %s changed by %s", old.name, old.declared)
        self._publish(command, CHANGED)
        return command

    async def delete(self, name: str) -> Command:
        async with self._lock:
            command = await self.get(name)
            await self.store.write(
                [Op("delete_command", {"name": name}), Op("delete_command_runs", {"command": name})]
            )
        self._issued.pop(name, None)
        log.info("command %s deleted", name)
        self._publish(command, REMOVED)
        return command

    def _publish(self, command: Command, msg: str) -> None:
        fields = None if msg == REMOVED else command.record()
        self.publish(Event(COLLECTION, msg, command.name, fields))

    # -- runs -------------------------------------------------------------------------------
    async def begin_run(self, command: Command, job_id: int) -> int:
        """The run's counter (karajo's KARAJO_JOB_COUNTER): one more than any run of this
        command so far, never reused."""
        async with self._lock:
            last = await self.store.fetch_one("last_command_run", command=command.name)
            counter = 1 + max(
                command.runs,
                (last or {}).get("counter") or 0,
                self._issued.get(command.name, 0),
            )
            self._issued[command.name] = counter
        run = {"command": command.name, "counter": counter, "job_id": job_id}
        self._write(
            Op("raise_command_runs", {"name": command.name, "runs": counter}),
            Op("insert_command_run", {**run, "started": now_ms()}),
        )
        return counter

    def set_process(
        self, name: str, counter: int, pgid: int | None, boot: str, start: int | None
    ) -> None:
        """The process group a run's current line runs in (None: none now)."""
        params = {"command": name, "counter": counter, "pgid": pgid}
        self._write(Op("set_command_run_process", {**params, "boot_id": boot, "pid_start": start}))

    def end_run(self, name: str, counter: int, status: str, state: str) -> asyncio.Future[None]:
        """Store a run's end; the write is queued at once (in order with the run's others)."""
        params = {"command": name, "counter": counter, "status": status, "state": state}
        return self.store.write([Op("end_command_run", {**params, "finished": now_ms()})])

    async def runs(self, name: str) -> list[Row]:
        """Every run kept of ``name``, newest first."""
        return await self.store.fetch("command_runs", command=name)

    async def running(self) -> list[Row]:
        """Runs the store says are running (at start: those a crash interrupted)."""
        return await self.store.fetch("running_command_runs")

    async def forget_runs(self, name: str, counters: list[int]) -> None:
        ops = [Op("delete_command_run", {"command": name, "counter": c}) for c in counters]
        if ops:
            await self.store.write(ops)

    def _write(self, *ops: Op) -> None:
        """A write nobody waits for (its failure is logged): the run goes on meanwhile."""
        self.store.write(list(ops)).add_done_callback(log_failure)


def log_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("commands: a store write failed: %s", fut.exception())
