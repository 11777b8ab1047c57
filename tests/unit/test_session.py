"""A WebSocket session driven in memory: a real (never started) Middleware, a fake transport.

Only what needs no job store: framing, batches, notifications, limits, authentication
refusals, subscriptions and the outbox writer. The users sessions log in as live in the
in-memory store (the server is not started). Job calls: see tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from middlewared.app import Middleware
from middlewared.auth.credentials import CredentialKind, Credentials, Identity
from middlewared.config import Limits, ServerConfig
from middlewared.context import CallContext
from middlewared.events.bus import ADDED, CHANGED, Event
from middlewared.registry import Access, Param, Registry
from middlewared.services import core
from middlewared.ws.session import (
    CLOSE_TOO_BIG,
    CLOSE_TOO_SLOW,
    CLOSE_UNSUPPORTED,
    Session,
    State,
)

JOBS = "core.get_jobs"
# Users by name, with the ids the directory gives them in this order.
USERS: dict[str, dict[str, Any]] = {
    # An administrator who can log in: the directory refuses changes while there is none.
    "root": {"admin": True, "password": "pw"},
    "alice": {"allowlist": ["t.*"]},
    "bob": {"allowlist": ["other.*"]},
}
ROOT_ID, ALICE_ID, BOB_ID = 1, 2, 3
LIMITS = Limits(
    max_frame_unauthenticated=1000,
    max_frame=100_000,
    max_inflight=3,
    max_pending_events=20,
    slow_reader_grace_seconds=0.05,
    max_batch=5,
    max_subscriptions=3,
)


class Gates:
    """Events the test methods wait on or set, by name."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def __getitem__(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())


def make_registry(gates: Gates) -> Registry:
    reg = Registry("t")

    @reg.method(params=[Param("value")], access=Access.PUBLIC)
    async def echo(ctx: CallContext, value: Any) -> Any:
        """Return the value."""
        return value

    @reg.method(params=[Param("name", {"type": "string"})], access=Access.PUBLIC)
    async def hold(ctx: CallContext, name: str) -> str:
        """Say it started, then wait until the test lets it go."""
        gates[name + ".started"].set()
        await gates[name].wait()
        return name

    @reg.method(params=[Param("name", {"type": "string"})], access=Access.PUBLIC)
    async def mark(ctx: CallContext, name: str) -> None:
        """Set a gate (a notification's visible effect)."""
        gates[name].set()

    @reg.method()
    async def private_data(ctx: CallContext) -> str:
        """Callable by a logged-in user whose allow-list matches."""
        return "data"

    return reg


class FakeTransport:
    """What the session writes to; frames arrive on a queue, closing sets an event."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[Any] = asyncio.Queue()
        # Sends waiting for ``release`` (a socket that takes nothing).
        self.blocked = 0
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.aborted = False
        self.release = asyncio.Event()
        self.release.set()
        # Cleared: close() never returns (a reader that does not take the close frame).
        self.close_taken = asyncio.Event()
        self.close_taken.set()

    async def send(self, frame: str) -> None:
        self.blocked += 1
        try:
            await self.release.wait()
        finally:
            self.blocked -= 1
        self.frames.put_nowait(json.loads(frame))

    async def send_many(self, frames: list[str]) -> None:
        for frame in frames:
            await self.send(frame)

    async def close(self, code: int, reason: str) -> None:
        self.close_code = code
        await self.close_taken.wait()
        self.closed.set()

    def abort(self) -> None:
        self.aborted = True
        self.closed.set()

    async def next(self) -> Any:
        return await self.frames.get()


class Harness:
    def __init__(self, app: Middleware, gates: Gates) -> None:
        self.app = app
        self.gates = gates
        self.transport = FakeTransport()
        self.session = Session(app, self.transport, "192.0.2.7")

    async def send(self, obj: Any) -> None:
        await self.session.on_text(obj if isinstance(obj, str) else json.dumps(obj))

    async def call(self, method: str, *params: Any, msg_id: Any = 1) -> Any:
        await self.send({"jsonrpc": "2.0", "method": method, "params": list(params), "id": msg_id})
        return await self.transport.next()

    def login(self, username: str) -> Credentials:
        """Log the session in as a password login of ``username`` would (the directory
        resolves the identity)."""
        user = self.app.directory.by_name(username)
        assert user is not None
        creds = self.session.login(Identity(CredentialKind.LOGIN_PASSWORD, user.id))
        assert creds is not None and creds.username == username
        return creds


async def until(condition: Callable[[], bool], what: str) -> None:
    """Let the other tasks run until ``condition`` holds (a deadline, not a delay)."""
    deadline = asyncio.get_running_loop().time() + 5
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    gates = Gates()
    config = ServerConfig(
        data_dir=tmp_path, builtin_plugins=False, limits=LIMITS, store="memory://"
    )
    app = Middleware(config)
    app.mount(core.registry)
    app.mount(make_registry(gates))
    # The server is not started: only its store and directory, for the users.
    await app.store.open()
    await app.directory.load()
    ids = [(await app.directory.create_user({"username": n, **d})).id for n, d in USERS.items()]
    assert ids == [ROOT_ID, ALICE_ID, BOB_ID]
    harness = Harness(app, gates)
    harness.session.start()
    yield harness
    await harness.session.close()
    app.hasher.close()
    await app.store.close()


def event(
    msg: str,
    obj_id: int,
    owner: int | None = ALICE_ID,
    method: str = "t.private_data",
    **fields: Any,
) -> Event:
    """A job event: seen by full admins, and by its owner (a user id) if the owner may see
    the job's method."""
    admin = {"exception": "Traceback ..."}
    return Event(JOBS, msg, obj_id, {"id": obj_id, **fields}, owner, admin, method=method)


