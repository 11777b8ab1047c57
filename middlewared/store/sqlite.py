"""The embedded SQLite backend: aiosqlite, WAL, one writer doing group commit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from itertools import groupby
from pathlib import Path
from typing import Any

import aiosqlite

from middlewared.errors import CallError
from middlewared.query.sql import SQLITE
from middlewared.store.base import Op, Row, Store
from middlewared.store.queries import SCHEMA_VERSION, migrations, queries, split_statements

log = logging.getLogger(__name__)

# Most writes a single group commit takes; the rest wait for the next one.
MAX_BATCH = 2000

Exclusive = Callable[[aiosqlite.Connection], Awaitable[None]]
_Pending = tuple[list[Op] | Exclusive, asyncio.Future[None]]


class SQLiteStore(Store):
    dialect = SQLITE

    def __init__(self, path: Path, durability: str = "full") -> None:
        self.path = path
        self.durability = durability
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._queries = queries()
        self._closing = False

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._migrate(self._writer)
        self._reader = await self._connect()
        self._task = asyncio.create_task(self._run_writer(), name="sqlite-writer")

    async def _connect(self) -> aiosqlite.Connection:
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as e:
            raise CallError(f"Cannot open the database {self.path}: {e}") from e
        conn.row_factory = sqlite3.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        sync = "FULL" if self.durability == "full" else "NORMAL"
        await conn.execute(f"PRAGMA synchronous={sync}")
        await conn.execute("PRAGMA busy_timeout=5000")
        await conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with conn.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
        current = (row[0] if row else None) or 0
        if current > SCHEMA_VERSION:
            raise CallError(
                f"The database {self.path} has schema {current}, newer than this server "
                f"({SCHEMA_VERSION})"
            )
        for version, statements in migrations():
            if version <= current:
                continue
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in statements:
                    await conn.execute(stmt)
                await conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            log.info("store %s migrated to schema %d", self.path, version)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            await self._queue.put(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # Anything queued behind the stop marker is refused, never left hanging.
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None and not item[1].done():
                item[1].set_exception(CallError("The store is closed"))
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def fetch(self, query: str, **params: Any) -> list[Row]:
        return await self._read(self._queries[query], params)

    async def fetch_sql(self, sql: str, params: list[Any]) -> list[Row]:
        return await self._read(sql, params)

    async def _read(self, sql: str, params: Any) -> list[Row]:
        assert self._reader is not None, "store is not open"
        async with self._reader.execute(sql, params) as cur:
            rows = await cur.fetchall()
        return [dict(r) for r in rows]

    def write(self, ops: list[Op]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done() or self._closing:
            fut.set_exception(CallError("The store is closed"))
        else:
            self._queue.put_nowait((ops, fut))
        return fut

    async def _run_writer(self) -> None:
        """Take every write waiting, commit them in one transaction, wake their writers.

        An exclusive task (a restore) runs alone, between two group commits.
        """
        stop = False
        pending: _Pending | None = None
        while not stop:
            first = pending or await self._queue.get()
            pending = None
            if first is None:
                break
            if callable(first[0]):
                await self._exclusive(first[0], first[1])
                continue
            batch = [first]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                if callable(item[0]):
                    pending = item
                    break
                batch.append(item)
            await self._commit(batch)
        if pending is not None:
            await self._exclusive(pending[0], pending[1])  # type: ignore[arg-type]

    async def _exclusive(self, task: Exclusive, fut: asyncio.Future[None]) -> None:
        assert self._writer is not None
        try:
            await task(self._writer)
        except Exception as e:
            if not fut.done():
                fut.set_exception(e)
        else:
            if not fut.done():
                fut.set_result(None)

    def run_exclusive(self, task: Exclusive) -> asyncio.Future[None]:
        """Run ``task`` on the writer connection with no other write in between."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done() or self._closing:
            fut.set_exception(CallError("The store is closed"))
        else:
            self._queue.put_nowait((task, fut))
        return fut

    async def _commit(self, batch: list[_Pending]) -> None:
        assert self._writer is not None
        ops = [op for ops, _ in batch if isinstance(ops, list) for op in ops]
        try:
            await self._apply(ops)
        except Exception as e:
            # One bad write must not fail the others: retry them one by one.
            log.warning("group commit of %d writes failed (%s); retrying singly", len(batch), e)
            await self._commit_singly(batch)
            return
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)

    async def _commit_singly(self, batch: list[_Pending]) -> None:
        for ops, fut in batch:
            try:
                assert isinstance(ops, list)
                await self._apply(ops)
            except Exception as e:
                if not fut.done():
                    fut.set_exception(CallError(f"Store write failed: {e}"))
            else:
                if not fut.done():
                    fut.set_result(None)

    async def _apply(self, ops: list[Op]) -> None:
        assert self._writer is not None
        conn = self._writer
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for name, group in groupby(ops, key=lambda op: op.query):
                await conn.executemany(self._queries[name], [op.params for op in group])
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                await conn.execute("ROLLBACK")
            raise

    async def backup(self, dest: Path) -> None:
        assert self._reader is not None
        target = await aiosqlite.connect(dest)
        try:
            await self._reader.backup(target)
        finally:
            await target.close()

    async def restore(self, src: Path) -> None:
        """Replace users, API keys and settings with those of a validated snapshot; add its
        finished jobs that are not here. Jobs here are never removed, ids never reused."""
        await self.run_exclusive(lambda conn: _restore(conn, src))


async def _restore(conn: aiosqlite.Connection, src: Path) -> None:
    await conn.execute("ATTACH DATABASE ? AS bak", (str(src),))
    try:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in split_statements(queries()["restore_config"]):
                await conn.execute(stmt)
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
    finally:
        await conn.execute("DETACH DATABASE bak")
