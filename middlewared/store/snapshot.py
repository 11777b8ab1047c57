"""Snapshots of the store (``config.save``, ``config.upload``): SQLite files of our schema,
whatever the backend. Every table and every row is checked before anything uses a
snapshot: a bad file is refused with the reason and changes nothing."""

from __future__ import annotations

import errno
import re
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from middlewared import jsonc
from middlewared.errors import ValidationErrors
from middlewared.mail import EMAIL_PATTERN
from middlewared.store.queries import SCHEMA_VERSION, migrations

MAGIC = b"SQLite format 3\x00"

# Every column of every table, in the order of the latest schema.
TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "meta": ("name", "value"),
    "counters": ("name", "value"),
    "settings": ("namespace", "value"),
    "users": (
        "id",
        "username",
        "full_name",
        "password_hash",
        "admin",
        "locked",
        "allowlist",
        "created",
        "twofactor",
        "email",
    ),
    "api_keys": (
        "id",
        "name",
        "username",
        "user_id",
        "key_hash",
        "allowlist",
        "created",
        "expires",
        "scram",
    ),
    "triggers": ("id", "type", "owner_id", "paused", "next_run", "hook_path", "record"),
    "trigger_fires": ("trigger_id", "due", "job_id"),
    "trigger_windows": ("trigger_id", "fires_at", "events"),
    "notifiers": ("id", "name", "kind", "recipients", "url", "secret", "created", "extra"),
    "commands": ("name", "record", "runs", "created"),
    "command_runs": (
        "command",
        "counter",
        "job_id",
        "status",
        "state",
        "started",
        "finished",
        "pgid",
        "boot_id",
        "pid_start",
    ),
    "jobs": (
        "id",
        "method",
        "state",
        "owner",
        "owner_id",
        "api_key_id",
        "origin",
        "lock_key",
        "attempt",
        "run_after",
        "node",
        "description",
        "time_started",
        "time_finished",
        "progress_percent",
        "error",
        "retry_on_restart",
        "record",
    ),
}
# The column that names a row in an error message, by preference.
ROW_KEYS = ("id", "trigger_id", "name", "namespace", "command")
USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")
KEY_HASH = re.compile(r"^[0-9a-f]{64}$")
STATES = frozenset({"WAITING", "RUNNING", "SUCCESS", "FAILED", "ABORTED"})
COUNTERS = frozenset({"jobs", "users", "api_keys", "triggers", "notifiers"})
NOTIFIER_KINDS = frozenset({"mail", "webhook"})
COMMAND_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
RUN_STATUSES = frozenset({"running", "success", "fail"})


def _bad(reason: str, code: int = errno.EINVAL) -> ValidationErrors:
    return ValidationErrors([("file", reason, code)])


# -- checking one value ----------------------------------------------------------------------
def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _flag(v: Any) -> bool:
    return v in (0, 1) and _int(v)


def _text(v: Any) -> bool:
    return isinstance(v, str)


def _opt(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def _allowlist(v: Any) -> bool:
    try:
        value = jsonc.loads(v) if isinstance(v, str) else None
    except ValueError:
        return False
    return isinstance(value, list) and all(isinstance(p, str) and p for p in value)


def _json_object(v: Any) -> bool:
    try:
        return isinstance(v, str) and isinstance(jsonc.loads(v), dict)
    except ValueError:
        return False


def _json_list(v: Any) -> bool:
    try:
        return isinstance(v, str) and isinstance(jsonc.loads(v), list)
    except ValueError:
        return False


def _string_list(v: Any) -> bool:
    try:
        value = jsonc.loads(v) if isinstance(v, str) else None
    except ValueError:
        return False
    return isinstance(value, list) and all(isinstance(p, str) for p in value)


def _password_hash(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.startswith("scrypt$") and v.count("$") == 5)


ROW_CHECKS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "users": {
        "id": lambda v: _int(v) and v > 0,
        "username": lambda v: _text(v) and bool(USERNAME.match(v)),
        "full_name": _text,
        "password_hash": _password_hash,
        "admin": _flag,
        "locked": _flag,
        "allowlist": _allowlist,
        "created": _int,
        "email": lambda v: _text(v) and (v == "" or bool(re.match(EMAIL_PATTERN, v))),
    },
    "api_keys": {
        "id": lambda v: _int(v) and v > 0,
        "name": _text,
        "user_id": _opt(_int),
        "key_hash": lambda v: _text(v) and bool(KEY_HASH.match(v)),
        "allowlist": _allowlist,
        "created": _int,
        "expires": _opt(_int),
    },
    "meta": {"name": _text, "value": _text},
    "settings": {"namespace": _text, "value": _json_object},
    "counters": {"name": lambda v: v in COUNTERS, "value": lambda v: _int(v) and v >= 0},
    "triggers": {
        "id": lambda v: _int(v) and v > 0,
        "type": lambda v: _text(v) and v.startswith("@"),
        "owner_id": _opt(_int),
        "paused": _flag,
        "next_run": _opt(_int),
        "hook_path": _opt(_text),
        "record": _json_object,
    },
    "trigger_fires": {"trigger_id": _int, "due": _int, "job_id": _int},
    "trigger_windows": {"trigger_id": _int, "fires_at": _int, "events": _json_list},
    "notifiers": {
        "id": lambda v: _int(v) and v > 0,
        "name": lambda v: _text(v) and 0 < len(v) <= 100 and v.isprintable(),
        "kind": lambda v: v in NOTIFIER_KINDS,
        "recipients": _string_list,
        "url": _opt(_text),
        "secret": _opt(_text),
        "created": _int,
        "extra": _json_object,
    },
    "commands": {
        "name": lambda v: _text(v) and bool(COMMAND_NAME.match(v)),
        "record": _json_object,
        "runs": lambda v: _int(v) and v >= 0,
        "created": _int,
    },
    "command_runs": {
        "command": lambda v: _text(v) and bool(COMMAND_NAME.match(v)),
        "counter": lambda v: _int(v) and v > 0,
        "job_id": _int,
        "status": lambda v: v in RUN_STATUSES,
        "state": _opt(lambda v: v in STATES),
        "started": _int,
        "finished": _opt(_int),
        "pgid": _opt(_int),
        "boot_id": _opt(_text),
        "pid_start": _opt(_int),
    },
    "jobs": {
        "id": lambda v: _int(v) and v > 0,
        "method": _text,
        "state": lambda v: v in STATES,
        "owner_id": _opt(_int),
        "api_key_id": _opt(_int),
        "attempt": lambda v: _int(v) and v >= 1,
        "retry_on_restart": _flag,
        "time_started": _opt(_int),
        "time_finished": _opt(_int),
    },
}


