"""Check that an uploaded file is a sound snapshot of our store before anything uses it."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from middlewared.errors import ValidationErrors
from middlewared.store.queries import SCHEMA_VERSION, migrations

MAGIC = b"SQLite format 3\x00"
REQUIRED = {
    "users": {"id", "username", "password_hash", "admin", "locked", "allowlist", "created"},
    "api_keys": {"id", "name", "username", "key_hash", "allowlist", "created", "expires"},
    "jobs": {"id", "method", "state", "owner", "record"},
    "counters": {"name", "value"},
    "meta": {"name", "value"},
}


def _bad(reason: str, code: int = errno.EINVAL) -> ValidationErrors:
    return ValidationErrors([("file", reason, code)])


def _check_tables(conn: sqlite3.Connection) -> None:
    for table, columns in REQUIRED.items():
        found = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
        if not found:
            raise _bad(f"Not a middlewared database: table {table!r} is missing")
        if columns - found:
            raise _bad(f"Table {table!r} lacks columns {sorted(columns - found)}")
    admins = conn.execute(
        "SELECT COUNT(*) FROM users WHERE admin = 1 AND locked = 0 AND password_hash IS NOT NULL"
    ).fetchone()[0]
    if not admins:
        raise _bad("The snapshot has no usable administrator: restoring it would lock you out")


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
        with conn:
            for number, statements in migrations():
                if number > version:
                    for stmt in statements:
                        conn.execute(stmt)
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (number,))
        _check_tables(conn)
        return version
    except sqlite3.DatabaseError as e:
        raise _bad(f"Corrupt database: {e}") from None
    finally:
        conn.close()
