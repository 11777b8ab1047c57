"""The job engine on a real SQLite file: events, persistence, locks, merges, limits, abort,
timeout, retries, recovery after a crash, shutdown, transient jobs and who sees which event."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import inspect
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import pytest

from middlewared import jsonc
from middlewared.auth.credentials import CredentialKind, Credentials, Identity
from middlewared.auth.visibility import Visibility
from middlewared.errors import Busy, CallError, ValidationErrors
from middlewared.events.bus import ADDED, CHANGED, Event, EventBus, Subscription
from middlewared.jobs.engine import COLLECTION, JobAborted, JobEngine
from middlewared.jobs.files import JobFiles
from middlewared.jobs.job import Job, JobState
from middlewared.jobs.queue import MAX_MERGED_CALLS
from middlewared.jobs.recovery import recover
from middlewared.jobs.store import JobStore
from middlewared.registry import JobOptions, MethodSpec, RetryPolicy
from middlewared.store.sqlite import SQLiteStore


def person(name: str, user_id: int, admin: bool = False) -> Credentials:
    """A user as the directory resolves a password login of theirs."""
    identity = Identity(CredentialKind.LOGIN_PASSWORD, user_id)
    kind = CredentialKind.LOGIN_PASSWORD
    return Credentials(name, admin, kind, ("t.*",), None, None, user_id, identity)


ROOT = person("root", 1, admin=True)
ALICE = person("alice", 2)
BOB = person("bob", 3)
# Who sees a job: its owner if the method is theirs to see, and full admins (the sessions'
# rule). No method here is open to every identity.
RULES = Visibility(lambda method: False)

Handler = Callable[[Job], Awaitable[Any]]


class Gates:
    """asyncio.Events by name, created on first use."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def __getitem__(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())


class Sink:
    """A subscription's sink as a session of ``creds`` would be: records the events it may
    see; tests wait until a condition holds."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds
        self.events: list[Event] = []
        self._pushed = asyncio.Event()

    def may_see(self, event: Event) -> bool:
        return RULES.job(self.creds, event.owner, event.method, event.owner_key)

    def push_event(self, event: Event) -> None:
        self.events.append(event)
        self._pushed.set()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._pushed.clear()
            await self._pushed.wait()

    def of(self, job_id: int) -> list[Event]:
        return [e for e in self.events if e.id == job_id]

    def states(self, job_id: int) -> list[tuple[str, str]]:
        return [(e.msg, (e.fields or {})["state"]) for e in self.of(job_id)]


class Methods:
    """The ``invoke`` callable: runs the handler registered for the job's method and keeps
    track of which jobs ran and how many at once."""

    def __init__(self, gates: Gates) -> None:
        self.gates = gates
        # By method; any other method runs ``gated``.
        self.handlers: dict[str, Handler] = {}
        self.ran: list[int] = []
        self.active = 0
        self.max_active = 0

    async def __call__(self, job: Job) -> Any:
        self.ran.append(job.id)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await self.handlers.get(job.method, self.gated)(job)
        finally:
            self.active -= 1

    async def gated(self, job: Job) -> Any:
        """Say it started, wait for its gate (its first argument), return its argument."""
        name = str(job.arguments[0])
        self.gates[f"{name}.started"].set()
        await self.gates[name].wait()
        return name


async def _unused(*args: Any) -> None:
    """The engine never calls a spec's func: ``invoke`` does."""


def spec(name: str = "t.gated", **options: Any) -> MethodSpec:
    return MethodSpec(name, _unused, (), {}, "A test job.", job=JobOptions(**options))


class Engine:
    """A JobEngine on a store file, with an admin sink on its bus."""

    def __init__(self, db: Path, logs: Path, gates: Gates, **engine: Any) -> None:
        self.db = db
        self.gates = gates
        self.store = SQLiteStore(db)
        self.job_store = JobStore(self.store)
        self.bus = EventBus()
        self.methods = Methods(gates)
        logs.mkdir(exist_ok=True)
        self.files = JobFiles(logs)
        self.jobs = JobEngine(self.job_store, self.bus, self.files, self.methods, **engine)
        self.sink = self.subscribe(ROOT)
        # The users the directory knows: what recovery resolves a job's identity with.
        self.users = {c.user_id: c for c in (ROOT, ALICE, BOB)}

    def subscribe(self, creds: Credentials) -> Sink:
        sink = Sink(creds)
        self.bus.subscribe(Subscription(f"sub-{creds.username}", COLLECTION, sink))
        return sink

    def resolve(self, identity: Identity) -> Credentials | None:
        creds = self.users.get(identity.user_id)
        if creds is None:
            return None
        return dataclasses.replace(creds, kind=identity.kind, identity=identity)

    async def open(self, lookup: Callable[[str], MethodSpec | None] = lambda name: None) -> int:
        await self.store.open()
        return await recover(self.jobs, lookup, self.resolve)

    async def submit(
        self,
        method: MethodSpec,
        *args: Any,
        creds: Credentials = ROOT,
        message_id: Any = None,
        origin: str = "call",
    ) -> Job:
        return await self.jobs.submit(
            method, list(args), list(args), creds, message_id, origin=origin
        )

    async def started(self, name: str) -> None:
        await self.gates[f"{name}.started"].wait()

    async def flushed(self) -> None:
        """Every write queued so far is committed (the store applies writes in order)."""
        await self.store.write([])

    async def stored(self, job_id: int) -> dict[str, Any] | None:
        await self.flushed()
        return await self.job_store.get(job_id)

    async def columns(self, job_id: int) -> dict[str, Any]:
        await self.flushed()
        rows = await self.store.fetch_sql(
            "SELECT id, method, state, owner, owner_id, origin, lock_key, attempt, run_after, "
            "description, time_started, time_finished, progress_percent, error, "
            "retry_on_restart FROM jobs WHERE id = ?",
            [job_id],
        )
        return rows[0]


