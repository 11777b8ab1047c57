"""The store interface: open, close, run named queries, group-committed writes."""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from middlewared.query.sql import Dialect

Row = dict[str, Any]


@dataclass(frozen=True)
class Op:
    """One write: a named query and its parameters."""

    query: str
    params: dict[str, Any]


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

    async def fetch_one(self, query: str, **params: Any) -> Row | None:
        rows = await self.fetch(query, **params)
        return rows[0] if rows else None
