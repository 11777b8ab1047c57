"""SQLiteStore on a real file: migrations, group commit, isolation of a bad write, backup and
restore; and the choice of a store by URL."""

from __future__ import annotations

import asyncio
import errno
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from middlewared import jsonc
from middlewared.errors import CallError, ValidationErrors
from middlewared.store import open_store
from middlewared.store.base import Op
from middlewared.store.memory import MemoryStore
from middlewared.store.queries import SCHEMA_VERSION, migrations
from middlewared.store.sqlite import SQLiteStore


def meta(name: str, value: str) -> Op:
    return Op("set_meta", {"name": name, "value": value})


async def meta_value(store: SQLiteStore, name: str) -> str | None:
    row = await store.fetch_one("get_meta", name=name)
    return None if row is None else str(row["value"])


async def all_meta(store: SQLiteStore) -> dict[str, str]:
    rows = await store.fetch_sql("SELECT name, value FROM meta ORDER BY name", [])
    return {r["name"]: r["value"] for r in rows}


def read_file(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read with the stdlib driver, independently of the store."""
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.execute(sql).fetchall())


async def next_turn() -> None:
    """Let the callbacks already scheduled run (a task just created takes its first step)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    loop.call_soon(fut.set_result, None)
    await fut


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store" / "middlewared.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(db)
    await s.open()
    yield s
    await s.close()


# -- migrations -------------------------------------------------------------------------


async def test_open_creates_the_schema_once(db: Path) -> None:
    for _ in range(3):
        s = SQLiteStore(db)
        await s.open()
        await s.close()
    versions = read_file(db, "SELECT version FROM schema_version ORDER BY version")
    assert versions == [(v,) for v, _ in migrations()]
    assert versions[-1] == (SCHEMA_VERSION,)
    counters = read_file(db, "SELECT name, value FROM counters ORDER BY name")
    assert counters == [
        ("api_keys", 0),
        ("jobs", 0),
        ("notifiers", 0),
        ("triggers", 0),
        ("users", 0),
    ]


async def test_a_newer_schema_is_refused(db: Path) -> None:
    s = SQLiteStore(db)
    await s.open()
    await s.close()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION + 1,))
        conn.commit()
    s = SQLiteStore(db)
    with pytest.raises(CallError, match="newer than this server"):
        await s.open()
    await s.close()


def make_v1(db: Path) -> None:
    """A database as the first release left it: schema 1, jobs and keys by user name."""
    db.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in migrations()[0][1]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
        conn.execute(
            "INSERT INTO users (id, username, admin, allowlist, created) "
            "VALUES (2, 'alice', 0, '[]', 0)"
        )
        for job_id, owner in ((1, "alice"), (2, "gone")):
            conn.execute(
                "INSERT INTO jobs (id, method, state, owner, record) "
                "VALUES (?, 't.x', 'SUCCESS', ?, '{}')",
                (job_id, owner),
            )
        conn.execute(
            "INSERT INTO api_keys (id, name, username, key_hash, created) "
            "VALUES (7, 'k', 'alice', 'h', 0)"
        )
        conn.commit()


async def test_schema_1_is_upgraded_to_owner_ids(db: Path) -> None:
    """Migration 0002: jobs and API keys belong to a user id (found by the name they had);
    jobs get their origin, lock, attempt, run_after and node; settings get a table."""
    make_v1(db)
    s = SQLiteStore(db)
    await s.open()
    try:
        rows = await s.fetch_sql("SELECT id, owner_id, attempt FROM jobs ORDER BY id", [])
        # A job of a name nobody has any more belongs to nobody (admins only see it).
        assert rows == [
            {"id": 1, "owner_id": 2, "attempt": 1},
            {"id": 2, "owner_id": None, "attempt": 1},
        ]
        assert await s.fetch_sql("SELECT user_id FROM api_keys", []) == [{"user_id": 2}]
        assert await s.fetch("all_settings") == []
    finally:
        await s.close()
    assert read_file(db, "SELECT MAX(version) FROM schema_version") == [(SCHEMA_VERSION,)]
    columns = {row[1] for row in read_file(db, "PRAGMA table_info(jobs)")}
    assert {"owner_id", "origin", "lock_key", "attempt", "run_after", "node"} <= columns


async def test_the_database_is_in_wal_mode(store: SQLiteStore, db: Path) -> None:
    assert read_file(db, "PRAGMA journal_mode") == [("wal",)]


# -- writes -----------------------------------------------------------------------------


async def test_a_write_is_visible_once_its_future_resolves(store: SQLiteStore, db: Path) -> None:
    await store.write([meta("a", "1")])
    assert await meta_value(store, "a") == "1"
    # Durable: another connection sees it too.
    assert read_file(db, "SELECT value FROM meta WHERE name = 'a'") == [("1",)]