@pytest.fixture
def gates() -> Gates:
    return Gates()


@pytest.fixture
async def eng(tmp_path: Path, gates: Gates) -> AsyncIterator[Engine]:
    engine = Engine(tmp_path / "middlewared.db", tmp_path / "logs", gates)
    await engine.open()
    yield engine
    await engine.jobs.shutdown(0)
    await engine.store.close()


async def next_turn() -> None:
    """Let the callbacks already scheduled run (a task just created takes its first step)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    loop.call_soon(fut.set_result, None)
    await fut


async def outcome(job: Job) -> Any:
    """The job's result, or the exception it ended with."""
    try:
        return await job.done
    except Exception as e:
        return e


# -- a job's life -----------------------------------------------------------------------


async def test_added_then_running_then_success(eng: Engine) -> None:
    job = await eng.submit(spec(), "a", message_id=11)
    await eng.started("a")
    eng.gates["a"].set()
    assert await job.done == "a"
    await eng.sink.wait_for(lambda: len(eng.sink.of(job.id)) == 3)
    assert eng.sink.states(job.id) == [
        (ADDED, "WAITING"),
        (CHANGED, "RUNNING"),
        (CHANGED, "SUCCESS"),
    ]
    added = eng.sink.of(job.id)[0]
    assert added.fields is not None and added.fields["message_ids"] == [11]
    assert added.collection == COLLECTION
    final = eng.sink.of(job.id)[-1].fields
    assert final is not None
    assert (final["result"], final["progress"]["percent"]) == ("a", 100.0)
    assert job.id not in eng.jobs.live


async def test_a_job_that_never_waits_is_announced_and_stored_as_it_ended(eng: Engine) -> None:
    async def quick(job: Job) -> str:
        return "done"

    eng.methods.handlers["t.quick"] = quick
    job = await eng.submit(spec("t.quick"))
    assert await job.done == "done"
    await eng.sink.wait_for(lambda: eng.sink.states(job.id)[-1:] == [(CHANGED, "SUCCESS")])
    # Its RUNNING state was never visible to anyone: nothing says it.
    assert eng.sink.states(job.id) == [(ADDED, "WAITING"), (CHANGED, "SUCCESS")]
    assert await eng.stored(job.id) == job.record(admin=True)


async def test_the_stored_row_matches_the_record(eng: Engine) -> None:
    locked = spec(description="Doing a", lock="L")
    job = await eng.submit(locked, "a", creds=ALICE, message_id="m1", origin="bulk:7")
    await eng.started("a")
    assert await eng.stored(job.id) == job.record(admin=True)
    assert (await eng.columns(job.id))["state"] == "RUNNING"
    eng.gates["a"].set()
    await job.done
    record = await eng.stored(job.id)
    assert record == job.record(admin=True)
    assert record is not None and record["state"] == "SUCCESS"
    assert await eng.columns(job.id) == {
        "id": job.id,
        "method": "t.gated",
        "state": "SUCCESS",
        "owner": "alice",
        # Jobs belong to a user id; they say what started them and carry their lock.
        "owner_id": ALICE.user_id,
        "origin": "bulk:7",
        "lock_key": "L",
        "attempt": 1,
        "run_after": None,
        "description": "Doing a",
        "time_started": job.time_started,
        "time_finished": job.time_finished,
        "progress_percent": 100.0,
        "error": None,
        "retry_on_restart": 0,
    }
    assert (record["origin"], record["attempt"], record["result_size"]) == ("bulk:7", 1, None)


async def test_ids_increase_and_are_stored_with_the_counter(eng: Engine) -> None:
    jobs = [await eng.submit(spec(), f"j{i}") for i in range(5)]
    assert [j.id for j in jobs] == list(range(1, 6))
    await eng.flushed()
    assert await eng.store.fetch_one("get_counter", name="jobs") == {"value": 5}
    for i in range(5):
        eng.gates[f"j{i}"].set()
    await asyncio.gather(*(j.done for j in jobs))