def _check_rows(table: str, rows: Iterable[dict[str, Any]]) -> None:
    checks = ROW_CHECKS[table]
    for row in rows:
        for column, check in checks.items():
            if not check(row.get(column)):
                key = next((row[k] for k in ROW_KEYS if row.get(k) is not None), None)
                where = f"{table} row {key!r}"
                raise _bad(f"{where}: bad value in column {column!r}")
        if table == "jobs":
            _check_job_record(row)


def _check_job_record(row: dict[str, Any]) -> None:
    try:
        record = jsonc.loads(row["record"]) if isinstance(row.get("record"), str) else None
    except ValueError:
        record = None
    if not isinstance(record, dict) or record.get("id") != row["id"]:
        raise _bad(f"jobs row {row['id']!r}: its record is not the job's JSON record")
    if record.get("state") != row["state"] or record.get("method") != row["method"]:
        raise _bad(f"jobs row {row['id']!r}: its record disagrees with its columns")


def _check_tables(conn: sqlite3.Connection) -> None:
    for table, columns in TABLE_COLUMNS.items():
        found = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
        if not found:
            raise _bad(f"Not a middlewared database: table {table!r} is missing")
        if set(columns) - found:
            raise _bad(f"Table {table!r} lacks columns {sorted(set(columns) - found)}")
    for table in ROW_CHECKS:
        _check_rows(table, _rows(conn, table))
    users = {r["id"]: r for r in _rows(conn, "users")}
    if len({u["username"] for u in users.values()}) != len(users):
        raise _bad("Two users have the same name")
    names = [r["name"] for r in _rows(conn, "notifiers")]
    if len(set(names)) != len(names):
        raise _bad("Two notifiers have the same name")
    usable = [u for u in users.values() if u["admin"] and not u["locked"] and u["password_hash"]]
    if not usable:
        raise _bad("The snapshot has no usable administrator: restoring it would lock you out")


def _rows(conn: sqlite3.Connection, table: str) -> Iterable[dict[str, Any]]:
    cur = conn.execute(f'SELECT * FROM "{table}"')
    names = [d[0] for d in cur.description]
    for row in cur:
        yield dict(zip(names, row, strict=True))


def validate_and_upgrade(path: Path) -> int:
    """Validate the SQLite file at ``path`` (a private copy) and migrate it to our schema.

    Returns its original schema version. Raises ValidationErrors with the reason.
    """
    with path.open("rb") as f:
        if f.read(16) != MAGIC:
            raise _bad("Not a SQLite database")
    try:
        conn = sqlite3.connect(path)
    except sqlite3.Error as e:
        raise _bad(f"Cannot open the database: {e}") from None
    try:
        if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise _bad("The database fails its integrity check")
        try:
            version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        except sqlite3.Error:
            raise _bad("Not a middlewared database: no schema version") from None
        if not isinstance(version, int) or version < 1:
            raise _bad("Not a middlewared database: no schema version")
        if version > SCHEMA_VERSION:
            raise _bad(
                f"The database has schema {version}, newer than this server's ({SCHEMA_VERSION})"
            )
        applied = {r[0] for r in conn.execute("SELECT version FROM schema_version")}
        with conn:
            for number, statements in migrations():
                if number not in applied:
                    for stmt in statements:
                        conn.execute(stmt)
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        _check_tables(conn)
        return version
    except sqlite3.DatabaseError as e:
        raise _bad(f"Corrupt database: {e}") from None
    finally:
        conn.close()


def read_snapshot(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of a snapshot already validated by ``validate_and_upgrade``."""
    conn = sqlite3.connect(path)
    try:
        return {table: list(_rows(conn, table)) for table in TABLE_COLUMNS}
    finally:
        conn.close()


def write_snapshot(dest: Path, tables: dict[str, list[dict[str, Any]]]) -> None:
    """A snapshot file of our schema holding ``tables`` (for backends that are not SQLite)."""
    conn = sqlite3.connect(dest, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for number, statements in migrations():
            for stmt in statements:
                conn.execute(stmt)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        conn.execute("DELETE FROM counters")
        for table, columns in TABLE_COLUMNS.items():
            names = ", ".join(columns)
            marks = ", ".join("?" for _ in columns)
            conn.executemany(
                f"INSERT INTO {table} ({names}) VALUES ({marks})",
                [tuple(row.get(c) for c in columns) for row in tables.get(table, [])],
            )
        conn.execute("COMMIT")
    finally:
        conn.close()
