"""A WebSocket session driven in memory: a real (never started) Middleware, a fake transport.

Only what needs no store: framing, batches, notifications, limits, authentication refusals,
subscriptions and the outbox writer. Job calls need the store: see tests/integration.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from middlewared.app import Middleware
from middlewared.auth.credentials import CredentialKind, Credentials
from middlewared.config import Limits, ServerConfig
from middlewared.context import CallContext
from middlewared.events.bus import ADDED, CHANGED, Event
from middlewared.events.collections import Collection
from middlewared.registry import Param, Registry
from middlewared.services import core
from middlewared.ws.session import (
    CLOSE_TOO_BIG,
    CLOSE_TOO_SLOW,
    CLOSE_UNSUPPORTED,
    Session,
)

JOBS = "core.get_jobs"
ROOT = Credentials("root", admin=True, kind=CredentialKind.LOGIN_PASSWORD)
ALICE = Credentials("alice", admin=False, kind=CredentialKind.LOGIN_PASSWORD, allowlist=("t.*",))
LIMITS = Limits(
    max_frame_unauthenticated=1000,
    max_frame=100_000,
    max_inflight=3,
    max_pending_events=20,
    slow_reader_grace_seconds=0.05,
)


class Gates:
    """Events the test methods wait on or set, by name."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def __getitem__(self, name: str) -> asyncio.Event:
        return self._events.setdefault(name, asyncio.Event())


def make_registry(gates: Gates) -> Registry:
    reg = Registry("t")

    @reg.method(params=[Param("value")], public=True)
    async def echo(ctx: CallContext, value: Any) -> Any:
        """Return the value."""
        return value

    @reg.method(params=[Param("name", {"type": "string"})], public=True)
    async def hold(ctx: CallContext, name: str) -> str:
        """Say it started, then wait until the test lets it go."""
        gates[name + ".started"].set()
        await gates[name].wait()
        return name

    @reg.method(params=[Param("name", {"type": "string"})], public=True)
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
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.aborted = False
        self.release = asyncio.Event()
        self.release.set()
        # Cleared: close() never returns (a reader that does not take the close frame).
        self.close_taken = asyncio.Event()
        self.close_taken.set()

    async def send(self, frame: str) -> None:
        await self.release.wait()
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


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    gates = Gates()
    app = Middleware(ServerConfig(data_dir=tmp_path, builtin_plugins=False, limits=LIMITS))
    app.mount(core.registry)
    app.mount(make_registry(gates))
    app.collections.add(Collection(JOBS, "Jobs", open_to_all=True))
    harness = Harness(app, gates)
    harness.session.start()
    yield harness
    await harness.session.close()


def event(msg: str, obj_id: int, owner: str | None = "alice", **fields: Any) -> Event:
    admin = {"exception": "Traceback ..."}
    return Event(JOBS, msg, obj_id, {"id": obj_id, **fields}, owner, admin)


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
    h.session.login(ALICE)
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
    h.session.login(ROOT)
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
    h.session.login(ALICE)
    assert (await h.call("t.private_data"))["result"] == "data"
    reply = await h.call("no.such")
    assert reply["error"]["code"] == -32601
    assert reply["error"]["message"] == "Method does not exist"
    h.session.login(Credentials("bob", False, CredentialKind.LOGIN_PASSWORD, ("other.*",)))
    reply = await h.call("t.private_data")
    assert reply["error"]["code"] == -32001
    assert reply["error"]["data"]["errname"] == "EACCES"


async def test_logout_returns_to_the_public_methods_only(h: Harness) -> None:
    h.session.login(ALICE)
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
    h.session.login(ALICE)
    assert (await h.call("t.hold", 1))["error"]["data"]["trace"] is None
    h.session.login(ROOT)
    await h.call("core.set_options", {"tracebacks": True})
    trace = (await h.call("t.hold", 1))["error"]["data"]["trace"]
    assert trace is not None and "formatted" in trace