async def test_many_concurrent_writers_are_group_committed(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions = 0
    apply = store._apply

    async def counting_apply(ops: list[Op]) -> None:
        nonlocal transactions
        transactions += 1
        await apply(ops)

    monkeypatch.setattr(store, "_apply", counting_apply)
    futures = [store.write([meta(f"k{i}", str(i)), meta(f"j{i}", str(-i))]) for i in range(1000)]
    await asyncio.gather(*futures)
    assert all(f.done() and f.exception() is None for f in futures)
    values = await all_meta(store)
    assert len(values) == 2000
    assert all(values[f"k{i}"] == str(i) and values[f"j{i}"] == str(-i) for i in range(1000))
    # Queued together, committed together: far fewer transactions than writers.
    assert transactions < 10


async def test_writes_apply_in_the_order_they_were_queued(store: SQLiteStore) -> None:
    futures = [store.write([meta("last", str(i))]) for i in range(500)]
    await asyncio.gather(*futures)
    assert await meta_value(store, "last") == "499"


async def test_a_write_is_one_transaction(store: SQLiteStore) -> None:
    bad = store.write([meta("half", "1"), Op("set_meta", {"name": "x", "value": None})])
    with pytest.raises(CallError, match="Store write failed"):
        await bad
    assert await meta_value(store, "half") is None


async def test_a_failing_write_fails_only_its_own_writer(store: SQLiteStore) -> None:
    futures = []
    for i in range(50):
        if i % 10 == 3:
            # NOT NULL constraint: this writer's transaction fails.
            ops = [meta(f"bad{i}", "x"), Op("set_meta", {"name": f"null{i}", "value": None})]
        else:
            ops = [meta(f"good{i}", str(i))]
        futures.append(store.write(ops))
    results = await asyncio.gather(*futures, return_exceptions=True)
    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [3, 13, 23, 33, 43]
    assert all(isinstance(results[i], CallError) for i in failed)
    values = await all_meta(store)
    assert set(values) == {f"good{i}" for i in range(50) if i % 10 != 3}


async def test_an_unknown_query_fails_only_its_writer(store: SQLiteStore) -> None:
    good = store.write([meta("g", "1")])
    bad = store.write([Op("no_such_query", {})])
    await good
    with pytest.raises(CallError):
        await bad
    assert await meta_value(store, "g") == "1"


async def test_the_store_keeps_working_after_a_failed_write(store: SQLiteStore) -> None:
    with pytest.raises(CallError):
        await store.write([Op("set_meta", {"name": "n", "value": None})])
    await store.write([meta("after", "ok")])
    assert await meta_value(store, "after") == "ok"


async def test_an_empty_write_resolves(store: SQLiteStore) -> None:
    await store.write([])


# -- reads ------------------------------------------------------------------------------


async def test_fetch_named_and_fetch_sql(store: SQLiteStore) -> None:
    await store.write([meta("b", "2"), meta("a", "1")])
    assert await store.fetch("get_meta", name="a") == [{"value": "1"}]
    assert await store.fetch_one("get_meta", name="zzz") is None
    rows = await store.fetch_sql("SELECT name FROM meta WHERE value > ? ORDER BY name", ["0"])
    assert rows == [{"name": "a"}, {"name": "b"}]
    assert await store.fetch("get_counter", name="jobs") == [{"value": 0}]


async def test_counters_only_go_up(store: SQLiteStore) -> None:
    await store.write([Op("raise_counter", {"name": "jobs", "value": 10})])
    await store.write([Op("raise_counter", {"name": "jobs", "value": 4})])
    assert await store.fetch_one("get_counter", name="jobs") == {"value": 10}


# -- backup, close, reopen --------------------------------------------------------------


async def test_backup_is_a_valid_copy(store: SQLiteStore, tmp_path: Path) -> None:
    await asyncio.gather(*(store.write([meta(f"k{i}", str(i))]) for i in range(200)))
    dest = tmp_path / "backup.db"
    await store.backup(dest)
    assert read_file(dest, "PRAGMA integrity_check") == [("ok",)]
    assert read_file(dest, "SELECT name, value FROM meta ORDER BY name") == [
        (k, v) for k, v in sorted((await all_meta(store)).items())
    ]
    assert read_file(dest, "SELECT MAX(version) FROM schema_version") == [(SCHEMA_VERSION,)]
    # A backup is a database a store can open.
    copy = SQLiteStore(dest)
    await copy.open()
    assert await meta_value(copy, "k199") == "199"
    await copy.close()


async def test_close_flushes_pending_writes(db: Path) -> None:
    s = SQLiteStore(db)
    await s.open()
    futures = [s.write([meta(f"k{i}", str(i))]) for i in range(300)]
    await s.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert read_file(db, "SELECT COUNT(*) FROM meta") == [(300,)]


async def test_reopen_keeps_the_data(db: Path) -> None:
    s = SQLiteStore(db)
    await s.open()
    await s.write([meta("kept", "yes"), Op("raise_counter", {"name": "jobs", "value": 7})])
    await s.close()
    s = SQLiteStore(db)
    await s.open()
    assert await meta_value(s, "kept") == "yes"
    assert await s.fetch_one("get_counter", name="jobs") == {"value": 7}
    await s.close()


async def test_a_write_after_close_fails_at_once(db: Path) -> None:
    s = SQLiteStore(db)
    await s.open()
    await s.close()
    fut = s.write([meta("late", "1")])
    assert fut.done()
    with pytest.raises(CallError, match="closed"):
        await fut


async def test_close_twice_is_harmless(db: Path) -> None:
    s = SQLiteStore(db)
    await s.open()
    await s.close()
    await s.close()


async def test_a_write_during_close_is_committed_or_refused(db: Path) -> None:
    s = SQLiteStore(db)
    await s.open()
    # Hold the database's write lock so that the writer is busy with a first write...
    with closing(sqlite3.connect(db, isolation_level=None)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        first = s.write([meta("first", "1")])
        closing_task = asyncio.create_task(s.close())
        await next_turn()  # ...while close() has queued its stop marker and waits.
        during = s.write([meta("during", "1")])
        blocker.execute("ROLLBACK")
    await closing_task
    await first
    assert during.done()


async def test_restore_validates_then_takes_the_configuration(
    store: SQLiteStore, tmp_path: Path
) -> None:
    source = SQLiteStore(tmp_path / "source.db")
    await source.open()
    await source.write([admin_row(5, "admin5"), meta("restored", "yes")])
    await source.backup(tmp_path / "snapshot.db")
    await source.close()
    await store.write([admin_row(1, "before"), meta("kept", "no")])
    assert await store.restore(tmp_path / "snapshot.db") == SCHEMA_VERSION
    assert [u["username"] for u in await store.fetch("all_users")] == ["admin5"]
    assert await all_meta(store) == {"restored": "yes"}


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("UPDATE users SET username = 'Not A Name!'", "bad value in column 'username'"),
        ("UPDATE users SET locked = 1", "no usable administrator"),
        ("UPDATE users SET allowlist = '{}'", "bad value in column 'allowlist'"),
        ("DROP TABLE settings", "table 'settings' is missing"),
    ],
)
async def test_restore_refuses_a_bad_snapshot_and_changes_nothing(
    store: SQLiteStore, tmp_path: Path, tamper: str, reason: str
) -> None:
    """Store.restore checks every row itself before it takes anything."""
    source = SQLiteStore(tmp_path / "source.db")
    await source.open()
    await source.write([admin_row(5, "admin5")])
    snapshot = tmp_path / "snapshot.db"
    await source.backup(snapshot)
    await source.close()
    with closing(sqlite3.connect(snapshot)) as conn:
        conn.execute(tamper)
        conn.commit()
    await store.write([admin_row(1, "before"), meta("kept", "yes")])
    with pytest.raises(ValidationErrors, match=reason):
        await store.restore(snapshot)
    assert [u["username"] for u in await store.fetch("all_users")] == ["before"]
    assert await all_meta(store) == {"kept": "yes"}