async def test_progress_and_description_changes_are_published(eng: Engine) -> None:
    async def report(job: Job) -> str:
        job.set_description("Reporting")
        job.set_progress(42, "half way", {"n": 1})
        return "ok"

    eng.methods.handlers["t.report"] = report
    job = await eng.submit(spec("t.report"))
    await job.done
    fields = [e.fields for e in eng.sink.of(job.id) if e.fields is not None]
    assert any(f["description"] == "Reporting" for f in fields)
    assert any(
        f["progress"] == {"percent": 42.0, "description": "half way", "extra": {"n": 1}}
        for f in fields
    )
    assert fields[-1]["state"] == "SUCCESS"


async def test_a_failing_job(eng: Engine) -> None:
    async def fail(job: Job) -> None:
        raise CallError("pool offline", errno.ENXIO)

    eng.methods.handlers["t.fail"] = fail
    job = await eng.submit(spec("t.fail"))
    exc = await outcome(job)
    assert isinstance(exc, CallError) and exc.errno == errno.ENXIO
    assert job.state is JobState.FAILED
    record = await eng.stored(job.id)
    assert record is not None
    assert (record["state"], record["error"]) == ("FAILED", "pool offline")
    assert record["exc_info"]["errname"] == "ENXIO"
    assert eng.sink.states(job.id)[-1] == (CHANGED, "FAILED")


async def test_an_unexpected_exception_fails_the_job_with_a_call_error(eng: Engine) -> None:
    async def crash(job: Job) -> None:
        raise ValueError("unexpected")

    eng.methods.handlers["t.crash"] = crash
    job = await eng.submit(spec("t.crash"))
    exc = await outcome(job)
    assert isinstance(exc, CallError) and "unexpected" in exc.reason
    assert job.exc_info is not None and job.exc_info["type"] == "ValueError"


# -- locks ------------------------------------------------------------------------------


async def test_jobs_with_one_lock_run_one_at_a_time_in_order(eng: Engine) -> None:
    locked = spec(lock="L", lock_queue_size=None)
    jobs = [await eng.submit(locked, f"j{i}") for i in range(5)]
    await eng.started("j0")
    assert [j.state for j in jobs] == [JobState.RUNNING] + [JobState.WAITING] * 4
    for i in reversed(range(5)):  # opened in reverse: order must still be arrival order
        eng.gates[f"j{i}"].set()
    await asyncio.gather(*(j.done for j in jobs))
    assert eng.methods.ran == [j.id for j in jobs]
    assert eng.methods.max_active == 1


async def test_a_lock_from_the_arguments(eng: Engine) -> None:
    by_first = spec(lock=lambda args: f"path:{args[1]}", lock_queue_size=None)
    a = await eng.submit(by_first, "a", "/x")
    b = await eng.submit(by_first, "b", "/y")  # another lock: runs at once
    await eng.started("a")
    await eng.started("b")
    c = await eng.submit(by_first, "c", "/x")
    assert c.state is JobState.WAITING
    for name in "abc":
        eng.gates[name].set()
    await asyncio.gather(a.done, b.done, c.done)


# Merging changed on purpose (hardening defect 7): a call is merged into a waiting job only
# when the lock's queue is full AND the waiting job is the same call (method and arguments)
# of the same owner (user id); any other call is refused with EBUSY. tests/unit/test_locks.py
# covers the choice of the job; these check what the engine does with it.


async def test_the_same_call_is_merged_into_the_waiting_job(eng: Engine) -> None:
    locked = spec(lock="L", lock_queue_size=1)
    first = await eng.submit(locked, "first", message_id=1)
    await eng.started("first")
    waiting = await eng.submit(locked, "second", message_id=2)
    merged = await eng.submit(locked, "second", message_id=3)
    assert merged is waiting
    assert waiting.message_ids == [2, 3]
    # Subscribers hear of it (a CHANGED, through the progress coalescer)...
    await eng.sink.wait_for(
        lambda: any(
            e.msg == CHANGED and e.fields is not None and e.fields["message_ids"] == [2, 3]
            for e in eng.sink.of(waiting.id)
        )
    )
    eng.gates["first"].set()
    await eng.started("second")
    # ... and the record carries it from the job's next transition (merges are not
    # stored one by one).
    record = await eng.stored(waiting.id)
    assert record is not None and record["message_ids"] == [2, 3]
    assert record["state"] == "RUNNING"
    eng.gates["second"].set()
    assert await first.done == "first"
    assert await merged.done == "second"
    assert eng.methods.ran == [first.id, waiting.id]


async def test_another_call_finding_the_queue_full_is_refused(eng: Engine) -> None:
    locked = spec(lock="L", lock_queue_size=1)
    first = await eng.submit(locked, "first", creds=ALICE)
    waiting = await eng.submit(locked, "second", creds=ALICE, message_id=2)
    for args, creds in ((["third"], ALICE), (["second"], BOB)):
        with pytest.raises(Busy) as refused:
            await eng.submit(locked, *args, creds=creds, message_id=3)
        assert refused.value.errno == errno.EBUSY
    assert waiting.message_ids == [2]
    assert [j.id for j in eng.jobs.live.values()] == [first.id, waiting.id]
    eng.gates["first"].set()
    eng.gates["second"].set()
    await asyncio.gather(first.done, waiting.done)