# -- subscriptions ----------------------------------------------------------------------


async def test_events_reach_a_subscriber_as_collection_update(h: Harness) -> None:
    h.session.login(ALICE)
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
    h.session.login(ALICE)
    await h.call("core.subscribe", JOBS)
    h.app.bus.publish(event(CHANGED, 1, owner="bob"))
    h.app.bus.publish(event(CHANGED, 2, owner="alice"))
    frame = await h.transport.next()
    assert frame["params"]["id"] == 2
    assert "exception" not in frame["params"]["fields"]


async def test_an_admin_sees_every_event_with_admin_fields(h: Harness) -> None:
    h.session.login(ROOT)
    await h.call("core.subscribe", JOBS)
    h.app.bus.publish(event(CHANGED, 1, owner="bob"))
    frame = await h.transport.next()
    assert frame["params"]["fields"]["exception"] == "Traceback ..."


async def test_unknown_collections_are_refused(h: Harness) -> None:
    h.session.login(ALICE)
    reply = await h.call("core.subscribe", "no.such.collection")
    assert reply["error"]["data"]["errname"] == "ENOENT"


async def test_unsubscribe_and_login_end_subscriptions(h: Harness) -> None:
    h.session.login(ALICE)
    sub_id = (await h.call("core.subscribe", JOBS))["result"]
    assert h.app.bus.has_subscribers(JOBS)
    await h.call("core.unsubscribe", sub_id)
    assert not h.app.bus.has_subscribers(JOBS)
    await h.call("core.subscribe", JOBS)
    h.session.login(ROOT)
    assert not h.app.bus.has_subscribers(JOBS)


async def test_a_slow_reader_gets_the_latest_state_of_each_object(h: Harness) -> None:
    h.session.login(ALICE)
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
    h.session.login(ALICE)
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
    h.session.login(ALICE)
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
    h.transport.release.clear()  # the first reply's send blocks, as on a full socket
    sent = 0
    reading: asyncio.Task[None] | None = None
    while reading is None and sent < 2 * LIMITS.max_inflight + 2:
        task = asyncio.create_task(h.send("{not json"))
        sent += 1
        await asyncio.sleep(0.02)
        if not task.done():
            reading = task
    assert reading is not None, sent
    assert len(h.session.outbox) == LIMITS.max_inflight
    h.transport.release.set()
    await asyncio.wait_for(reading, 5)
    for _ in range(sent):
        assert (await h.transport.next())["error"]["code"] == -32700


async def test_replies_nobody_reads_stop_the_reading(h: Harness) -> None:
    h.transport.release.clear()  # the first reply's send blocks, as on a full socket
    sent = 0
    reading: asyncio.Task[None] | None = None
    while reading is None and sent < 2 * LIMITS.max_inflight + 2:
        task = asyncio.create_task(h.send({"jsonrpc": "2.0", "method": "core.ping", "id": sent}))
        sent += 1
        await asyncio.sleep(0.02)
        if not task.done():
            reading = task
    # One reply being sent, the rest waiting in the outbox up to the bound: then the
    # connection reads nothing more (the request that reached the bound is answered too).
    assert reading is not None, sent
    assert LIMITS.max_inflight <= len(h.session.outbox) <= LIMITS.max_inflight + 1
    h.transport.release.set()
    await asyncio.wait_for(reading, 5)
    ids = {(await h.transport.next())["id"] for _ in range(sent)}
    assert ids == set(range(sent))


async def test_close_cancels_calls_and_ends_subscriptions(h: Harness) -> None:
    h.session.login(ALICE)
    await h.call("core.subscribe", JOBS)
    await h.send({"jsonrpc": "2.0", "method": "t.hold", "params": ["never"], "id": 1})
    await h.gates["never.started"].wait()
    await h.session.close()
    assert not h.app.bus.has_subscribers(JOBS)
    h.app.bus.publish(event(CHANGED, 1))
    assert h.transport.frames.empty()
    await h.session.close()  # twice is harmless
