"""Fill a middlewared data dir with finished jobs fast: rows written straight into its SQLite
file (the schema the server created), shaped like rows the server itself stored."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

# Each method's progress wording; only audit.export's has an "x" in it (1 job in 20).
METHODS = {
    "filesystem.copy": "copying",
    "filesystem.put": "uploading",
    "filesystem.get": "downloading",
    "config.save": "saving",
    "pool.scrub": "scrubbing",
    "pool.resilver": "resilvering",
    "replication.run": "replicating",
    "cloudsync.sync": "syncing",
    "snapshot.create": "snapshotting",
    "snapshot.prune": "pruning",
    "update.download": "fetching",
    "certificate.renew": "renewing",
    "smart.test": "testing",
    "rsync.run": "mirroring",
    "vm.start": "starting",
    "app.upgrade": "upgrading",
    "dataset.create": "creating",
    "dataset.delete": "deleting",
    "share.reload": "reloading",
    "audit.export": "exporting",
}
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


def description(i: int) -> str:
    """Job ``i``'s last progress words: its method's verb and a step, "exporting 7 of 1000"
    (a field of the stored JSON record, not a column)."""
    return f"{VERBS[i % len(VERBS)]} {i % 1000} of 1000"


NAMES = list(METHODS)
VERBS = list(METHODS.values())


def _rows(
    first: int, count: int, shapes: dict[str, dict[str, Any]], columns: list[str]
) -> Iterator[tuple[Any, ...]]:
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
        method = NAMES[i % len(NAMES)]
        record.update(
            id=job_id,
            method=method,
            state=state,
            message_ids=[job_id],
            time_started={"$date": started},
            time_finished={"$date": finished},
            progress={"percent": 100.0, "description": description(i), "extra": None},
        )
        if state == "ABORTED":
            record["error"] = "Job aborted"
        # Every other column as the server stored it for the template row.
        row = {
            **shape,
            "id": job_id,
            "method": method,
            "state": state,
            "time_started": started,
            "time_finished": finished,
            "progress_percent": 100.0,
            "error": record["error"],
            "record": orjson.dumps(record).decode(),
        }
        yield tuple(row[c] for c in columns)


def generate(db: Path, count: int) -> float:
    """Append ``count`` finished jobs after the stored ones; returns the seconds it took."""
    t0 = time.perf_counter()
    shapes = templates(db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        first = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM jobs").fetchone()[0]) + 1
        # The columns the server's schema has now (generated ones are not listed).
        columns = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
        names = ", ".join(f'"{c}"' for c in columns)
        sql = f"INSERT INTO jobs ({names}) VALUES ({', '.join('?' * len(columns))})"
        rows = _rows(first, count, shapes, columns)
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
