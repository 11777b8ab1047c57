"""Which finished jobs the retention policy picks, on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from middlewared.jobs.store import JobStore
from middlewared.store.base import Op
from middlewared.store.sqlite import SQLiteStore


@pytest.fixture
async def jobs(tmp_path: Path) -> AsyncIterator[JobStore]:
    store = SQLiteStore(tmp_path / "middlewared.db")
    await store.open()
    yield JobStore(store)
    await store.close()


async def add(jobs: JobStore, job_id: int, finished: int | None) -> None:
    """A job row; ``finished`` None: still waiting."""
    row = {
        "id": job_id,
        "method": "t.job",
        "state": "WAITING" if finished is None else "SUCCESS",
        "owner": "root",
        "description": None,
        "time_started": 0,
        "time_finished": finished,
        "progress_percent": None,
        "error": None,
        "retry_on_restart": 0,
        "record": "{}",
    }
    await jobs.store.write([Op("insert_job", row)])


async def test_jobs_that_finished_before_the_cutoff(jobs: JobStore) -> None:
    for job_id, finished in ((1, 100), (2, 300), (3, None), (4, 200), (5, 400)):
        await add(jobs, job_id, finished)
    assert await jobs.expired_ids(before_ms=301, keep=100) == [1, 2, 4]
    assert await jobs.expired_ids(before_ms=301, keep=100, limit=2) == [1, 4]


async def test_jobs_past_the_count_by_finishing_time(jobs: JobStore) -> None:
    # Ids and finishing order differ: a job may end long after a later one.
    for job_id, finished in ((1, 500), (2, 100), (3, None), (4, 300), (5, 200), (6, None)):
        await add(jobs, job_id, finished)
    assert await jobs.expired_ids(before_ms=0, keep=2) == [2, 5]
    assert await jobs.expired_ids(before_ms=0, keep=4) == []


async def test_a_store_with_fewer_ids_than_the_count_is_left_alone(jobs: JobStore) -> None:
    for job_id in range(10, 15):
        await add(jobs, job_id, 100 * job_id)
    assert await jobs.expired_ids(before_ms=0, keep=5) == []
    assert await jobs.expired_ids(before_ms=0, keep=4) == [10]
    await jobs.delete(list(range(10, 15)))
    assert await jobs.expired_ids(before_ms=0, keep=0) == []
