"""The in-memory backend: every named query as a small Python function over dicts.

Nothing survives a restart. It is for users' tests and trials (``--store memory://``), and
it keeps the store contract honest: what the server needs from a store must be expressible
as named queries, since this backend runs no SQL. Filters the query compiler would turn
into SQL are evaluated in Python here (``dialect`` is None). Snapshots are SQLite files,
as the SQLite backend writes them, so ``config.save`` from one restores into the other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from middlewared.errors import CallError
from middlewared.store.base import Op, Row, Store
from middlewared.store.snapshot import (
    COUNTERS,
    TABLE_COLUMNS,
    read_snapshot,
    validate_and_upgrade,
    write_snapshot,
)

Undo = Callable[[], None]
ENDED = frozenset({"SUCCESS", "FAILED", "ABORTED"})


class MemoryStore(Store):
    dialect = None

    def __init__(self) -> None:
        self.tables: dict[str, dict[Any, Row]] = {name: {} for name in TABLE_COLUMNS}
        self.tables["counters"] = {name: {"name": name, "value": 0} for name in sorted(COUNTERS)}
        self._open = False
        self._reads: dict[str, Callable[..., list[Row]]] = {
            "get_meta": self._get_meta,
            "get_counter": self._get_counter,
            "get_job": self._get_job,
            "unfinished_jobs": self._unfinished,
            "expired_job_ids": self._expired,
            "job_owners": self._owners,
            "finished_job_ids_beyond": self._beyond,
            "finished_job_ids_beyond_no_owner": self._beyond_no_owner,
            "job_id_span": self._span,
            "job_ref": self._ref,
            "all_users": lambda: self._all("users"),
            "all_api_keys": lambda: self._all("api_keys"),
            "all_settings": lambda: self._all("settings"),
            "all_notifiers": lambda: self._all("notifiers"),
            "finished_job_records": self._finished_records,
            "all_triggers": lambda: self._all("triggers"),
            "last_trigger_fire": self._last_fire,
            "all_trigger_windows": lambda: self._all("trigger_windows"),
            "all_commands": lambda: self._all("commands"),
            "get_command": lambda name: self._get("commands", name),
            "command_runs": self._command_runs,
            "last_command_run": self._last_command_run,
            "running_command_runs": self._running_command_runs,
        }
        self._writes: dict[str, Callable[[dict[str, Any]], Undo]] = {
            "set_meta": lambda p: self._upsert("meta", p["name"], p),
            "raise_counter": self._raise_counter,
            "insert_job": lambda p: self._insert("jobs", p["id"], p),
            "update_job": lambda p: self._update("jobs", p["id"], p),
            "delete_job": lambda p: self._delete("jobs", p["id"]),
            "insert_user": self._insert_user,
            "update_user": self._update_user,
            "delete_user": lambda p: self._delete("users", p["id"]),
            "insert_api_key": lambda p: self._insert("api_keys", p["id"], p),
            "update_api_key": lambda p: self._update("api_keys", p["id"], p),
            "delete_api_key": lambda p: self._delete("api_keys", p["id"]),
            "set_api_key_scram": lambda p: self._update("api_keys", p["id"], p),
            "delete_user_api_keys": self._delete_user_keys,
            "set_settings": lambda p: self._upsert("settings", p["namespace"], p),
            "insert_trigger": self._insert_trigger,
            "update_trigger": self._update_trigger,
            "delete_trigger": lambda p: self._delete("triggers", p["id"]),
            "insert_trigger_fire": lambda p: self._insert(
                "trigger_fires", (p["trigger_id"], p["due"]), p
            ),
            "delete_trigger_fires": self._delete_fires,
            "prune_trigger_fires": self._prune_fires,
            "open_trigger_window": lambda p: self._upsert("trigger_windows", p["trigger_id"], p),
            "close_trigger_window": lambda p: self._delete("trigger_windows", p["trigger_id"]),
            "insert_notifier": self._insert_notifier,
            "update_notifier": self._update_notifier,
            "delete_notifier": lambda p: self._delete("notifiers", p["id"]),
            "insert_command": lambda p: self._insert("commands", p["name"], p),
            "update_command": lambda p: self._update("commands", p["name"], p),
            "raise_command_runs": self._raise_command_runs,
            "delete_command": lambda p: self._delete("commands", p["name"]),
            "insert_command_run": self._insert_command_run,
            "set_command_run_process": lambda p: self._update("command_runs", _run_key(p), p),
            "end_command_run": self._end_command_run,
            "delete_command_run": lambda p: self._delete("command_runs", _run_key(p)),
            "delete_command_runs": self._delete_command_runs,
        }

    # -- the contract ---------------------------------------------------------------------
    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False

    async def fetch(self, query: str, **params: Any) -> list[Row]:
        self._check_open()
        return [dict(row) for row in self._reads[query](**params)]

    async def fetch_sql(self, sql: str, params: list[Any]) -> list[Row]:
        raise CallError("The memory store runs no SQL (its dialect is None)")

    def write(self, ops: list[Op]) -> asyncio.Future[None]:
        """Applies ``ops`` at once, all or none; resolves in the next loop step."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        try:
            self._check_open()
            self._apply(ops)
        except Exception as e:
            loop.call_soon(_settle, fut, e)
        else:
            loop.call_soon(_settle, fut, None)
        return fut

    async def backup(self, dest: Path) -> None:
        self._check_open()
        tables = {name: list(rows.values()) for name, rows in self.tables.items()}
        await asyncio.to_thread(write_snapshot, dest, tables)

    async def restore(self, src: Path) -> int:
        """Take users, keys, settings and meta from the snapshot; add its finished jobs that
        are not here; never lower a counter."""
        self._check_open()
        version = await asyncio.to_thread(validate_and_upgrade, src)
        tables = await asyncio.to_thread(read_snapshot, src)
        for name in (
            "users",
            "api_keys",
            "meta",
            "settings",
            "triggers",
            "trigger_windows",
            "notifiers",
            "commands",
        ):
            key = _KEYS[name]
            self.tables[name] = {row[key]: row for row in tables[name]}
        for row in tables["trigger_fires"]:
            self.tables["trigger_fires"].setdefault((row["trigger_id"], row["due"]), row)
        jobs = self.tables["jobs"]
        for row in tables["jobs"]:
            if row["state"] in ENDED and row["id"] not in jobs:
                jobs[row["id"]] = row
        for row in tables["counters"]:
            self._raise_counter(row)
        return version

    def _check_open(self) -> None:
        if not self._open:
            raise CallError("The store is closed")

    def _apply(self, ops: list[Op]) -> None:
        undo: list[Undo] = []
        try:
            for op in ops:
                undo.append(self._writes[op.query](op.params))
        except BaseException:
            for step in reversed(undo):
                step()
            raise

    # -- reads --------------------------------------------------------------------------
    def _all(self, table: str) -> list[Row]:
        return [self.tables[table][k] for k in sorted(self.tables[table])]

    def _get_meta(self, name: str) -> list[Row]:
        row = self.tables["meta"].get(name)
        return [] if row is None else [{"value": row["value"]}]

    def _get_counter(self, name: str) -> list[Row]:
        row = self.tables["counters"].get(name)
        return [] if row is None else [{"value": row["value"]}]

    def _get_job(self, id: int) -> list[Row]:
        row = self.tables["jobs"].get(id)
        return [] if row is None else [{"record": row["record"]}]

    def _unfinished(self) -> list[Row]:
        return [
            {k: r[k] for k in ("record", "retry_on_restart", "owner_id", "origin")}
            for r in self._all("jobs")
            if r["state"] in ("WAITING", "RUNNING")
        ]

    def _finished(self) -> list[Row]:
        return [r for r in self.tables["jobs"].values() if r["time_finished"] is not None]

    def _expired(self, before: int, limit: int) -> list[Row]:
        rows = sorted(
            (r for r in self._finished() if r["time_finished"] < before),
            key=lambda r: r["time_finished"],
        )
        return [_retention_row(r) for r in rows[:limit]]

    def _owners(self) -> list[Row]:
        owners = {r["owner_id"] for r in self.tables["jobs"].values()} - {None}
        return [{"owner_id": o} for o in sorted(owners)]

    def _newest_beyond(self, rows: list[Row], keep: int, limit: int) -> list[Row]:
        rows.sort(key=lambda r: r["time_finished"], reverse=True)
        return [_retention_row(r) for r in rows[keep : keep + limit]]

    def _beyond(self, owner_id: int, keep: int, limit: int) -> list[Row]:
        rows = [r for r in self._finished() if r["owner_id"] == owner_id]
        return self._newest_beyond(rows, keep, limit)

    def _beyond_no_owner(self, keep: int, limit: int) -> list[Row]:
        rows = [r for r in self._finished() if r["owner_id"] is None]
        return self._newest_beyond(rows, keep, limit)

    def _span(self) -> list[Row]:
        ids = self.tables["jobs"].keys()
        return [{"span": (max(ids) - min(ids) + 1) if ids else None}]

    def _ref(self, id: int) -> list[Row]:
        row = self.tables["jobs"].get(id)
        return [] if row is None else [{k: row[k] for k in ("owner_id", "method", "api_key_id")}]

    def _finished_records(self) -> list[Row]:
        return [
            {k: r[k] for k in ("record", "owner_id", "api_key_id")}
            for r in self._all("jobs")
            if r["state"] in ENDED
        ]

    # -- writes (each returns how to undo it) -----------------------------------------
    def _insert(self, table: str, key: Any, params: dict[str, Any]) -> Undo:
        rows = self.tables[table]
        if key in rows:
            raise CallError(f"{table}: a row with key {key!r} already exists")
        rows[key] = {c: params.get(c) for c in TABLE_COLUMNS[table]}
        return _remover(rows, key)

    def _update(self, table: str, key: Any, params: dict[str, Any]) -> Undo:
        rows = self.tables[table]
        old = rows.get(key)
        if old is None:
            return lambda: None
        rows[key] = {**old, **{c: v for c, v in params.items() if c in old and c != "id"}}
        return lambda: rows.__setitem__(key, old)

    def _upsert(self, table: str, key: Any, params: dict[str, Any]) -> Undo:
        rows = self.tables[table]
        old = rows.get(key)
        rows[key] = {c: params.get(c) for c in TABLE_COLUMNS[table]}
        if old is None:
            return _remover(rows, key)
        return lambda: rows.__setitem__(key, old)

    def _delete(self, table: str, key: Any) -> Undo:
        rows = self.tables[table]
        old = rows.pop(key, None)
        if old is None:
            return lambda: None
        return lambda: rows.__setitem__(key, old)

    def _raise_counter(self, params: dict[str, Any]) -> Undo:
        row = self.tables["counters"].get(params["name"])
        if row is None or row["value"] >= params["value"]:
            return lambda: None
        old = row["value"]
        row["value"] = params["value"]
        return lambda: row.__setitem__("value", old)

    def _insert_user(self, params: dict[str, Any]) -> Undo:
        self._unique("users", "username", params)
        return self._insert("users", params["id"], params)

    def _update_user(self, params: dict[str, Any]) -> Undo:
        self._unique("users", "username", params)
        return self._update("users", params["id"], params)

    def _insert_notifier(self, params: dict[str, Any]) -> Undo:
        self._unique("notifiers", "name", params)
        return self._insert("notifiers", params["id"], params)

    def _update_notifier(self, params: dict[str, Any]) -> Undo:
        self._unique("notifiers", "name", params)
        return self._update("notifiers", params["id"], params)

    def _unique(self, table: str, column: str, params: dict[str, Any]) -> None:
        """The UNIQUE constraint of ``table.column``, as SQL would enforce it."""
        for row in self.tables[table].values():
            if row[column] == params[column] and row["id"] != params["id"]:
                raise CallError(f"{table}: {column} {params[column]!r} is taken")

    def _unique_hook_path(self, params: dict[str, Any]) -> None:
        path = params.get("hook_path")
        for row in self.tables["triggers"].values():
            if path is not None and row["hook_path"] == path and row["id"] != params["id"]:
                raise CallError(f"triggers: hook path {path!r} is taken")

    def _insert_trigger(self, params: dict[str, Any]) -> Undo:
        self._unique_hook_path(params)
        return self._insert("triggers", params["id"], params)

    def _update_trigger(self, params: dict[str, Any]) -> Undo:
        self._unique_hook_path(params)
        return self._update("triggers", params["id"], params)

    def _last_fire(self, trigger_id: int) -> list[Row]:
        dues = [
            r["due"] for r in self.tables["trigger_fires"].values() if r["trigger_id"] == trigger_id
        ]
        return [{"due": max(dues) if dues else None}]

    def _delete_fires(self, params: dict[str, Any]) -> Undo:
        keys = [
            k
            for k, r in self.tables["trigger_fires"].items()
            if r["trigger_id"] == params["trigger_id"]
        ]
        return self._delete_many("trigger_fires", keys)

    def _prune_fires(self, params: dict[str, Any]) -> Undo:
        fires = self.tables["trigger_fires"]
        newest: dict[int, int] = {}
        for r in fires.values():
            newest[r["trigger_id"]] = max(newest.get(r["trigger_id"], r["due"]), r["due"])
        keys = [
            k
            for k, r in fires.items()
            if r["due"] < params["before"] and r["due"] < newest[r["trigger_id"]]
        ]
        return self._delete_many("trigger_fires", keys)

    def _delete_many(self, table: str, keys: list[Any]) -> Undo:
        undo = [self._delete(table, k) for k in keys]

        def restore() -> None:
            for step in reversed(undo):
                step()

        return restore

    # -- commands -------------------------------------------------------------------------
    def _get(self, table: str, key: Any) -> list[Row]:
        row = self.tables[table].get(key)
        return [] if row is None else [row]

    def _runs_of(self, command: str) -> list[Row]:
        rows = [r for r in self.tables["command_runs"].values() if r["command"] == command]
        return sorted(rows, key=lambda r: r["counter"], reverse=True)

    def _command_runs(self, command: str) -> list[Row]:
        columns = ("command", "counter", "job_id", "status", "state", "started", "finished")
        return [{c: r[c] for c in columns} for r in self._runs_of(command)]

    def _last_command_run(self, command: str) -> list[Row]:
        runs = self._runs_of(command)
        return [{"counter": runs[0]["counter"] if runs else None}]

    def _running_command_runs(self) -> list[Row]:
        columns = ("command", "counter", "job_id", "pgid", "boot_id", "pid_start")
        rows = [r for r in self._all("command_runs") if r["status"] == "running"]
        return [{c: r[c] for c in columns} for r in rows]

    def _raise_command_runs(self, params: dict[str, Any]) -> Undo:
        row = self.tables["commands"].get(params["name"])
        if row is None or row["runs"] >= params["runs"]:
            return lambda: None
        return self._update("commands", params["name"], {"runs": params["runs"]})

    def _insert_command_run(self, params: dict[str, Any]) -> Undo:
        return self._insert("command_runs", _run_key(params), {**params, "status": "running"})

    def _end_command_run(self, params: dict[str, Any]) -> Undo:
        cleared = {"pgid": None, "boot_id": None, "pid_start": None}
        return self._update("command_runs", _run_key(params), {**params, **cleared})

    def _delete_command_runs(self, params: dict[str, Any]) -> Undo:
        keys = [
            k for k, r in self.tables["command_runs"].items() if r["command"] == params["command"]
        ]
        return self._delete_many("command_runs", keys)

    def _delete_user_keys(self, params: dict[str, Any]) -> Undo:
        keys = [k for k, r in self.tables["api_keys"].items() if r["user_id"] == params["user_id"]]
        return self._delete_many("api_keys", keys)


def _remover(rows: dict[Any, Row], key: Any) -> Undo:
    def remove() -> None:
        rows.pop(key, None)

    return remove


_KEYS = {
    "users": "id",
    "api_keys": "id",
    "meta": "name",
    "settings": "namespace",
    "triggers": "id",
    "trigger_windows": "trigger_id",
    "notifiers": "id",
    "commands": "name",
}


def _run_key(params: dict[str, Any]) -> tuple[str, int]:
    return params["command"], params["counter"]


def _retention_row(row: Row) -> Row:
    return {k: row[k] for k in ("id", "owner_id", "method", "api_key_id")}


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(None)
    elif isinstance(exc, CallError):
        fut.set_exception(exc)
    else:
        fut.set_exception(CallError(f"Store write failed: {exc}"))