# -- calls ------------------------------------------------------------------------------


async def test_a_call_gets_its_reply(h: Harness) -> None:
    assert await h.call("t.echo", {"a": [1]}, msg_id="x") == {
        "jsonrpc": "2.0",
        "result": {"a": [1]},
        "id": "x",
    }
    assert (await h.call("core.ping"))["result"] == "pong"


async def test_invalid_json_gets_a_parse_error_with_a_null_id(h: Harness) -> None:
    await h.send("{nope")
    reply = await h.transport.next()
    assert reply["id"] is None
    assert reply["error"]["code"] == -32700
    assert set(reply["error"]["data"]) == {"error", "errname", "reason", "extra", "trace"}


async def test_a_frame_that_fails_unexpectedly_gets_32603_and_one_log_line(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Text that is not UTF-8 (a lone surrogate): aiohttp never hands such text over, so
    # the size check's encode() is not ready for it. That failure must not reach aiohttp.
    bad = '{"jsonrpc": "2.0", "id": 1, "method": "t.echo", "params": ["\ud800' + "x" * 300 + '"]}'
    for _ in range(5):
        await h.send(bad)
        reply = await h.transport.next()
        assert (reply["id"], reply["error"]["code"]) == (None, -32603)
        assert "failed to handle this frame" in reply["error"]["data"]["reason"]
    assert (await h.call("core.ping"))["result"] == "pong"
    failed = [r for r in caplog.records if "a frame failed" in r.getMessage()]
    assert len(failed) == 1


async def test_an_event_with_no_json_form_is_dropped_and_the_writer_goes_on(h: Harness) -> None:
    h.login("alice")
    await h.call("core.subscribe", JOBS)
    h.app.bus.publish(event(CHANGED, 1, extra={1, 2}))
    h.app.bus.publish(event(CHANGED, 2, name="caf\udce9"))
    frame = await asyncio.wait_for(h.transport.next(), 10)
    assert frame["params"]["id"] == 2 and frame["params"]["fields"]["name"] == "caf\udce9"
    assert (await h.call("core.ping"))["result"] == "pong"


async def test_an_invalid_request_keeps_its_id(h: Harness) -> None:
    await h.send({"jsonrpc": "1.0", "method": "t.echo", "id": 9})
    reply = await h.transport.next()
    assert (reply["id"], reply["error"]["code"]) == (9, -32600)


async def test_invalid_params_are_32602_with_the_fields(h: Harness) -> None:
    reply = await h.call("t.hold", 5)
    assert reply["error"]["code"] == -32602
    assert reply["error"]["data"]["extra"][0][0] == "name"


async def test_a_notification_runs_and_gets_no_reply(h: Harness) -> None:
    await h.send({"jsonrpc": "2.0", "method": "t.mark", "params": ["n"]})
    await h.gates["n"].wait()
    # The next reply is the next call's: nothing was sent for the notification.
    assert (await h.call("t.echo", 1, msg_id=2))["id"] == 2
    assert h.transport.frames.empty()


async def test_a_failing_notification_gets_no_reply_either(h: Harness) -> None:
    await h.send({"jsonrpc": "2.0", "method": "no.such"})
    await h.send({"jsonrpc": "2.0", "method": "t.hold", "params": [1]})
    assert (await h.call("t.echo", 1, msg_id=3))["id"] == 3
    assert h.transport.frames.empty()


async def test_replies_may_come_in_any_order_each_with_its_id(h: Harness) -> None:
    await h.send({"jsonrpc": "2.0", "method": "t.hold", "params": ["slow"], "id": 1})
    await h.gates["slow.started"].wait()
    assert (await h.call("t.echo", "fast", msg_id=2))["id"] == 2
    h.gates["slow"].set()
    assert (await h.transport.next())["result"] == "slow"


# -- batches ----------------------------------------------------------------------------


async def test_a_batch_is_answered_with_one_array(h: Harness) -> None:
    await h.send(
        [
            {"jsonrpc": "2.0", "method": "t.echo", "params": [1], "id": 1},
            {"jsonrpc": "2.0", "method": "t.mark", "params": ["b"]},
            {"foo": "boo"},
            {"jsonrpc": "2.0", "method": "no.such", "id": 4},
        ]
    )
    replies = await h.transport.next()
    assert isinstance(replies, list)
    by_id = {r["id"]: r for r in replies}
    assert len(replies) == 3
    assert by_id[1]["result"] == 1
    assert by_id[None]["error"]["code"] == -32600
    # Before login an unknown method is "not authenticated": which exist is not revealed.
    assert by_id[4]["error"]["data"]["errname"] == "ENOTAUTHENTICATED"
    assert h.gates["b"].is_set()


async def test_a_batch_of_notifications_gets_nothing(h: Harness) -> None:
    await h.send(
        [
            {"jsonrpc": "2.0", "method": "t.mark", "params": ["x"]},
            {"jsonrpc": "2.0", "method": "t.mark", "params": ["y"]},
        ]
    )
    await h.gates["x"].wait()
    await h.gates["y"].wait()
    assert (await h.call("t.echo", 0, msg_id=5))["id"] == 5
    assert h.transport.frames.empty()


async def test_an_empty_batch_is_one_invalid_request(h: Harness) -> None:
    await h.send("[]")
    reply = await h.transport.next()
    assert isinstance(reply, dict) and reply["error"]["code"] == -32600


# -- limits -----------------------------------------------------------------------------


async def test_too_many_calls_in_flight(h: Harness) -> None:
    for i in range(LIMITS.max_inflight):
        await h.send({"jsonrpc": "2.0", "method": "t.hold", "params": [f"g{i}"], "id": i})
        await h.gates[f"g{i}.started"].wait()
    reply = await h.call("t.echo", 1, msg_id="over")
    assert reply["id"] == "over"
    assert reply["error"]["code"] == -32000
    assert reply["error"]["data"]["errname"] == "EBUSY"
    # A notification over the limit is dropped silently.
    await h.send({"jsonrpc": "2.0", "method": "t.mark", "params": ["dropped"]})
    h.gates["g0"].set()
    assert (await h.transport.next())["id"] == 0
    # Room again.
    assert (await h.call("t.echo", 2, msg_id="again"))["result"] == 2
    assert not h.gates["dropped"].is_set()
    h.gates["g1"].set()
    h.gates["g2"].set()


async def test_a_frame_over_the_limit_before_login_closes_1009(h: Harness) -> None:
    await h.send({"jsonrpc": "2.0", "method": "t.echo", "params": ["x" * 2000], "id": 1})
    await h.transport.closed.wait()
    assert h.transport.close_code == CLOSE_TOO_BIG


async def test_after_login_the_larger_limit_applies(h: Harness) -> None:
    h.login("root")
    reply = await h.call("t.echo", "x" * 2000)
    assert reply["result"] == "x" * 2000


async def test_the_frame_limit_counts_bytes(h: Harness) -> None:
    call = {"jsonrpc": "2.0", "method": "t.echo", "params": ["☃" * 400]}
    frame = json.dumps(call, ensure_ascii=False)
    assert len(frame) < LIMITS.max_frame_unauthenticated < len(frame.encode())
    await h.send(frame)
    assert h.transport.close_code == CLOSE_TOO_BIG


async def test_a_binary_frame_closes_1003(h: Harness) -> None:
    await h.session.on_binary()
    assert h.transport.close_code == CLOSE_UNSUPPORTED


# -- authentication ---------------------------------------------------------------------


async def test_before_login_only_public_methods(h: Harness) -> None:
    reply = await h.call("t.private_data")
    assert reply["error"]["code"] == -32001
    assert reply["error"]["data"]["error"] == 207
    assert (await h.call("core.subscribe", JOBS))["error"]["data"]["error"] == 207


async def test_after_login_allowlist_and_unknown_methods(h: Harness) -> None:
    h.login("alice")
    assert (await h.call("t.private_data"))["result"] == "data"
    reply = await h.call("no.such")
    assert reply["error"]["code"] == -32601
    assert reply["error"]["message"] == "Method does not exist"
    h.login("bob")
    reply = await h.call("t.private_data")
    assert reply["error"]["code"] == -32001
    assert reply["error"]["data"]["errname"] == "EACCES"


async def test_an_identity_that_does_not_resolve_stays_logged_out(h: Harness) -> None:
    assert h.session.login(Identity(CredentialKind.LOGIN_PASSWORD, 99)) is None
    assert (h.session.state, h.session.credentials) == (State.CONNECTED, None)
    assert (await h.call("t.private_data"))["error"]["data"]["error"] == 207


async def test_logout_returns_to_the_public_methods_only(h: Harness) -> None:
    h.login("alice")
    h.session.logout()
    assert (await h.call("t.private_data"))["error"]["data"]["error"] == 207


async def test_set_options_answers_the_options_in_effect(h: Harness) -> None:
    reply = await h.call("core.set_options", {"legacy_jobs": True, "py_exceptions": True})
    assert reply["result"] == {
        "legacy_jobs": True,
        "private_methods": False,
        "py_exceptions": True,
        "tracebacks": False,
    }


async def test_tracebacks_only_for_admins_who_ask(h: Harness) -> None:
    await h.call("core.set_options", {"tracebacks": True})
    h.login("alice")
    assert (await h.call("t.hold", 1))["error"]["data"]["trace"] is None
    h.login("root")
    await h.call("core.set_options", {"tracebacks": True})
    trace = (await h.call("t.hold", 1))["error"]["data"]["trace"]
    assert trace is not None and "formatted" in trace


# -- subscriptions ----------------------------------------------------------------------


async def test_events_reach_a_subscriber_as_collection_update(h: Harness) -> None:
    h.login("alice")
    sub_id = (await h.call("core.subscribe", JOBS))["result"]
    assert isinstance(sub_id, str)
    h.app.bus.publish(event(ADDED, 1, state="RUNNING"))
    frame = await h.transport.next()
    assert frame == {
        "jsonrpc": "2.0",
        "method": "collection_update",
        "params": {
            "msg": "added",
            "collection": JOBS,
            "id": 1,
            "fields": {"id": 1, "state": "RUNNING"},
        },
    }


async def test_a_subscriber_sees_only_what_it_may_read(h: Harness) -> None:
    h.login("alice")
    await h.call("core.subscribe", JOBS)
    h.app.bus.publish(event(CHANGED, 1, owner=BOB_ID))
    h.app.bus.publish(event(CHANGED, 2, owner=None))  # the server's own job: admins only
    # Her own job, of a method her allow-list (t.*) does not grant: not hers to see.
    h.app.bus.publish(event(CHANGED, 3, owner=ALICE_ID, method="x.secret"))
    h.app.bus.publish(event(CHANGED, 4, owner=ALICE_ID))
    frame = await h.transport.next()
    assert frame["params"]["id"] == 4
    assert "exception" not in frame["params"]["fields"]


async def test_an_admin_sees_every_event_with_admin_fields(h: Harness) -> None:
    h.login("root")
    await h.call("core.subscribe", JOBS)
    h.app.bus.publish(event(CHANGED, 1, owner=BOB_ID, method="x.secret"))
    frame = await h.transport.next()
    assert frame["params"]["fields"]["exception"] == "Traceback ..."
    h.app.bus.publish(event(CHANGED, 2, owner=None))
    assert (await h.transport.next())["params"]["id"] == 2


async def test_unknown_collections_are_refused(h: Harness) -> None:
    h.login("alice")
    reply = await h.call("core.subscribe", "no.such.collection")
    assert reply["error"]["data"]["errname"] == "ENOENT"


async def test_unsubscribe_and_login_end_subscriptions(h: Harness) -> None:
    h.login("alice")
    sub_id = (await h.call("core.subscribe", JOBS))["result"]
    assert h.app.bus.has_consumers(JOBS)
    await h.call("core.unsubscribe", sub_id)
    assert not h.app.bus.has_consumers(JOBS)
    await h.call("core.subscribe", JOBS)
    h.login("root")
    assert not h.app.bus.has_consumers(JOBS)


async def test_a_slow_reader_gets_the_latest_state_of_each_object(h: Harness) -> None:
    h.login("alice")
    await h.call("core.subscribe", JOBS)
    h.transport.release.clear()  # the reader stops reading
    h.app.bus.publish(event(CHANGED, 0, version=-1))
    for version in range(100):
        for obj in (1, 2):
            h.app.bus.publish(event(CHANGED, obj, version=version))
    h.transport.release.set()
    seen: list[tuple[int, int]] = []
    while (1, 99) not in seen or (2, 99) not in seen:
        frame = await h.transport.next()
        seen.append((frame["params"]["id"], frame["params"]["fields"]["version"]))
    # The one the writer held when the reader stopped, then the latest of each other object.
    assert seen == [(0, -1), (1, 99), (2, 99)]
    assert h.transport.close_code is None


async def test_a_reader_too_far_behind_is_closed_4008(h: Harness) -> None:
    h.login("alice")
    await h.call("core.subscribe", JOBS)
    h.transport.release.clear()
    h.app.bus.publish(event(CHANGED, 0))
    for obj in range(1, LIMITS.max_pending_events + 2):
        h.app.bus.publish(event(CHANGED, obj))
    h.transport.release.set()
    await h.transport.closed.wait()
    assert h.transport.close_code == CLOSE_TOO_SLOW
    assert not h.transport.aborted


async def test_a_reader_that_does_not_take_the_close_is_reset(h: Harness) -> None:
    h.login("alice")
    await h.call("core.subscribe", JOBS)
    h.transport.release.clear()  # the writer blocks, as on a full socket
    h.transport.close_taken.clear()
    for obj in range(LIMITS.max_pending_events + 2):
        h.app.bus.publish(event(CHANGED, obj))
    await asyncio.wait_for(h.transport.closed.wait(), 5)
    assert h.transport.close_code == CLOSE_TOO_SLOW
    assert h.transport.aborted
    assert not h.session.subscriptions
    assert len(h.session.outbox) == 0


async def test_error_replies_nobody_reads_stop_the_reading_too(h: Harness) -> None:
    h.transport.release.clear()  # sends block, as on a full socket
    outbox = h.session.outbox
    await h.send("{not json")
    await until(lambda: h.transport.blocked == 1, "the writer to be stuck on the first reply")
    # The next replies wait in the outbox; requests are read while fewer than max_inflight
    # wait...
    for waiting in range(1, LIMITS.max_inflight):
        await asyncio.wait_for(h.send("{not json"), 5)
        assert len(outbox) == waiting
    # ... and the one whose reply reaches the bound is where the reading stops.
    reading = asyncio.create_task(h.send("{not json"))
    await until(lambda: len(outbox) == LIMITS.max_inflight, "the reply that reaches the bound")
    assert not reading.done()
    h.transport.release.set()
    await asyncio.wait_for(reading, 5)
    for _ in range(LIMITS.max_inflight + 1):
        assert (await h.transport.next())["error"]["code"] == -32700
    assert h.transport.frames.empty()


async def test_replies_nobody_reads_stop_the_reading(h: Harness) -> None:
    h.transport.release.clear()  # sends block, as on a full socket
    outbox = h.session.outbox

    def ping(msg_id: int) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": "core.ping", "id": msg_id}

    # The first reply is sent by its call's own task, the second by the writer: both stuck.
    await h.send(ping(0))
    await until(lambda: h.transport.blocked == 1, "the first reply to be stuck")
    await h.send(ping(1))
    await until(lambda: h.transport.blocked == 2, "the writer to be stuck on the second")
    sent = 2

    def holds(n: int) -> Callable[[], bool]:
        return lambda: len(outbox) == n

    # Then replies wait in the outbox up to the bound, the connection reading meanwhile...
    for waiting in range(1, LIMITS.max_inflight + 1):
        await asyncio.wait_for(h.send(ping(sent)), 5)
        sent += 1
        await until(holds(waiting), f"{waiting} replies to wait")
    # ... then it reads nothing more (the request that found the bound reached is answered
    # too: its reply is queued past the bound, and none after it).
    reading = asyncio.create_task(h.send(ping(sent)))
    sent += 1
    await until(holds(LIMITS.max_inflight + 1), "the last request's reply")
    assert not reading.done()
    h.transport.release.set()
    await asyncio.wait_for(reading, 5)
    ids = {(await h.transport.next())["id"] for _ in range(sent)}
    assert ids == set(range(sent))
    assert h.transport.frames.empty()


async def test_a_batch_over_the_limit_is_refused_whole(h: Harness) -> None:
    calls = [
        {"jsonrpc": "2.0", "method": "t.mark", "params": [f"m{i}"], "id": i}
        for i in range(LIMITS.max_batch + 1)
    ]
    await h.send(calls)
    reply = await h.transport.next()
    assert isinstance(reply, dict) and reply["id"] is None
    assert reply["error"]["code"] == -32600
    assert f"at most {LIMITS.max_batch}" in reply["error"]["data"]["reason"]
    assert not any(h.gates[f"m{i}"].is_set() for i in range(LIMITS.max_batch + 1))
    # One at the limit is taken.
    await h.send(calls[: LIMITS.max_batch])
    assert len(await h.transport.next()) == LIMITS.max_batch


async def test_subscriptions_per_connection_are_bounded(h: Harness) -> None:
    h.login("alice")
    subs = [
        (await h.call("core.subscribe", JOBS))["result"] for _ in range(LIMITS.max_subscriptions)
    ]
    reply = await h.call("core.subscribe", JOBS)
    assert reply["error"]["data"]["errname"] == "EBUSY"
    await h.call("core.unsubscribe", subs[0])
    assert isinstance((await h.call("core.subscribe", JOBS))["result"], str)


async def test_a_revoked_identity_is_logged_out_and_told_why(h: Harness) -> None:
    h.login("alice")
    await h.call("core.subscribe", JOBS)
    # Her allow-list changes: the session takes her rights as they are now.
    await h.app.directory.update_user(ALICE_ID, {"allowlist": ["other.*"]})
    reply = await h.call("t.private_data")
    assert reply["error"]["data"]["errname"] == "EACCES"
    # The events of her t.* jobs no longer reach her.
    h.app.bus.publish(event(CHANGED, 1))
    h.app.bus.publish(event(CHANGED, 2, method="other.run"))
    assert (await h.transport.next())["params"]["id"] == 2
    # Locked: logged out at once, the subscription ended with a notice saying why.
    await h.app.directory.update_user(ALICE_ID, {"locked": True})
    notice = await h.transport.next()
    assert notice["method"] == "notify_unsubscribed"
    assert notice["params"]["collection"] == JOBS
    assert "revoked" in notice["params"]["error"]["reason"]
    assert (h.session.state, h.session.credentials) == (State.CONNECTED, None)
    assert not h.app.bus.has_consumers(JOBS)
    assert (await h.call("t.private_data"))["error"]["data"]["error"] == 207


async def test_close_cancels_calls_and_ends_subscriptions(h: Harness) -> None:
    h.login("alice")
    await h.call("core.subscribe", JOBS)
    await h.send({"jsonrpc": "2.0", "method": "t.hold", "params": ["never"], "id": 1})
    await h.gates["never.started"].wait()
    await h.session.close()
    assert not h.app.bus.has_consumers(JOBS)
    h.app.bus.publish(event(CHANGED, 1))
    assert h.transport.frames.empty()
    await h.session.close()  # twice is harmless
