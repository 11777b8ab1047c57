"""Job locks: one job at a time per lock, in arrival order, with merge into the last waiter."""

from __future__ import annotations

import asyncio

import pytest

from middlewared.auth.credentials import INTERNAL
from middlewared.jobs.job import Job
from middlewared.jobs.locks import Locks
from middlewared.registry import JobOptions

KEY = "pool.import"


def make_job(job_id: int) -> Job:
    return Job(job_id, "test.locked", JobOptions(lock=KEY), [], [], INTERNAL, lock_key=KEY)


def enqueue(locks: Locks, *ids: int, key: str = KEY) -> list[Job]:
    jobs = [make_job(i) for i in ids]
    for job in jobs:
        locks.enqueue(key, job)
    return jobs


def running(locks: Locks, key: str = KEY) -> int | None:
    q = locks.queue(key)
    return None if q is None or q.running is None else q.running.id


def waiting(locks: Locks, key: str = KEY) -> list[int]:
    q = locks.queue(key)
    return [] if q is None else [j.id for j in q.waiting]


async def test_first_job_runs_at_once_the_rest_wait_in_order() -> None:
    locks = Locks()
    enqueue(locks, 1, 2, 3)
    assert running(locks) == 1
    assert waiting(locks) == [2, 3]


async def test_turns_come_in_arrival_order() -> None:
    locks = Locks()
    jobs = enqueue(locks, *range(1, 11))
    order: list[int] = []

    async def worker(job: Job) -> None:
        await locks.turn(KEY, job)
        order.append(job.id)
        # Only one job of the lock holds it at a time.
        assert running(locks) == job.id
        locks.release(KEY, job)

    # Started in reverse so that task order cannot explain the result.
    await asyncio.gather(*(worker(j) for j in reversed(jobs)))
    assert order == list(range(1, 11))
    assert locks.queue(KEY) is None


async def test_release_of_the_running_job_gives_the_next_its_turn() -> None:
    locks = Locks()
    first, second = enqueue(locks, 1, 2)
    await locks.turn(KEY, first)
    turn = asyncio.create_task(locks.turn(KEY, second))
    locks.release(KEY, first)
    await turn
    assert running(locks) == 2
    assert waiting(locks) == []


async def test_release_of_a_waiting_job_takes_it_out_of_the_line() -> None:
    locks = Locks()
    first, second, third = enqueue(locks, 1, 2, 3)
    locks.release(KEY, second)
    assert running(locks) == 1
    assert waiting(locks) == [3]
    locks.release(KEY, first)
    assert running(locks) == 3
    await locks.turn(KEY, third)


async def test_release_of_an_unknown_job_or_key_is_harmless() -> None:
    locks = Locks()
    enqueue(locks, 1)
    locks.release(KEY, make_job(99))
    locks.release("other", make_job(98))
    assert running(locks) == 1


async def test_locks_are_independent() -> None:
    locks = Locks()
    enqueue(locks, 1, 2, key="a")
    enqueue(locks, 3, key="b")
    assert (running(locks, "a"), running(locks, "b")) == (1, 3)
    assert waiting(locks, "a") == [2]


async def test_busy() -> None:
    locks = Locks()
    assert not locks.busy(KEY)
    first, second = enqueue(locks, 1, 2)
    assert locks.busy(KEY)
    locks.release(KEY, first)
    assert locks.busy(KEY)
    locks.release(KEY, second)
    assert not locks.busy(KEY)
    assert locks.queue(KEY) is None


@pytest.mark.parametrize("size", [None, 0, 1, 3])
async def test_no_merge_while_the_queue_has_room(size: int | None) -> None:
    locks = Locks()
    assert locks.last_waiting(KEY, size) is None  # no queue at all
    enqueue(locks, 1)  # running, none waiting
    assert locks.last_waiting(KEY, size) is None


async def test_unbounded_queue_never_merges() -> None:
    locks = Locks()
    enqueue(locks, *range(1, 101))
    assert locks.last_waiting(KEY, None) is None


async def test_queue_size_one_merges_into_the_single_waiter() -> None:
    locks = Locks()
    enqueue(locks, 1, 2)
    target = locks.last_waiting(KEY, 1)
    assert target is not None and target.id == 2


async def test_queue_size_three_merges_into_the_last_of_three() -> None:
    locks = Locks()
    enqueue(locks, 1, 2, 3)
    assert locks.last_waiting(KEY, 3) is None  # two waiting: room for one more
    enqueue(locks, 4)
    target = locks.last_waiting(KEY, 3)
    assert target is not None and target.id == 4


async def test_queue_size_zero_has_no_waiter_to_merge_into() -> None:
    # lock_queue_size=0 refuses with EBUSY (the manager asks busy()); nothing to merge into.
    locks = Locks()
    enqueue(locks, 1)
    assert locks.busy(KEY)
    assert locks.last_waiting(KEY, 0) is None


async def test_a_released_waiter_is_no_longer_the_merge_target() -> None:
    locks = Locks()
    jobs = enqueue(locks, 1, 2, 3)
    locks.release(KEY, jobs[2])
    assert locks.last_waiting(KEY, 2) is None
    target = locks.last_waiting(KEY, 1)
    assert target is not None and target.id == 2