async def test_a_job_answers_at_most_max_merged_calls(eng: Engine) -> None:
    locked = spec(lock="L", lock_queue_size=1)
    first = await eng.submit(locked, "first")
    waiting = await eng.submit(locked, "same", message_id=0)
    for i in range(1, MAX_MERGED_CALLS):
        assert await eng.submit(locked, "same", message_id=i) is waiting
    assert len(waiting.message_ids) == MAX_MERGED_CALLS
    with pytest.raises(Busy):
        await eng.submit(locked, "same", message_id="one too many")
    eng.gates["first"].set()
    eng.gates["same"].set()
    await asyncio.gather(first.done, waiting.done)
    record = await eng.stored(waiting.id)
    assert record is not None and record["message_ids"] == list(range(MAX_MERGED_CALLS))


async def test_merge_goes_to_the_last_same_call_of_a_full_queue(eng: Engine) -> None:
    locked = spec(lock="L", lock_queue_size=3)
    calls = ["run", "a", "b", "a"]
    jobs = [await eng.submit(locked, name, message_id=i) for i, name in enumerate(calls)]
    merged = await eng.submit(locked, "a", message_id=4)
    assert merged is jobs[3]
    assert await eng.submit(locked, "b", message_id=5) is jobs[2]
    assert [j.message_ids for j in jobs] == [[0], [1], [2, 5], [3, 4]]
    for name in ("run", "a", "b"):
        eng.gates[name].set()
    await asyncio.gather(*(j.done for j in jobs))


async def test_added_comes_first_even_when_a_merge_races_the_insert(eng: Engine) -> None:
    locked = spec(lock="L", lock_queue_size=1)
    first = await eng.submit(locked, "first", message_id=1)
    await eng.started("first")
    # Two identical calls arrive together (a batch, or two connections).
    second, third = await asyncio.gather(
        eng.submit(locked, "second", message_id=2), eng.submit(locked, "second", message_id=3)
    )
    assert second is third
    await eng.sink.wait_for(lambda: len(eng.sink.of(second.id)) >= 2)
    assert eng.sink.of(second.id)[0].msg == ADDED
    eng.gates["first"].set()
    eng.gates["second"].set()
    await asyncio.gather(first.done, second.done)


async def test_lock_queue_size_zero_refuses_while_one_runs(eng: Engine) -> None:
    exclusive = spec(lock="X", lock_queue_size=0)
    first = await eng.submit(exclusive, "first")
    with pytest.raises(Busy) as refused:
        await eng.submit(exclusive, "second")
    assert refused.value.errno == errno.EBUSY
    eng.gates["first"].set()
    await first.done
    again = await eng.submit(exclusive, "again")
    eng.gates["again"].set()
    assert await again.done == "again"


async def test_max_concurrency(eng: Engine) -> None:
    limited = spec(max_concurrency=2)
    jobs = [await eng.submit(limited, f"j{i}") for i in range(5)]
    await eng.started("j0")
    await eng.started("j1")
    assert [j.state for j in jobs] == [JobState.RUNNING] * 2 + [JobState.WAITING] * 3
    for i in range(5):
        eng.gates[f"j{i}"].set()
        await jobs[i].done
    assert eng.methods.max_active == 2
    assert sorted(eng.methods.ran) == [j.id for j in jobs]


# -- abort ------------------------------------------------------------------------------


async def assert_aborted(eng: Engine, job: Job, reason: str = "Job aborted") -> None:
    exc = await outcome(job)
    assert isinstance(exc, JobAborted)
    assert (exc.errno, exc.reason) == (errno.ECANCELED, reason)
    assert job.state is JobState.ABORTED
    record = await eng.stored(job.id)
    assert record is not None
    assert (record["state"], record["error"]) == ("ABORTED", reason)
    assert record["exc_info"]["type"] == "JobAborted"
    assert eng.sink.states(job.id)[-1] == (CHANGED, "ABORTED")


async def test_abort_a_waiting_job(eng: Engine) -> None:
    locked = spec(lock="L", lock_queue_size=None)  # not abortable: waiting jobs still are
    first = await eng.submit(locked, "first")
    second = await eng.submit(locked, "second")
    third = await eng.submit(locked, "third")
    eng.jobs.abort(second)
    await assert_aborted(eng, second)
    eng.gates["first"].set()
    eng.gates["third"].set()
    await asyncio.gather(first.done, third.done)
    assert eng.methods.ran == [first.id, third.id]


