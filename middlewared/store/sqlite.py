"""The embedded SQLite backend: WAL, one writer thread doing group commit, one reader."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from middlewared.errors import CallError
from middlewared.query.sql import SQLITE
from middlewared.store.base import Consumer, Op, Row, Store, latest
from middlewared.store.faults import store_error
from middlewared.store.queries import SCHEMA_VERSION, migrations, queries, split_statements
from middlewared.store.snapshot import validate_and_upgrade
from middlewared.store.thread import ConnectionThread

log = logging.getLogger(__name__)

# Most writes a single group commit takes; the rest wait for the next one.
MAX_BATCH = 2000
# The reader maps the file instead of copying pages through its cache: a deep page of a
# filtered query touches one table page per row, and the 2 MiB default cache, emptied
# whenever another connection commits, made such a page cost 2-3 ms instead of 0.2-0.7 ms
# (docs/performance.md). Bounded: mapped pages are the kernel's page cache, not the heap.
READER_MMAP_BYTES = 1 << 31
# A scan checks its deadline every this many SQLite VM steps (some milliseconds): each check
# takes the GIL, which the event loop may hold for a while, so checks must be rare.
DEADLINE_STEPS = 1_000_000
# ``->`` (JSON text of a value) came in SQLite 3.38: before it, JSON fields stay in Python.
_JSON_SQL = sqlite3.sqlite_version_info >= (3, 38, 0)

# Runs on the writer connection, in its thread, with no other write in between.
Exclusive = Callable[[sqlite3.Connection], None]
_Pending = tuple[list[Op] | Exclusive, asyncio.Future[None]]
# A named parameter (``:name``, not ``::type``) of queries.sql.
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@dataclasses.dataclass(frozen=True, slots=True)
class Positional:
    """A named query with ``?`` for its parameters, and what picks their values out of an
    op's dict in order: SQLite binds a tuple faster than it looks each name up in a dict
    (1.9 against 3.0 µs a 17-column row), and the writer holds the GIL while it binds."""

    sql: str
    values: Callable[[dict[str, Any]], tuple[Any, ...]]


def positional(sql: str) -> Positional:
    body = "\n".join(ln for ln in sql.splitlines() if not ln.lstrip().startswith("--"))
    names = _PARAM.findall(body)
    text = _PARAM.sub("?", body)
    if len(names) > 1:
        return Positional(text, itemgetter(*names))
    if names:
        one = itemgetter(names[0])
        return Positional(text, lambda params: (one(params),))
    return Positional(text, lambda params: ())


class SQLiteStore(Store):
    dialect = SQLITE if _JSON_SQL else dataclasses.replace(SQLITE, json=None)

    def __init__(self, path: Path, durability: str = "full") -> None:
        self.path = path
        self.durability = durability
        self._writer = ConnectionThread("sqlite-writer")
        self._reader = ConnectionThread("sqlite-reader")
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._queries = queries()
        self._writes = {name: positional(sql) for name, sql in self._queries.items()}
        self._closing = False

    async def open(self) -> None:
        try:
            await asyncio.to_thread(_create_private, self.path)
            await self._writer.open(self._connect)
            await self._writer.run(self._migrate)
            await self._reader.open(lambda: self._connect(mmap=READER_MMAP_BYTES))
        except sqlite3.Error as e:
            await self._reader.close()
            await self._writer.close()
            raise store_error("Cannot use the store", e, self.path.parent) from e
        self._task = asyncio.create_task(self._run_writer(), name="sqlite-writer")

    def _connect(self, mmap: int = 0) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as e:
            raise CallError(f"Cannot open the database {self.path}: {e}") from e
        conn.execute("PRAGMA journal_mode=WAL")
        sync = "FULL" if self.durability == "full" else "NORMAL"
        conn.execute(f"PRAGMA synchronous={sync}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA mmap_size={int(mmap)}")
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = (row[0] if row else None) or 0
        if current > SCHEMA_VERSION:
            raise CallError(
                f"The database {self.path} has schema {current}, newer than this server "
                f"({SCHEMA_VERSION})"
            )
        # Every migration not recorded yet runs, not only those above the highest recorded:
        # numbers may be added out of order by branches landing one after the other.
        applied = {r[0] for r in conn.execute("SELECT version FROM schema_version")}
        for version, statements in migrations():
            if version in applied:
                continue
            with _transaction(conn):
                for stmt in statements:
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
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
        await self._reader.close()
        await self._writer.close()

    async def fetch(self, query: str, **params: Any) -> list[Row]:
        return await self._reader.run(_fetch, self._queries[query], params)

    async def fetch_sql(self, sql: str, params: list[Any]) -> list[Row]:
        return await self._reader.run(_fetch, sql, params)

    async def scan_sql(
        self,
        sql: str,
        params: list[Any],
        consume: Consumer,
        *,
        batch_size: int = 500,
        deadline: float | None = None,
    ) -> None:
        """In the reader thread: the rows and ``consume``'s work stay off the event loop."""
        await self._reader.run(_scan, sql, params, consume, batch_size, deadline)

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
        try:
            await self._writer.run(task)
        except Exception as e:
            if not fut.done():
                fut.set_exception(e)
        else:
            if not fut.done():
                fut.set_result(None)

    def run_exclusive(self, task: Exclusive) -> asyncio.Future[None]:
        """Run ``task`` on the writer connection (in its thread) with no other write in
        between."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done() or self._closing:
            fut.set_exception(CallError("The store is closed"))
        else:
            self._queue.put_nowait((task, fut))
        return fut

    async def _commit(self, batch: list[_Pending]) -> None:
        ops = latest([op for ops, _ in batch if isinstance(ops, list) for op in ops])
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
                    fut.set_exception(store_error("Store write failed", e, self.path))
            else:
                if not fut.done():
                    fut.set_result(None)

    async def _apply(self, ops: list[Op]) -> None:
        """One transaction, in one round trip to the writer thread."""
        await self._writer.run(_apply, self._writes, ops)

    async def backup(self, dest: Path) -> None:
        """The fast path of a snapshot: SQLite's online backup of the whole file."""
        await self._reader.run(_backup, dest)

    async def restore(self, src: Path) -> int:
        """Validate the snapshot (every table and row), then replace users, API keys,
        settings and meta with its own and add its finished jobs that are not here. Jobs
        here are never removed, ids never reused. Returns its schema version."""
        version = await asyncio.to_thread(validate_and_upgrade, src)
        await self.run_exclusive(lambda conn: _restore(conn, src))
        return version


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def _apply(conn: sqlite3.Connection, named: dict[str, Positional], ops: list[Op]) -> None:
    with _transaction(conn):
        for name, group in groupby(ops, key=lambda op: op.query):
            query = named[name]
            conn.executemany(query.sql, [query.values(op.params) for op in group])


