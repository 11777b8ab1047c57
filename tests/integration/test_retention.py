"""Which finished jobs the retention policy picks, on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from middlewared.jobs.store import JobStore
from middlewared.store.base import Op
from middlewared.store.sqlite import SQLiteStore

ROOT, ALICE, BOB = 1, 2, 3


@pytest.fixture
async def jobs(tmp_path: Path) -> AsyncIterator[JobStore]:
    store = SQLiteStore(tmp_path / "middlewared.db")
    await store.open()
    yield JobStore(store)
    await store.close()


async def add(jobs: JobStore, job_id: int, finished: int | None, owner: int | None = ROOT) -> None:
    """A job row of ``owner`` (a user id; None: the server's own); ``finished`` None: still
    waiting."""
    row = {
        "id": job_id,
        "method": f"t.job{job_id % 2}",
        "state": "WAITING" if finished is None else "SUCCESS",
        "owner": "someone",
        "owner_id": owner,
        "api_key_id": None,
        "origin": "call",
        "lock_key": None,
        "attempt": 1,
        "run_after": None,
        "description": None,
        "time_started": 0,
        "time_finished": finished,
        "progress_percent": None,
        "error": None,
        "retry_on_restart": 0,
        "record": "{}",
    }
    await jobs.store.write([Op("insert_job", row)])


async def expired(jobs: JobStore, before_ms: int, keep: int, limit: int = 10_000) -> list[int]:
    return [purged.id for purged in await jobs.expired(before_ms, keep, limit)]


async def test_jobs_that_finished_before_the_cutoff(jobs: JobStore) -> None:
    for job_id, finished in ((1, 100), (2, 300), (3, None), (4, 200), (5, 400)):
        await add(jobs, job_id, finished)
    assert await expired(jobs, before_ms=301, keep=100) == [1, 2, 4]
    assert await expired(jobs, before_ms=301, keep=100, limit=2) == [1, 4]


async def test_jobs_past_the_count_by_finishing_time(jobs: JobStore) -> None:
    # Ids and finishing order differ: a job may end long after a later one.
    for job_id, finished in ((1, 500), (2, 100), (3, None), (4, 300), (5, 200), (6, None)):
        await add(jobs, job_id, finished)
    assert await expired(jobs, before_ms=0, keep=2) == [2, 5]
    assert await expired(jobs, before_ms=0, keep=4) == []


async def test_a_store_with_fewer_ids_than_the_count_is_left_alone(jobs: JobStore) -> None:
    for job_id in range(10, 15):
        await add(jobs, job_id, 100 * job_id)
    assert await expired(jobs, before_ms=0, keep=5) == []
    assert await expired(jobs, before_ms=0, keep=4) == [10]
    await jobs.delete(list(range(10, 15)))
    assert await expired(jobs, before_ms=0, keep=0) == []


async def test_the_count_is_kept_per_owner(jobs: JobStore) -> None:
    """Changed: retention by count is per owner. Alice's flood of jobs purges her oldest
    ones, never Bob's nor the server's own (jobs without an owner count on their own)."""
    for job_id in range(1, 11):
        await add(jobs, job_id, 1000 + job_id, ALICE)
    await add(jobs, 11, 10, BOB)
    await add(jobs, 12, 20, BOB)
    await add(jobs, 13, 5, None)
    await add(jobs, 14, None, ALICE)  # still waiting: never purged
    assert await expired(jobs, before_ms=0, keep=3) == list(range(1, 8))
    assert await expired(jobs, before_ms=0, keep=1) == [*range(1, 10), 11]
    assert await expired(jobs, before_ms=0, keep=0) == [*range(1, 14)]
    # A batch takes some of them (the next batches take the rest).
    batch = await expired(jobs, before_ms=0, keep=3, limit=4)
    assert len(batch) == 4 and set(batch) <= set(range(1, 8))


async def test_a_purged_job_says_who_may_hear_of_it(jobs: JobStore) -> None:
    """REMOVED reaches only those who could read the job: its owner and method come along."""
    await add(jobs, 1, 100, ALICE)
    await add(jobs, 2, 200, None)
    purged = await jobs.expired(before_ms=1000, keep=100)
    assert [(p.id, p.owner_id, p.method) for p in purged] == [
        (1, ALICE, "t.job1"),
        (2, None, "t.job0"),
    ]
