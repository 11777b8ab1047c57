"""core.get_jobs through a real Middleware: live jobs merged with stored ones, checked against
a pure-Python oracle (middlewared.query.query over every record) for many filters and options,
on the SQLite store and on the memory store.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio

from middlewared.app import Middleware
from middlewared.auth.credentials import CredentialKind, Credentials, Identity
from middlewared.config import ServerConfig
from middlewared.context import CallContext
from middlewared.errors import CallError, NotFound
from middlewared.jobs.job import Job, JobState
from middlewared.jobs.query import query_jobs
from middlewared.query import query
from middlewared.registry import JobOptions, Param, Registry

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Who submits the jobs: root, alice (her allow-list grants every t.* method) and bob through
# an API key that grants only some t.* methods (he sees only his jobs of those methods).
USERS = ("root", "alice", "bob")
STORED = 300
INT = {"type": "integer"}


def describe(args: Sequence[Any]) -> str | None:
    n = args[0]
    if not isinstance(n, int) or n % 7 == 0:
        return None
    return f"{'Item' if n % 2 else 'ITEM'} {n}"


def make_registry(gates: dict[str, asyncio.Event]) -> Registry:
    reg = Registry("t")
    many = JobOptions(description=describe, lock_queue_size=None)

    @reg.method(params=[Param("n", INT)], job=many)
    async def quick(ctx: CallContext, job: Job, n: int) -> int:
        """Succeed with n."""
        job.set_progress(n % 101)
        return n

    @reg.method(params=[Param("n", INT)], job=many)
    async def fail(ctx: CallContext, job: Job, n: int) -> None:
        """Fail after some progress."""
        job.set_progress(None if n % 5 == 0 else n % 101, f"step {n % 4}")
        raise CallError(f"failure {n}", errno.EIO)

    @reg.method(params=[Param("n", INT)], job=many)
    async def other(ctx: CallContext, job: Job, n: int) -> dict[str, int]:
        """Succeed with an object."""
        return {"n": n}

    @reg.method(
        params=[Param("n", INT), Param("gate", {"type": "string"})],
        job=JobOptions(
            description=describe,
            lock=lambda args: "hold" if args[0] % 2 else None,
            lock_queue_size=None,
            abortable=True,
        ),
    )
    async def hold(ctx: CallContext, job: Job, n: int, gate: str) -> int:
        """Wait until the test opens the gate."""
        job.set_progress(n % 101)
        await gates.setdefault(gate, asyncio.Event()).wait()
        return n

    return reg


async def make_users(app: Middleware) -> dict[str, Credentials]:
    """The callers, as the directory resolves their logins."""
    directory = app.directory
    alice = await directory.create_user({"username": "alice", "allowlist": ["t.*"]})
    bob = await directory.create_user({"username": "bob", "allowlist": ["t.*"]})
    key, _, *_ = await directory.create_key(
        {"name": "bob's", "username": "bob", "allowlist": ["t.quick", "t.hold"]}
    )
    root = directory.by_name("root")
    assert root is not None
    identities = {
        "root": Identity(CredentialKind.LOGIN_PASSWORD, root.id),
        "alice": Identity(CredentialKind.LOGIN_PASSWORD, alice.id),
        "bob": Identity(CredentialKind.API_KEY, bob.id, key.id),
    }
    users = {name: directory.resolve(identity) for name, identity in identities.items()}
    assert all(creds is not None for creds in users.values())
    return cast("dict[str, Credentials]", users)


@dataclass
class World:
    app: Middleware
    users: dict[str, Credentials]
    jobs: list[Job] = field(default_factory=list)

    def records(self, creds: Credentials) -> list[dict[str, Any]]:
        """The oracle's input: every job this caller may read, as it is now, by id."""
        visible = self.app.visibility.job
        return [
            job.record(creds.admin)
            for job in sorted(self.jobs, key=lambda j: j.id)
            if visible(creds, job.owner_id, job.method, job.key_id)
        ]

    async def submit(self, method: str, *args: Any, owner: str = "root") -> Job:
        spec = self.app.methods.lookup(method)
        assert spec is not None
        job = await self.app.jobs.submit(spec, list(args), list(args), self.users[owner])
        self.jobs.append(job)
        return job


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["sqlite", "memory"])
async def world(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> AsyncIterator[World]:
    """The same jobs on either store: SQLite compiles filters to SQL, the memory store
    evaluates them in Python; both must answer as the oracle does."""
    gates: dict[str, asyncio.Event] = {}
    config = ServerConfig(
        data_dir=tmp_path_factory.mktemp("query"),
        builtin_plugins=False,
        shutdown_grace_seconds=0,
        store="memory://" if request.param == "memory" else None,
    )
    app = Middleware(config)
    # Mounting a registry by hand means start() loads no plugins: the core services too.
    app.load_plugins()
    app.mount(make_registry(gates))
    await app.start()
    w = World(app, await make_users(app))
    methods = ("t.quick", "t.fail", "t.other")
    finished = await asyncio.gather(
        *(w.submit(methods[n % 3], n, owner=USERS[(n // 3) % 3]) for n in range(1, STORED + 1))
    )
    await asyncio.gather(*(j.done for j in finished), return_exceptions=True)
    # Some aborted ones: queued behind a held lock, then aborted.
    blocker = await w.submit("t.hold", 1001, "blocker")
    aborted = [await w.submit("t.hold", 2 * i + 1, "never", owner="alice") for i in range(5)]
    for job in aborted:
        app.jobs.abort(job)
    await asyncio.gather(*(j.done for j in aborted), return_exceptions=True)
    # Live ones: RUNNING (no lock, or holding it) and WAITING (behind the held lock).
    for n, owner in zip(range(50, 58), itertools.cycle(USERS), strict=False):
        await w.submit("t.hold", n, "live", owner=owner)
    assert {j.state for j in w.jobs} == {
        JobState.SUCCESS,
        JobState.FAILED,
        JobState.ABORTED,
        JobState.RUNNING,
        JobState.WAITING,
    }
    assert blocker.state is JobState.RUNNING
    yield w
    for event in gates.values():
        event.set()
    await app.stop()


FILTERS: list[list[Any]] = [
    [],
    [["state", "=", "SUCCESS"]],
    [["state", "in", ["RUNNING", "WAITING"]]],
    [["state", "nin", ["SUCCESS"]]],
    [["state", "!=", "FAILED"]],
    [["method", "in", ["t.quick", "t.hold"]]],
    [["id", ">", 50], ["id", "<=", 200]],
    [["id", "<", 10]],
    [["progress.percent", ">=", 50]],
    [["progress.percent", "=", None]],
    [["progress.percent", "!=", None], ["progress.percent", "<", 30.5]],
    [["description", "^", "Item 1"]],
    [["description", "C^", "item 1"]],
    [["description", "$", "7"]],
    [["description", "!$", "7"]],
    [["description", "rin", "5"]],
    [["description", "rnin", "5"]],
    [["description", "C=", "item 51"]],
    [["description", "=", None]],
    [["description", ">", "ITEM 5"]],
    [["error", "rin", "failure 1"]],
    [["error", "!=", None]],
    [["error", "=", None]],
    [["credentials.data.username", "=", "alice"]],
    [["credentials.data.username", "in", ["bob", "root"]]],
    [["time_started", ">", {"$date": 0}]],
    [["time_finished", "=", None]],
    [["time_finished", ">=", "1970-01-02T00:00:00"]],
    # Not columns, or operators SQL does not take: (part) left to Python.
    [["description", "~", "Item [0-9]*5$"]],
    [["result", "=", 5]],
    [["result.n", ">", 100]],
    [["arguments.0", ">=", 150], ["state", "=", "SUCCESS"]],
    [["arguments.1", "=", "live"]],
    [["exc_info.errname", "=", "EIO"]],
    [["credentials.type", "=", "API_KEY"]],
    [["progress.description", "^", "step"]],
    [["OR", [["state", "=", "FAILED"], ["method", "=", "t.other"]]]],
    [["OR", [["state", "=", "RUNNING"], [["id", "<", 20], ["method", "=", "t.fail"]]]]],
    [["OR", [["state", "=", "ABORTED"], ["arguments.0", ">", 290]]]],
    [["OR", [["description", "~", "ITEM"], ["id", "=", 3]]], ["id", "<", 100]],
    [["id", "=", 999_999]],
    # Users see no exception: a condition on it reads null for them, in SQL as in Python.
    [["exception", "=", None]],
    [["exception", "rin", "failure"]],
    [["exc_info.errname", "in", ["EIO", None]], ["progress.description", "C^", "STEP"]],
]

OPTIONS: list[dict[str, Any]] = [
    {},
    {"order_by": ["-id"]},
    {"order_by": ["description"]},
    {"order_by": ["-description"]},
    {"order_by": ["nulls_last:description"]},
    {"order_by": ["nulls_first:-description", "-id"]},
    {"order_by": ["-progress.percent", "method"]},
    {"order_by": ["state", "-time_started"]},
    {"order_by": ["time_finished"]},
    {"order_by": ["credentials.data.username", "-error"]},
    {"order_by": ["result"]},
    {"order_by": ["-arguments.0"]},
    {"limit": 10},
    {"offset": 5, "limit": 10},
    {"offset": STORED - 5, "limit": 20},
    {"order_by": ["-id"], "offset": 3, "limit": 7},
    {"order_by": ["description"], "offset": 280, "limit": 15},
    {"order_by": ["-progress.percent"], "offset": 100},
    {"order_by": ["result"], "offset": 7, "limit": 3},
    {"count": True},
    {"get": True},
    {"get": True, "order_by": ["-id"]},
    {"get": True, "order_by": ["description"], "offset": 4},
    {"select": ["id", "state", "progress.percent"]},
    {"select": [["id", "job_id"], "credentials.data.username"], "order_by": ["-id"]},
    {"select": ["id"], "order_by": ["-result"], "limit": 5},
]


def options_id(options: dict[str, Any]) -> str:
    return repr(options)


def oracle(world: World, creds: Credentials, filters: Any, options: Any) -> Any:
    try:
        return query(world.records(creds), filters, options)
    except NotFound as e:
        return e


async def actual(world: World, creds: Credentials, filters: Any, options: Any) -> Any:
    try:
        return await query_jobs(world.app, creds, filters, options)
    except NotFound as e:
        return e


def same(a: Any, b: Any) -> bool:
    if isinstance(a, NotFound) or isinstance(b, NotFound):
        return type(a) is type(b)
    return bool(a == b)


@pytest.mark.parametrize("filters", FILTERS, ids=[repr(f) for f in FILTERS])
async def test_admin_query_equals_the_oracle(world: World, filters: list[Any]) -> None:
    wrong = []
    for options in OPTIONS:
        root = world.users["root"]
        expected = oracle(world, root, filters, options)
        got = await actual(world, root, filters, options)
        if not same(got, expected):
            wrong.append(options)
    assert wrong == [], f"differs from the oracle with options {wrong}"


@pytest.mark.parametrize("user", ["alice", "bob"])
@pytest.mark.parametrize("filters", FILTERS[:12] + FILTERS[28:], ids=repr)
async def test_a_user_query_equals_the_oracle(world: World, user: str, filters: list[Any]) -> None:
    creds = world.users[user]
    wrong = []
    for options in OPTIONS:
        expected = oracle(world, creds, filters, options)
        got = await actual(world, creds, filters, options)
        if not same(got, expected):
            wrong.append(options)
    assert wrong == [], f"differs from the oracle with options {wrong}"


async def test_the_world_has_stored_and_live_jobs(world: World) -> None:
    root = world.users["root"]
    everything = await query_jobs(world.app, root, [], {})
    assert len(everything) == len(world.jobs)
    assert [r["id"] for r in everything] == sorted(j.id for j in world.jobs)
    live = await query_jobs(world.app, root, [["state", "in", ["WAITING", "RUNNING"]]], {})
    assert {r["id"] for r in live} == set(world.app.jobs.live)
    assert len(live) >= 9


@pytest.mark.parametrize(
    "order_by",
    [["id"], ["-id"], ["description"], ["-progress.percent", "state"], ["result"], ["-state"]],
    ids=repr,
)
@pytest.mark.parametrize("page", [8, 50])
async def test_pages_put_together_are_the_whole(
    world: World, order_by: list[str], page: int
) -> None:
    root = world.users["root"]
    whole = await query_jobs(world.app, root, [], {"order_by": order_by})
    pages: list[dict[str, Any]] = []
    offset = 0
    while True:
        chunk = await query_jobs(
            world.app, root, [], {"order_by": order_by, "offset": offset, "limit": page}
        )
        if not chunk:
            break
        assert len(chunk) <= page
        pages.extend(chunk)
        offset += page
    assert pages == whole
    assert whole == query(world.records(root), [], {"order_by": order_by})


async def test_a_user_sees_only_their_own_jobs(world: World) -> None:
    for name in ("alice", "bob"):
        creds = world.users[name]
        records = await query_jobs(world.app, creds, [], {})
        assert records
        assert {r["credentials"]["data"]["username"] for r in records} == {creds.username}
        assert all(r["exception"] is None for r in records)
        others = [["credentials.data.username", "!=", creds.username]]
        assert await query_jobs(world.app, creds, others, {"count": True}) == 0


async def test_a_user_sees_only_the_jobs_of_methods_granted_to_them(world: World) -> None:
    """New: visibility is by owner id AND method. Bob's key grants t.quick and t.hold only:
    his t.fail and t.other jobs exist but are not his to see through it."""
    bob = world.users["bob"]
    owned = {j.method for j in world.jobs if j.owner_id == bob.user_id}
    assert {"t.fail", "t.other"} <= owned
    seen = {r["method"] for r in await query_jobs(world.app, bob, [], {})}
    assert seen == {"t.quick", "t.hold"}
    hidden = [["method", "in", ["t.fail", "t.other"]]]
    assert await query_jobs(world.app, bob, hidden, {"count": True}) == 0
    # His name is not what decides: a job of his user id is his, whatever it says.
    alice = world.users["alice"]
    mine = await query_jobs(world.app, alice, [], {"count": True})
    assert mine == sum(1 for j in world.jobs if j.owner_id == alice.user_id)


async def test_admins_see_exceptions_users_do_not(world: World) -> None:
    failed = [["state", "=", "FAILED"], ["credentials.data.username", "=", "alice"]]
    as_root = await query_jobs(world.app, world.users["root"], failed, {"limit": 3})
    as_alice = await query_jobs(world.app, world.users["alice"], failed, {"limit": 3})
    assert [r["id"] for r in as_root] == [r["id"] for r in as_alice]
    assert all("failure" in r["exception"] for r in as_root)
    assert all(r["exception"] is None for r in as_alice)


async def test_get_of_nothing_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        await query_jobs(world.app, world.users["root"], [["id", "=", 0]], {"get": True})


async def test_get_jobs_through_the_method(world: World) -> None:
    got = await world.app.call(
        "core.get_jobs", [["id", "<", 4]], {"order_by": ["-id"]}, credentials=world.users["root"]
    )
    assert [r["id"] for r in got] == [3, 2, 1]


# -- secrets ----------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def app(tmp_path: Path) -> AsyncIterator[Middleware]:
    middleware = Middleware(ServerConfig(data_dir=tmp_path, builtin_plugins=False))
    await middleware.start()
    yield middleware
    await middleware.stop()


async def test_a_bulk_calls_secrets_are_never_shown(app: Middleware) -> None:
    secret = "correct horse battery"
    root = app.directory.by_name("root")
    assert root is not None
    creds = app.directory.resolve(Identity(CredentialKind.LOGIN_PASSWORD, root.id))
    assert creds is not None
    statuses = await app.call(
        "core.bulk", "user.create", [[{"username": "carol", "password": secret}]], credentials=creds
    )
    assert statuses[0]["error"] is None
    records = await app.call("core.get_jobs", [["method", "=", "core.bulk"]], {}, credentials=creds)
    assert len(records) == 1
    assert secret not in repr(records[0]["arguments"])
