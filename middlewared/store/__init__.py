"""Persistence: a small store interface and its backends (SQLite now, PostgreSQL next)."""

from middlewared.store.base import Op, Store
from middlewared.store.sqlite import SQLiteStore

__all__ = ["Op", "SQLiteStore", "Store"]
