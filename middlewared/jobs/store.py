"""Jobs in the store: rows in, records out; the store itself knows nothing of jobs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

from middlewared import jsonc
from middlewared.jobs.job import Job, Snapshot
from middlewared.query.sql import Column
from middlewared.store.base import Op, Store

log = logging.getLogger(__name__)


class Purged(NamedTuple):
    """A job retention removes: who could read it is who hears of it."""

    id: int
    owner_id: int | None
    method: str
    key_id: int | None


class JobRef(NamedTuple):
    """What decides who may see a stored job."""

    owner_id: int | None
    method: str
    key_id: int | None


class Unfinished(NamedTuple):
    """A job found waiting or running in the store at start: the server stopped under it."""

    record: dict[str, Any]
    retry_on_restart: bool
    owner_id: int | None


# The record fields a filter or an order can use in SQL, and their columns.
COLUMNS: dict[str, Column] = {
    "id": Column("id", "int", nullable=False),
    "method": Column("method", "text", nullable=False),
    "state": Column("state", "text", nullable=False),
    "description": Column("description", "text"),
    "time_started": Column("time_started", "date"),
    "time_finished": Column("time_finished", "date"),
    "progress.percent": Column("progress_percent", "float"),
    "error": Column("error", "text"),
    "credentials.data.username": Column("owner", "text"),
}
# Columns holding text from the record.
TEXT_COLUMNS = ("method", "state", "owner", "description", "error")


def _row(job: Job, snap: Snapshot) -> dict[str, Any]:
    """The row of ``snap``, read from the job itself (the snapshot was just taken from it;
    three rows a job make this worth not digging through the record)."""
    row = {
        "id": job.id,
        "method": job.method,
        "state": job.state.value,
        "owner": job.credentials.username,
        "owner_id": job.owner_id,
        "api_key_id": job.credentials.api_key_id,
        "origin": job.origin,
        "lock_key": job.lock_key,
        "attempt": job.attempt,
        "run_after": job.run_after,
        "description": job.description,
        "time_started": job.time_started,
        "time_finished": job.time_finished,
        "progress_percent": job.progress["percent"],
        "error": job.error,
        "retry_on_restart": int(job.options.retry_on_restart),
        "record": snap.encoded,
    }
    if "\\ud" in snap.encoded:
        _replace_surrogates(row)
    return row


def _record_row(
    record: dict[str, Any], owner_id: int | None, retry: bool, encoded: str
) -> dict[str, Any]:
    """The columns of a job's row: the queryable fields, then the whole record (encoded)."""
    row = {
        "id": record["id"],
        "method": record["method"],
        "state": record["state"],
        "owner": record["credentials"]["data"]["username"],
        "owner_id": owner_id,
        "api_key_id": ((record["credentials"]["data"].get("api_key") or {}).get("id")),
        "origin": record.get("origin"),
        "lock_key": None,
        "attempt": record.get("attempt", 1),
        "run_after": None,
        "description": record["description"],
        "time_started": (record["time_started"] or {}).get("$date"),
        "time_finished": (record["time_finished"] or {}).get("$date"),
        "progress_percent": record["progress"]["percent"],
        "error": record["error"],
        "retry_on_restart": int(retry),
        "record": encoded,
    }
    if "\\ud" in encoded:
        _replace_surrogates(row)
    return row


def _replace_surrogates(row: dict[str, Any]) -> None:
    """A lone surrogate somewhere (JSON escapes them; orjson writes nothing else so): the
    record keeps it exactly; a text column, which must be UTF-8, gets U+FFFD."""
    for name in TEXT_COLUMNS:
        if isinstance(row[name], str):
            row[name] = jsonc.replace_surrogates(row[name])


def _log_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("job store write failed: %s", fut.exception())


class JobStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._next_id = 1

    async def load_counter(self) -> None:
        """Never move the counter back: ids handed out but not yet stored stay taken."""
        row = await self.store.fetch_one("get_counter", name="jobs")
        self._next_id = max(self._next_id, int(row["value"]) + 1 if row else 1)

    def allocate_id(self) -> int:
        """Ids are never reused: the counter is raised in the insert's own transaction."""
        job_id = self._next_id
        self._next_id += 1
        return job_id

    def insert(self, job: Job, snap: Snapshot, extra: Sequence[Op] = ()) -> asyncio.Future[None]:
        """The job's first row, with ``extra`` writes in the same transaction (a trigger's
        fire: the fire and the job it starts are stored together or not at all)."""
        return self.store.write(
            [
                Op("insert_job", _row(job, snap)),
                Op("raise_counter", {"name": "jobs", "value": job.id}),
                *extra,
            ]
        )

    def reserve(self, job_id: int) -> None:
        """Take an id for good without storing a job (transient jobs)."""
        fut = self.store.write([Op("raise_counter", {"name": "jobs", "value": job_id})])
        fut.add_done_callback(_log_failure)

    def update(self, job: Job, snap: Snapshot) -> asyncio.Future[None]:
        # Every update sets the same columns: one later in the same commit replaces it.
        fut = self.store.write([Op("update_job", _row(job, snap), ("job", job.id))])
        fut.add_done_callback(_log_failure)
        return fut

    async def get(self, job_id: int) -> dict[str, Any] | None:
        row = await self.store.fetch_one("get_job", id=job_id)
        return None if row is None else _record(row)

    async def unfinished(self) -> list[Unfinished]:
        rows = await self.store.fetch("unfinished_jobs")
        return [Unfinished(_record(r), bool(r["retry_on_restart"]), r["owner_id"]) for r in rows]

    def save_record(self, record: dict[str, Any], owner_id: int | None) -> asyncio.Future[None]:
        """Write a record that has no live Job (recovery after a restart)."""
        row = _record_row(record, owner_id, False, jsonc.dumps(record))
        return self.store.write([Op("update_job", row)])

    async def ref(self, job_id: int) -> JobRef | None:
        row = await self.store.fetch_one("job_ref", id=job_id)
        return None if row is None else JobRef(row["owner_id"], row["method"], row["api_key_id"])

    async def expired(self, before_ms: int, keep: int, limit: int = 10_000) -> list[Purged]:
        """Finished jobs past the retention policy: finished before ``before_ms``, or past the
        ``keep`` of their owner that finished last (per owner: one user's flood of jobs
        never purges another's). Both walk an index on the finishing time."""
        rows = await self.store.fetch("expired_job_ids", before=before_ms, limit=limit)
        if await self._may_hold_more_than(keep):
            for owner in await self.store.fetch("job_owners"):
                rows += await self.store.fetch(
                    "finished_job_ids_beyond", owner_id=owner["owner_id"], keep=keep, limit=limit
                )
            rows += await self.store.fetch(
                "finished_job_ids_beyond_no_owner", keep=keep, limit=limit
            )
        found = {
            int(r["id"]): Purged(int(r["id"]), r["owner_id"], r["method"], r["api_key_id"])
            for r in rows
        }
        return [found[i] for i in sorted(found)][:limit]

    async def _may_hold_more_than(self, count: int) -> bool:
        """Whether more than ``count`` jobs may be stored. Ids are unique, so ids that span
        at most ``count`` mean at most ``count`` jobs: the usual case, answered from the two
        ends of the id index instead of by walking past ``count`` entries."""
        row = await self.store.fetch_one("job_id_span")
        return row is not None and int(row["span"] or 0) > count

    async def delete(self, ids: list[int]) -> None:
        await self.store.write([Op("delete_job", {"id": i}) for i in ids])


def _record(row: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = jsonc.loads(row["record"])
    return record