async def test_abort_before_the_insert_is_durable_still_announces_it_first(eng: Engine) -> None:
    # Another connection holds the write lock: the insert cannot commit until it lets go.
    with closing(sqlite3.connect(eng.db, isolation_level=None)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        submitting = asyncio.create_task(eng.submit(spec(), "a"))
        await next_turn()  # submit registers the job and starts its task...
        await next_turn()  # ...which waits for the insert
        (job,) = eng.jobs.live.values()
        assert job.task is not None
        coro = cast(Coroutine[Any, Any, None], job.task.get_coro())
        assert inspect.getcoroutinestate(coro) == inspect.CORO_SUSPENDED
        assert not job.persisted.done()
        eng.jobs.abort(job)
        blocker.execute("ROLLBACK")
    assert await submitting is job
    await assert_aborted(eng, job)
    await eng.sink.wait_for(lambda: len(eng.sink.of(job.id)) == 2)
    assert eng.sink.states(job.id) == [(ADDED, "WAITING"), (CHANGED, "ABORTED")]


async def test_abort_before_the_task_took_a_step_still_ends_the_job(eng: Engine) -> None:
    """Cancelled before its first step, a task never runs its coroutine (no except, no
    finally): the job must still end ABORTED and let go of its lock."""
    locked = spec(lock="L", lock_queue_size=None)
    with closing(sqlite3.connect(eng.db, isolation_level=None)) as blocker:
        blocker.execute("BEGIN IMMEDIATE")
        submitting = asyncio.create_task(eng.submit(locked, "a"))
        for _ in range(100):  # one step at a time, until submit has created the task
            if eng.jobs.live:
                break
            await asyncio.sleep(0)
        (job,) = eng.jobs.live.values()
        assert job.task is not None
        coro = cast(Coroutine[Any, Any, None], job.task.get_coro())
        assert inspect.getcoroutinestate(coro) == inspect.CORO_CREATED
        eng.jobs.abort(job)
        blocker.execute("ROLLBACK")
    assert await submitting is job
    await assert_aborted(eng, job)
    assert job.id not in eng.jobs.live
    after = await eng.submit(locked, "b")  # the lock is free
    eng.gates["b"].set()
    await after.done


async def test_abort_a_running_abortable_job(eng: Engine) -> None:
    job = await eng.submit(spec(abortable=True), "a", creds=ALICE)
    await eng.started("a")
    eng.jobs.abort(job)
    await assert_aborted(eng, job)
    assert eng.methods.active == 0


async def test_abort_of_a_running_job_that_is_not_abortable_is_refused(eng: Engine) -> None:
    job = await eng.submit(spec(abortable=False), "a")
    await eng.started("a")
    with pytest.raises(CallError) as refused:
        eng.jobs.abort(job)
    assert refused.value.errno == errno.EINVAL
    eng.gates["a"].set()
    assert await job.done == "a"


async def test_who_may_abort_is_decided_by_the_caller(eng: Engine) -> None:
    """Changed: the engine no longer checks who aborts (``abort`` takes the Job). core.
    job_abort aborts only a job the caller may see, by the visibility rule checked here;
    tests/acceptance/test_auth.py checks it over the wire."""
    job = await eng.submit(spec(abortable=True), "a", creds=ALICE)
    await eng.started("a")
    assert not RULES.job(BOB, job.owner_id, job.method)
    assert RULES.job(ALICE, job.owner_id, job.method)
    assert RULES.job(ROOT, job.owner_id, job.method)
    assert job.state is JobState.RUNNING
    eng.jobs.abort(job)
    await assert_aborted(eng, job)


async def test_an_unknown_or_ended_job_is_not_live(eng: Engine) -> None:
    """Changed: ``get_live`` finds what may be aborted (core.job_abort answers ENOENT for
    the rest); aborting a job that already ended changes nothing."""
    assert eng.jobs.get_live(999) is None
    job = await eng.submit(spec(abortable=True), "a")
    assert eng.jobs.get_live(job.id) is job
    eng.gates["a"].set()
    await job.done
    assert eng.jobs.get_live(job.id) is None
    eng.jobs.abort(job)
    assert job.state is JobState.SUCCESS
    record = await eng.stored(job.id)
    assert record is not None and record["state"] == "SUCCESS"


# -- timeout ----------------------------------------------------------------------------


async def test_a_job_past_its_timeout_fails(eng: Engine) -> None:
    job = await eng.submit(spec(timeout=0.01), "never")
    exc = await outcome(job)
    assert isinstance(exc, CallError)
    assert exc.errno == errno.ETIMEDOUT
    assert "timed out" in exc.reason
    assert job.state is JobState.FAILED
    record = await eng.stored(job.id)
    assert record is not None and record["exc_info"]["errname"] == "ETIMEDOUT"


# -- retries (JobOptions.retry) ----------------------------------------------------------


def retrying(name: str, **options: Any) -> MethodSpec:
    """A job retried at once (no backoff: nothing to wait for), up to 3 attempts."""
    policy = RetryPolicy(base_delay=0, jitter=0, **options.pop("policy", {}))
    return spec(name, retry=policy, **options)


async def test_a_failed_attempt_is_retried_until_it_succeeds(eng: Engine) -> None:
    attempts: list[int] = []

    async def flaky(job: Job) -> str:
        attempts.append(job.attempt)
        if job.attempt < 3:
            raise CallError(f"attempt {job.attempt} failed", errno.EAGAIN)
        return "ok"

    eng.methods.handlers["t.flaky"] = flaky
    job = await eng.submit(retrying("t.flaky"))
    assert await job.done == "ok"
    assert attempts == [1, 2, 3]
    await eng.sink.wait_for(lambda: eng.sink.states(job.id)[-1:] == [(CHANGED, "SUCCESS")])
    # Each failed attempt goes back to WAITING, saying which attempt comes and why.
    retries = [e.fields for e in eng.sink.of(job.id) if (e.fields or {})["state"] == "WAITING"]
    assert [(f["attempt"], f["error"]) for f in retries if f is not None][-2:] == [
        (2, "attempt 1 failed"),
        (3, "attempt 2 failed"),
    ]
    record = await eng.stored(job.id)
    assert record is not None
    assert (record["state"], record["attempt"], record["error"]) == ("SUCCESS", 3, None)
    assert record["exc_info"] is None
    assert (await eng.columns(job.id))["attempt"] == 3


async def test_retries_end_when_the_attempts_are_used_up(eng: Engine) -> None:
    async def broken(job: Job) -> None:
        raise CallError(f"attempt {job.attempt} failed", errno.EIO)

    eng.methods.handlers["t.broken"] = broken
    job = await eng.submit(retrying("t.broken", policy={"max_attempts": 2}))
    exc = await outcome(job)
    assert isinstance(exc, CallError) and exc.reason == "attempt 2 failed"
    record = await eng.stored(job.id)
    assert record is not None
    assert (record["state"], record["attempt"]) == ("FAILED", 2)
    assert eng.methods.ran == [job.id, job.id]


@pytest.mark.parametrize(
    "failure",
    [
        ValidationErrors([("n", "Must be positive", errno.EINVAL)]),
        CallError("not worth a retry", errno.ENOENT),
    ],
    ids=["validation", "errno not named"],
)
async def test_some_failures_are_never_retried(eng: Engine, failure: Exception) -> None:
    async def fail(job: Job) -> None:
        raise failure

    eng.methods.handlers["t.fail"] = fail
    job = await eng.submit(retrying("t.fail", policy={"errnos": frozenset({errno.EAGAIN})}))
    assert await outcome(job) is failure
    assert eng.methods.ran == [job.id]
    record = await eng.stored(job.id)
    assert record is not None and (record["state"], record["attempt"]) == ("FAILED", 1)


async def test_a_retry_queues_again_behind_the_locks_waiters(eng: Engine) -> None:
    async def fails_once(job: Job) -> str:
        if job.attempt == 1:
            await eng.gates["fail"].wait()
            raise CallError("transient", errno.EAGAIN)
        return "retried"

    eng.methods.handlers["t.flaky"] = fails_once
    flaky = await eng.submit(retrying("t.flaky", lock="L", lock_queue_size=None))
    other = await eng.submit(spec(lock="L", lock_queue_size=None), "other")
    eng.gates["fail"].set()
    # The lock went to the job that waited; the retry waits behind it.
    await eng.started("other")
    assert (flaky.state, flaky.attempt) == (JobState.WAITING, 2)
    eng.gates["other"].set()
    assert await flaky.done == "retried"
    assert eng.methods.ran == [flaky.id, other.id, flaky.id]


async def test_a_job_waiting_for_its_retry_may_be_aborted(eng: Engine) -> None:
    async def fails_once(job: Job) -> str:
        await eng.gates["fail"].wait()
        raise CallError("transient", errno.EAGAIN)

    eng.methods.handlers["t.flaky"] = fails_once
    flaky = await eng.submit(retrying("t.flaky", lock="L", lock_queue_size=None))
    other = await eng.submit(spec(lock="L", lock_queue_size=None), "other")
    eng.gates["fail"].set()
    await eng.started("other")  # the retry waits behind it
    assert (flaky.state, flaky.attempt) == (JobState.WAITING, 2)
    # Waiting (not running): abortable or not, a waiting job may be aborted.
    eng.jobs.abort(flaky)
    await assert_aborted(eng, flaky)
    eng.gates["other"].set()
    assert await other.done == "other"
    assert eng.methods.ran == [flaky.id, other.id]


# -- results and bounds -----------------------------------------------------------------


async def test_a_large_result_is_kept_beside_the_record(tmp_path: Path, gates: Gates) -> None:
    engine = Engine(tmp_path / "middlewared.db", tmp_path / "logs", gates, max_result_bytes=100)
    await engine.open()
    big = {"data": "x" * 200}

    async def produce(job: Job) -> Any:
        return big if job.arguments[0] == "big" else job.arguments[0]

    engine.methods.handlers["t.produce"] = produce
    try:
        job = await engine.submit(spec("t.produce"), "big")
        assert await job.done == big  # the caller gets it whole
        record = await engine.stored(job.id)
        assert record is not None
        assert (record["result"], record["result_size"]) == (None, len(jsonc.dumpb(big)))
        path = engine.files.result(job.id)
        assert json.loads(path.read_text()) == big
        assert path.stat().st_mode & 0o777 == 0o600
        small = await engine.submit(spec("t.produce"), "small")
        await small.done
        record = await engine.stored(small.id)
        assert record is not None and (record["result"], record["result_size"]) == ("small", None)
        assert not engine.files.result(small.id).exists()
    finally:
        await engine.jobs.shutdown(0)
        await engine.store.close()


async def test_the_result_bound_counts_bytes(tmp_path: Path, gates: Gates) -> None:
    """--max-result-size is in bytes: a result of characters that take 3 bytes each is
    measured as it is stored and sent (UTF-8), not by its length in characters."""
    engine = Engine(tmp_path / "middlewared.db", tmp_path / "logs", gates, max_result_bytes=100)
    await engine.open()
    snowmen = "\u2603" * 60  # 62 characters encoded, 182 bytes

    async def produce(job: Job) -> str:
        return snowmen

    engine.methods.handlers["t.produce"] = produce
    try:
        job = await engine.submit(spec("t.produce"))
        assert await job.done == snowmen
        record = await engine.stored(job.id)
        assert record is not None
        assert (record["result"], record["result_size"]) == (None, 182), (
            "SERVER BUG middlewared/jobs/engine.py:324 (_keep_large_result): the bound "
            "compares len() of the encoded str (characters) with max_result_bytes (bytes), "
            "so a non-ASCII result up to 4x the bound stays in the record, and result_size "
            "counts characters"
        )
    finally:
        await engine.jobs.shutdown(0)
        await engine.store.close()


async def test_jobs_not_ended_are_counted_per_owner(eng: Engine) -> None:
    def counts() -> list[int]:
        return [eng.jobs.live_count(c.user_id) for c in (ALICE, BOB, ROOT)]

    a = await eng.submit(spec(), "a", creds=ALICE)
    b = await eng.submit(spec(), "b", creds=ALICE)
    c = await eng.submit(spec(abortable=True), "c", creds=BOB)
    assert counts() == [2, 1, 0]
    eng.gates["a"].set()
    await a.done
    assert counts() == [1, 1, 0]
    eng.jobs.abort(c)
    await outcome(c)
    assert counts() == [1, 0, 0]
    eng.gates["b"].set()
    await b.done
    assert counts() == [0, 0, 0]


# -- transient jobs ---------------------------------------------------------------------


async def test_transient_jobs_emit_no_events_and_are_not_stored(eng: Engine) -> None:
    job = await eng.submit(spec(transient=True), "t")
    await eng.started("t")
    assert job.id in eng.jobs.live
    eng.gates["t"].set()
    assert await job.done == "t"
    assert eng.sink.of(job.id) == []
    assert await eng.stored(job.id) is None
    # The next stored job is unaffected.
    other = await eng.submit(spec(), "o")
    eng.gates["o"].set()
    await other.done
    assert await eng.stored(other.id) is not None


# -- who sees what ----------------------------------------------------------------------


async def test_events_reach_only_the_owner_and_admins(eng: Engine) -> None:
    alice, bob = eng.subscribe(ALICE), eng.subscribe(BOB)

    async def fail(job: Job) -> None:
        raise RuntimeError("secret detail")

    eng.methods.handlers["t.fail"] = fail
    job = await eng.submit(spec("t.fail"), creds=ALICE)
    await outcome(job)
    await eng.sink.wait_for(lambda: eng.sink.states(job.id)[-1:] == [(CHANGED, "FAILED")])
    assert alice.states(job.id) == eng.sink.states(job.id)
    assert bob.events == []
    # The formatted exception is for admins only.
    last = alice.of(job.id)[-1]
    assert last.params(admin=False)["fields"]["exception"] is None
    assert "secret detail" in last.params(admin=True)["fields"]["exception"]


async def test_a_job_runs_with_nobody_subscribed(eng: Engine) -> None:
    eng.jobs.bus = EventBus()  # nobody listens
    job = await eng.submit(spec(), "a")
    eng.gates["a"].set()
    assert await job.done == "a"
    record = await eng.stored(job.id)
    assert record is not None and record["state"] == "SUCCESS"


# -- shutdown ---------------------------------------------------------------------------


async def test_shutdown_aborts_what_is_still_running(eng: Engine) -> None:
    locked = spec(lock="L", lock_queue_size=None)
    running = await eng.submit(locked, "r")
    waiting = await eng.submit(locked, "w")
    await eng.started("r")
    await eng.jobs.shutdown(0)
    reason = "Job aborted: the server is shutting down"
    await assert_aborted(eng, running, reason)
    await assert_aborted(eng, waiting, reason)
    with pytest.raises(CallError) as refused:
        await eng.submit(spec(), "late")
    assert refused.value.errno == errno.ESHUTDOWN


async def test_shutdown_lets_jobs_end_within_the_grace(eng: Engine) -> None:
    job = await eng.submit(spec(), "quick")
    await eng.started("quick")
    eng.gates["quick"].set()
    await eng.jobs.shutdown(60)
    assert job.state is JobState.SUCCESS


# -- recovery after a crash -------------------------------------------------------------


async def crash(engine: Engine) -> None:
    """The process dies: the store is closed with jobs pending, nothing ends them."""
    engine.bus = EventBus()
    engine.jobs.bus = engine.bus
    await engine.store.close()
    tasks = [j.task for j in engine.jobs.live.values() if j.task is not None]
    for task in tasks:
        task.cancel()
    # They try to store their end, and cannot: the rows stay WAITING/RUNNING.
    await asyncio.gather(*tasks, return_exceptions=True)
    # A dead process retries nothing: drop the ends the closed store refused.
    await engine.jobs.shutdown(0)


async def test_recover_fails_interrupted_jobs_and_requeues_retryable_ones(
    tmp_path: Path, gates: Gates
) -> None:
    locked = spec(lock="L", lock_queue_size=None)
    retryable = spec("t.retry", retry_on_restart=True)
    specs = {s.name: s for s in (locked, retryable)}
    db, logs = tmp_path / "middlewared.db", tmp_path / "logs"

    before = Engine(db, logs, gates)
    await before.open()
    running = await before.submit(locked, "run")
    waiting = await before.submit(locked, "wait")
    retry = await before.submit(retryable, "retry", message_id=77)
    await before.started("run")
    await before.started("retry")
    await before.flushed()
    await crash(before)

    after = Engine(db, logs, Gates())
    assert await after.open(specs.get) == 3
    await after.flushed()

    for job, was in ((running, "RUNNING"), (waiting, "WAITING")):
        record = await after.job_store.get(job.id)
        assert record is not None
        assert record["state"] == "FAILED"
        assert record["error"] == f"Interrupted: the server stopped while the job was {was}"
        assert record["exc_info"]["type"] == "Interrupted"
        assert record["exc_info"]["errname"] == "EINTR"
        assert record["time_finished"] is not None
        assert (await after.columns(job.id))["state"] == "FAILED"

    requeued = after.jobs.live[retry.id]
    await after.started("retry")
    after.gates["retry"].set()  # this time it may finish
    assert await requeued.done == "retry"
    assert requeued.message_ids == [77]
    assert after.methods.ran == [retry.id]
    record = await after.stored(retry.id)
    assert record is not None and record["state"] == "SUCCESS"
    # Ids are never reused across the restart.
    fresh = await after.submit(spec(), "fresh")
    assert fresh.id > retry.id
    after.gates["fresh"].set()
    await fresh.done
    # A second restart finds nothing pending.
    await after.jobs.shutdown(0)
    await after.store.close()
    again = Engine(db, logs, Gates())
    assert await again.open(specs.get) == 0
    await again.store.close()


async def test_a_requeued_job_runs_with_its_owners_credentials_as_they_are_now(
    tmp_path: Path, gates: Gates
) -> None:
    """Jobs hold an identity: recovery resolves it again (a changed allow-list applies)."""
    retryable = spec("t.retry", retry_on_restart=True)
    db, logs = tmp_path / "middlewared.db", tmp_path / "logs"
    before = Engine(db, logs, gates)
    await before.open()
    job = await before.submit(retryable, "r", creds=ALICE)
    await before.started("r")
    await crash(before)

    after = Engine(db, logs, gates)
    assert ALICE.user_id is not None
    after.users[ALICE.user_id] = dataclasses.replace(ALICE, allowlist=("t.retry",))
    await after.open({retryable.name: retryable}.get)
    requeued = after.jobs.live[job.id]
    try:
        assert not requeued.credentials.admin
        assert requeued.credentials.allowlist == ("t.retry",)
        assert requeued.owner_id == ALICE.user_id
        assert requeued.credentials.identity == ALICE.identity
        assert requeued.record()["credentials"] == job.record()["credentials"]
        assert requeued.record()["origin"] == "restart"
    finally:
        gates["r"].set()
        await requeued.done
        await after.jobs.shutdown(0)
        await after.store.close()


async def test_a_job_whose_owner_is_gone_is_not_requeued(tmp_path: Path, gates: Gates) -> None:
    retryable = spec("t.retry", retry_on_restart=True)
    db, logs = tmp_path / "middlewared.db", tmp_path / "logs"
    before = Engine(db, logs, gates)
    await before.open()
    job = await before.submit(retryable, "r", creds=ALICE)
    await before.started("r")
    await crash(before)

    after = Engine(db, logs, Gates())
    del after.users[ALICE.user_id]  # deleted (or locked) meanwhile
    assert await after.open({retryable.name: retryable}.get) == 1
    try:
        assert job.id not in after.jobs.live
        record = await after.stored(job.id)
        assert record is not None and record["state"] == "FAILED"
        assert record["exc_info"]["errname"] == "EINTR"
        assert after.methods.ran == []
    finally:
        await after.store.close()


async def test_ids_of_transient_jobs_are_not_reused_after_a_restart(
    tmp_path: Path, gates: Gates
) -> None:
    db, logs = tmp_path / "middlewared.db", tmp_path / "logs"
    before = Engine(db, logs, gates)
    await before.open()
    stored = await before.submit(spec(), "s")
    transient = await before.submit(spec(transient=True), "t")
    gates["s"].set()
    gates["t"].set()
    await asyncio.gather(stored.done, transient.done)
    await before.jobs.shutdown(0)
    await before.store.close()

    after = Engine(db, logs, gates)
    await after.open()
    try:
        fresh = await after.submit(spec(), "fresh")
        assert fresh.id > transient.id
    finally:
        gates["fresh"].set()
        await after.jobs.shutdown(60)
        await after.store.close()