def _fetch(conn: sqlite3.Connection, sql: str, params: Any) -> list[Row]:
    cur = conn.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _scan(
    conn: sqlite3.Connection,
    sql: str,
    params: list[Any],
    consume: Consumer,
    batch_size: int,
    deadline: float | None,
) -> None:
    if deadline is not None:
        # Interrupts a statement that works long before its first row (a sort, a count).
        conn.set_progress_handler(lambda: time.monotonic() > deadline, DEADLINE_STEPS)
    try:
        cursor = conn.execute(sql, params)
        try:
            while rows := cursor.fetchmany(batch_size):
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError
                if not consume(rows):
                    return
        finally:
            cursor.close()
    except sqlite3.OperationalError as e:
        if deadline is not None and "interrupted" in str(e):
            raise TimeoutError from None
        raise
    finally:
        conn.set_progress_handler(None, 0)


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (SQLite gives its WAL and
    shared-memory files the same permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))


def _backup(conn: sqlite3.Connection, dest: Path) -> None:
    target = sqlite3.connect(dest)
    try:
        conn.backup(target)
    finally:
        target.close()


def _restore(conn: sqlite3.Connection, src: Path) -> None:
    conn.execute("ATTACH DATABASE ? AS bak", (str(src),))
    try:
        with _transaction(conn):
            for stmt in split_statements(queries()["restore_config"]):
                conn.execute(stmt)
    finally:
        conn.execute("DETACH DATABASE bak")
