"""The store interface: open, close, run named queries, group-committed writes."""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from middlewared.query.sql import Dialect

Row = dict[str, Any]
# Consumes one batch of a scan's rows (tuples in the SELECT's column order); False: stop.
Consumer = Callable[[list[Sequence[Any]]], bool]


@dataclass(frozen=True)
class Op:
    """One write: a named query and its parameters. ``key``: a later write with the same
    key in the same transaction makes this one unnecessary (it sets every column this one
    does), so a group commit may leave this one out (a job's RUNNING row when its end comes
    in the same commit)."""

    query: str
    params: dict[str, Any]
    key: Hashable | None = None


def latest(ops: list[Op]) -> list[Op]:
    """``ops`` without those a later op with the same key replaces."""
    seen: set[Hashable] = set()
    kept: list[Op] = []
    for op in reversed(ops):
        if op.key is not None:
            if op.key in seen:
                continue
            seen.add(op.key)
        kept.append(op)
    kept.reverse()
    return kept


class Store(abc.ABC):
    """What a backend must do; it knows rows and queries, nothing of jobs or JSON-RPC.

    The contract (``tests/integration/test_store_contract.py`` runs it against every
    backend): the named queries of ``sql/queries.sql`` with their semantics, writes applied
    in order as group-committed transactions (all of one ``write`` or none), and snapshots
    that any backend restores.
    """

    # The SQL the query compiler writes for this backend; None: the backend runs no SQL and
    # filters are evaluated in Python on what ``fetch`` returns.
    dialect: Dialect | None

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending writes and disconnect."""

    @abc.abstractmethod
    async def fetch(self, query: str, **params: Any) -> list[Row]:
        """Run a named read query."""

    @abc.abstractmethod
    async def fetch_sql(self, sql: str, params: list[Any]) -> list[Row]:
        """Run a read built by the query compiler (dialect placeholders); only for backends
        with a dialect."""

    @abc.abstractmethod
    def write(self, ops: list[Op]) -> asyncio.Future[None]:
        """Queue ``ops`` as one transaction, group-committed with other writers'.

        Writes are applied in the order they were queued. The future resolves once the
        transaction is durable: that is the acknowledgement.
        """

    @abc.abstractmethod
    async def backup(self, dest: Path) -> None:
        """Write a consistent snapshot of the whole store to ``dest`` (a SQLite file of our
        schema, whatever the backend)."""

    @abc.abstractmethod
    async def restore(self, src: Path) -> int:
        """Validate the snapshot at ``src`` (every table and row; a bad one changes
        nothing), then take its users, keys, settings and meta and add its finished jobs
        that are not here; jobs here are kept and ids never reused. Returns the snapshot's
        schema version."""

    async def scan_sql(
        self,
        sql: str,
        params: list[Any],
        consume: Consumer,
        *,
        batch_size: int = 500,
        deadline: float | None = None,
    ) -> None:
        """Run a read built by the query compiler, feeding its rows to ``consume`` in batches
        of at most ``batch_size`` until it returns False or the rows run out.

        One statement, one consistent snapshot. ``consume`` may run in the backend's reader
        thread (it touches only its own state). Past ``deadline`` (``time.monotonic()``),
        the read stops with ``TimeoutError``, also in the middle of the statement. This
        fallback reads everything first; backends stream.
        """
        rows = [tuple(row.values()) for row in await self.fetch_sql(sql, params)]
        for start in range(0, len(rows), batch_size):
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError
            if not consume(list(rows[start : start + batch_size])):
                return

    async def fetch_one(self, query: str, **params: Any) -> Row | None:
        rows = await self.fetch(query, **params)
        return rows[0] if rows else None
