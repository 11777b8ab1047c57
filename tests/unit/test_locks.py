"""Job locks: one job at a time per lock, in arrival order; and the queue's choice of the
waiting job an identical call is merged into."""

from __future__ import annotations

import asyncio
import errno
import itertools
from typing import Any

import pytest

from middlewared.auth.credentials import INTERNAL, CredentialKind, Credentials, Identity
from middlewared.errors import Busy
from middlewared.jobs.job import Job, JobState
from middlewared.jobs.locks import Locks
from middlewared.jobs.pipes import OutputPipe, Pipes
from middlewared.jobs.queue import MAX_MERGED_CALLS, LocalQueue
from middlewared.registry import JobOptions

KEY = "pool.import"


def person(name: str, user_id: int) -> Credentials:
    identity = Identity(CredentialKind.LOGIN_PASSWORD, user_id)
    return Credentials(
        name, False, CredentialKind.LOGIN_PASSWORD, ("*",), None, None, user_id, identity
    )


ALICE = person("alice", 2)
BOB = person("bob", 3)


def make_job(
    job_id: int,
    args: list[Any] | None = None,
    creds: Credentials = INTERNAL,
    method: str = "test.locked",
) -> Job:
    args = [] if args is None else args
    return Job(job_id, method, JobOptions(lock=KEY), args, list(args), creds, lock_key=KEY)


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


async def test_waiting_count_and_waiting_in_arrival_order() -> None:
    locks = Locks()
    assert (locks.waiting_count(KEY), locks.waiting(KEY)) == (0, [])  # no queue at all
    jobs = enqueue(locks, 1, 2, 3)
    assert locks.waiting_count(KEY) == 2  # the first runs
    assert locks.waiting(KEY) == jobs[1:]
    locks.release(KEY, jobs[1])
    assert locks.waiting(KEY) == [jobs[2]]
    # A copy: changing it changes nothing.
    locks.waiting(KEY).clear()
    assert locks.waiting_count(KEY) == 1


# -- merging (LocalQueue.merge_target) ----------------------------------------------------
#
# Changed on purpose (hardening defect 7): a call used to be merged into the last waiting
# job whatever it was. Now it is merged only when the lock's queue is full AND a waiting job
# is the same call (method and arguments) of the same owner (user id); otherwise it is
# refused with EBUSY. A job answers at most MAX_MERGED_CALLS calls.


class Ids:
    def __init__(self) -> None:
        self._next = itertools.count(1)

    def allocate_id(self) -> int:
        return next(self._next)


def queued(queue: LocalQueue, *calls: tuple[list[Any], Credentials]) -> list[Job]:
    """Jobs added in this order under KEY (the first runs, the rest wait)."""
    jobs = [make_job(queue.allocate_id(), args, creds) for args, creds in calls]
    for job in jobs:
        queue.add(job)
    return jobs


@pytest.mark.parametrize("size", [None, 1, 3])
async def test_no_merge_while_the_queue_has_room(size: int | None) -> None:
    queue = LocalQueue(Ids())
    call = make_job(99, ["a"], ALICE)
    assert queue.merge_target(call, size) is None  # no queue at all
    queued(queue, (["a"], ALICE))  # running, none waiting
    assert queue.merge_target(call, size) is None


async def test_unbounded_queue_never_merges() -> None:
    queue = LocalQueue(Ids())
    queued(queue, *[(["a"], ALICE)] * 100)
    assert queue.merge_target(make_job(999, ["a"], ALICE), None) is None


async def test_queue_size_one_merges_the_same_call_into_the_single_waiter() -> None:
    queue = LocalQueue(Ids())
    jobs = queued(queue, (["a"], ALICE), (["a"], ALICE))
    assert queue.merge_target(make_job(99, ["a"], ALICE), 1) is jobs[1]


async def test_a_full_queue_merges_into_the_last_waiting_same_call() -> None:
    queue = LocalQueue(Ids())
    jobs = queued(queue, (["run"], ALICE), (["a"], ALICE), (["b"], ALICE))
    assert queue.merge_target(make_job(99, ["a"], ALICE), 3) is None  # two waiting: room
    jobs += queued(queue, (["a"], ALICE))
    assert queue.merge_target(make_job(99, ["a"], ALICE), 3) is jobs[3]  # the last "a"
    assert queue.merge_target(make_job(99, ["b"], ALICE), 3) is jobs[2]  # the only "b"


@pytest.mark.parametrize(
    ("args", "creds", "method"),
    [
        (["other"], ALICE, "test.locked"),  # other arguments
        (["a"], BOB, "test.locked"),  # another user
        (["a"], ALICE, "test.other"),  # another method under the same lock
    ],
    ids=["arguments", "owner", "method"],
)
async def test_a_full_queue_refuses_any_other_call(
    args: list[Any], creds: Credentials, method: str
) -> None:
    queue = LocalQueue(Ids())
    queued(queue, (["run"], ALICE), (["a"], ALICE))
    with pytest.raises(Busy) as refused:
        queue.merge_target(make_job(99, args, creds, method), 1)
    assert refused.value.errno == errno.EBUSY
    assert "only identical calls are merged" in refused.value.reason


async def test_a_call_that_opens_pipes_is_never_merged() -> None:
    queue = LocalQueue(Ids())
    queued(queue, (["run"], ALICE), (["a"], ALICE))
    call = make_job(99, ["a"], ALICE)
    call.pipes = Pipes(output=OutputPipe(buffered=False))  # a download's
    assert queue.merge_target(call, 1) is None


async def test_a_job_answers_at_most_max_merged_calls() -> None:
    queue = LocalQueue(Ids())
    _, waiting = queued(queue, (["run"], ALICE), (["a"], ALICE))
    waiting.message_ids = list(range(MAX_MERGED_CALLS - 1))
    assert queue.merge_target(make_job(99, ["a"], ALICE), 1) is waiting
    waiting.message_ids.append("last")
    with pytest.raises(Busy):
        queue.merge_target(make_job(99, ["a"], ALICE), 1)


async def test_queue_size_zero_refuses_while_the_lock_is_busy() -> None:
    queue = LocalQueue(Ids())
    call = make_job(99, ["a"], ALICE)
    assert queue.merge_target(call, 0) is None  # free: it runs
    (first,) = queued(queue, (["a"], ALICE))
    with pytest.raises(Busy) as refused:
        queue.merge_target(call, 0)
    assert refused.value.errno == errno.EBUSY
    queue.release(first)
    assert queue.merge_target(call, 0) is None


async def test_a_released_waiter_is_no_longer_the_merge_target() -> None:
    queue = LocalQueue(Ids())
    jobs = queued(queue, (["run"], ALICE), (["a"], ALICE), (["a"], ALICE), (["a"], ALICE))
    queue.release(jobs[3])
    assert queue.merge_target(make_job(99, ["a"], ALICE), 3) is None  # room again
    assert queue.merge_target(make_job(99, ["a"], ALICE), 2) is jobs[2]
    queue.release(jobs[2])
    assert queue.merge_target(make_job(99, ["a"], ALICE), 1) is jobs[1]


async def test_an_ended_waiter_is_not_a_merge_target() -> None:
    queue = LocalQueue(Ids())
    _, waiting = queued(queue, (["run"], ALICE), (["a"], ALICE))
    waiting.transition(JobState.ABORTED)  # ended, not yet released by its task
    with pytest.raises(Busy):
        queue.merge_target(make_job(99, ["a"], ALICE), 1)
