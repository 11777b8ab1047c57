"""Fill a middlewared data dir with finished jobs fast: rows written straight into its SQLite
file (the schema the server created), shaped like rows the server itself stored."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

COLUMNS = (
    "id",
    "method",
    "state",
    "owner",
    "description",
    "time_started",
    "time_finished",
    "progress_percent",
    "error",
    "retry_on_restart",
    "record",
)
METHODS = [
    "filesystem.copy",
    "filesystem.put",
    "filesystem.get",
    "config.save",
    "pool.scrub",
    "pool.resilver",
    "replication.run",
    "cloudsync.sync",
    "snapshot.create",
    "snapshot.prune",
    "update.download",
    "certificate.renew",
    "smart.test",
    "rsync.run",
    "vm.start",
    "app.upgrade",
    "dataset.create",
    "dataset.delete",
    "share.reload",
    "audit.export",
]
BATCH = 20_000
DAY_MS = 86_400_000


def templates(db: Path) -> dict[str, dict[str, Any]]:
    """A real stored row per final state the server wrote (SUCCESS and FAILED at least)."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM jobs WHERE state IN ('SUCCESS', 'FAILED') ORDER BY id"
        ).fetchall()
    found = {r["state"]: dict(r) for r in rows}
    if {"SUCCESS", "FAILED"} - set(found):
        raise ValueError(f"{db} needs a finished and a failed job to copy, has {sorted(found)}")
    return found


def _state(i: int) -> str:
    """2% failed, 1% aborted, the rest succeeded."""
    if i % 50 == 0:
        return "FAILED"
    return "ABORTED" if i % 100 == 1 else "SUCCESS"


def _rows(first: int, count: int, shapes: dict[str, dict[str, Any]]) -> Iterator[tuple[Any, ...]]:
    now = int(time.time() * 1000)
    # Spread over the last six days, oldest first, as ids grow.
    step = 6 * DAY_MS / max(1, count)
    records = {s: orjson.loads(r["record"]) for s, r in shapes.items()}
    for i in range(count):
        job_id = first + i
        state = _state(i)
        shape = shapes["FAILED" if state == "ABORTED" else state]
        record = dict(records["FAILED" if state == "ABORTED" else state])
        started = now - 6 * DAY_MS + int(i * step)
        finished = started + 5 + i % 2000
        method = METHODS[i % len(METHODS)]
        record.update(
            id=job_id,
            method=method,
            state=state,
            message_ids=[job_id],
            time_started={"$date": started},
            time_finished={"$date": finished},
        )
        if state == "ABORTED":
            record["error"] = "Job aborted"
        yield (
            job_id,
            method,
            state,
            shape["owner"],
            shape["description"],
            started,
            finished,
            record["progress"]["percent"],
            record["error"],
            0,
            orjson.dumps(record).decode(),
        )


def generate(db: Path, count: int) -> float:
    """Append ``count`` finished jobs after the stored ones; returns the seconds it took."""
    t0 = time.perf_counter()
    shapes = templates(db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        first = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0]) + 1
        sql = f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        rows = _rows(first, count, shapes)
        conn.execute("BEGIN")
        while batch := [row for _, row in zip(range(BATCH), rows, strict=False)]:
            conn.executemany(sql, batch)
        last = first + count - 1
        conn.execute(
            "UPDATE counters SET value = ? WHERE name = 'jobs' AND value < ?", (last, last)
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.perf_counter() - t0