def admin_row(user_id: int, username: str) -> Op:
    """An administrator who can log in (a snapshot without one is refused)."""
    return Op(
        "insert_user",
        {
            "id": user_id,
            "username": username,
            "full_name": "",
            "password_hash": "scrypt$16384$8$1$" + "A" * 24 + "$" + "A" * 44,
            "admin": 1,
            "locked": 0,
            "allowlist": jsonc.dumps([]),
            "created": 0,
            "twofactor": None,
            "email": "",
        },
    )


# -- choosing a store by URL ------------------------------------------------------------


async def test_open_store_by_url(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    store = open_store(f"sqlite://{tmp_path / 'x.db'}")
    assert isinstance(store, SQLiteStore)
    await store.open()
    await store.write([meta("a", "1")])
    await store.close()
    assert read_file(tmp_path / "x.db", "SELECT value FROM meta") == [("1",)]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("sqlite://relative/x.db", "absolute path"),
        ("postgres://db/x", "Unknown store"),
        ("x.db", "Unknown store"),
    ],
)
def test_a_bad_store_url_is_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(CallError, match=reason) as refused:
        open_store(url)
    assert refused.value.errno == errno.EINVAL


COUNT_TO_A_BILLION = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) "
    "SELECT count(*) FROM n"
)


async def test_a_scan_streams_its_rows_in_batches(store: SQLiteStore) -> None:
    await store.write([meta(f"k{i:03}", str(i)) for i in range(25)])
    batches: list[int] = []

    def consume(rows: list[Any]) -> bool:
        batches.append(len(rows))
        return len(batches) < 2  # enough after two batches

    await store.scan_sql("SELECT name FROM meta ORDER BY name", [], consume, batch_size=10)
    assert batches == [10, 10]


async def test_a_scan_stops_at_its_deadline_even_inside_a_statement(store: SQLiteStore) -> None:
    """A statement that works long before its first row (here, counting to a billion) is
    interrupted once the deadline passes; the reader then serves the next read."""
    with pytest.raises(TimeoutError):
        await store.scan_sql(COUNT_TO_A_BILLION, [], lambda rows: True, deadline=time.monotonic())
    await store.write([meta("after", "yes")])
    assert await meta_value(store, "after") == "yes"
