"""The trigger engine on a real SQLite store, against a fake clock: schedules, missed runs
across a restart, once-only types, overlap, debounce, events and their rules, owners that
go away, chains, and fires that are stored exactly once with their job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from middlewared.app import Middleware
from middlewared.auth.credentials import CredentialKind, Credentials, Identity
from middlewared.config import ServerConfig
from middlewared.context import CallContext
from middlewared.errors import ValidationErrors
from middlewared.events.bus import ADDED, CHANGED, Event
from middlewared.jobs.job import Job
from middlewared.registry import Access, JobOptions, Param, Registry
from middlewared.triggers.clock import FakeClock
from middlewared.triggers.engine import TriggerEngine

START = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@dataclass
class Bench:
    """What the test methods saw: calls by name, gates they wait on."""

    calls: list[tuple[str, list[Any]]] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())


def make_registry(bench: Bench) -> Registry:
    reg = Registry("t")
    anything: dict[str, Any] = {}

    @reg.method(params=[Param("tag", {"type": "string"})], job=JobOptions())
    async def run(ctx: CallContext, job: Job, tag: str) -> str:
        """Record the call."""
        bench.calls.append((tag, []))
        return tag

    @reg.method(
        params=[Param("tag", {"type": "string"}), Param("payload", anything, required=False)],
        job=JobOptions(),
    )
    async def seen(ctx: CallContext, job: Job, tag: str, payload: Any) -> None:
        """Record the call and what a trigger passed."""
        bench.calls.append((tag, [payload]))

    @reg.method(params=[Param("gate", {"type": "string"})], job=JobOptions(abortable=True))
    async def hold(ctx: CallContext, job: Job, gate: str) -> str:
        """Wait on a gate."""
        bench.calls.append((gate, []))
        await bench.gate(gate).wait()
        return gate

    @reg.method(params=[Param("x", {"type": "integer"})], access=Access.PUBLIC)
    async def plain(ctx: CallContext, x: int) -> int:
        """Not a job."""
        return x

    reg.collection("t.things", "Things", open_to_all=True)
    return reg


@dataclass
class World:
    app: Middleware
    clock: FakeClock
    bench: Bench
    root: Credentials
    alice: Credentials

    @property
    def engine(self) -> TriggerEngine:
        return self.app.triggers

    async def create(self, creds: Credentials | None = None, **data: Any) -> dict[str, Any]:
        record: dict[str, Any] = await self.app.calls.call(
            "trigger.create", [data], creds or self.root
        )
        return record

    async def advance(self, seconds: float) -> None:
        """Move the clock and let everything it started run (fires, their jobs)."""
        self.clock.advance(seconds)
        await self.settle()

    async def settle(self) -> None:
        """Until nothing moves: fires done, their jobs ended (but those holding a gate),
        what their ends set off (state saves, event fires) done too."""
        while True:
            await self.engine.drain()
            if self.engine._listener is not None:
                await self.engine._listener.drain()
            running = [
                j.done for j in self.app.jobs.live.values() if not j.ended and j.method != "t.hold"
            ]
            if not running and not self.engine._tasks:
                break
            await asyncio.gather(*running, return_exceptions=True)
        await self.app.store.write([])

    def tags(self) -> list[str]:
        return [tag for tag, _ in self.bench.calls]


async def open_world(data_dir: Path, clock: FakeClock, bench: Bench) -> World:
    app = Middleware(
        ServerConfig(data_dir=data_dir, builtin_plugins=False, shutdown_grace_seconds=0)
    )
    app.load_plugins()
    app.mount(make_registry(bench))
    app.triggers = TriggerEngine(app, clock)
    await app.start()
    root_user = app.directory.by_name("root")
    if app.directory.by_name("alice") is None:
        await app.directory.create_user({"username": "alice", "allowlist": ["t.*", "trigger.*"]})
    alice_user = app.directory.by_name("alice")
    assert root_user is not None and alice_user is not None
    root = app.directory.resolve(Identity(CredentialKind.LOGIN_PASSWORD, root_user.id))
    alice = app.directory.resolve(Identity(CredentialKind.LOGIN_PASSWORD, alice_user.id))
    assert root is not None and alice is not None
    return World(app, clock, bench, root, alice)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = await open_world(tmp_path, FakeClock(START), Bench())
    yield w
    for gate in w.bench.gates.values():
        gate.set()
    await w.app.stop()


async def test_every_fires_on_its_grid_and_records_its_state(world: World) -> None:
    trig = await world.create(type="@every", arguments="10s", method="t.run", params=["tick"])
    assert trig["next_run"] == {"$date": int((START + 10) * 1000)}
    await world.advance(9.9)
    assert world.tags() == []
    await world.advance(0.1)
    assert world.tags() == ["tick"]
    await world.advance(25)  # two more due times: 20 s and 30 s
    assert world.tags() == ["tick"] * 3
    record = await world.app.calls.call("trigger.get_instance", [trig["id"]], world.root)
    state = record["current_state"]
    assert state["status"] == "done" and state["last_successful_job_id"] is not None
    jobs = await world.app.calls.call("trigger.jobs", [trig["id"], {}], world.root)
    assert [j["origin"] for j in jobs] == [f"trigger:{trig['id']}"] * 3
    assert jobs[0]["id"] > jobs[-1]["id"]  # newest first
    assert record["next_run"] == {"$date": int((START + 40) * 1000)}


async def test_cron_in_a_timezone(world: World) -> None:
    await world.create(
        type="@cron",
        arguments="0 9 * * *",
        method="t.run",
        params=["nine"],
        options={"timezone": "Europe/Paris"},
    )
    await world.advance(7 * 3600 + 59 * 60)  # 07:59 UTC = 08:59 in Paris
    assert world.tags() == []
    await world.advance(60)
    assert world.tags() == ["nine"]


async def test_in_fires_once_then_the_trigger_is_gone(world: World) -> None:
    trig = await world.create(type="@in", arguments="5s", method="t.run", params=["once"])
    await world.advance(5)
    await world.advance(100)
    assert world.tags() == ["once"]
    assert trig["id"] not in world.engine.triggers
    assert await world.app.calls.call("trigger.query", [[], {}], world.root) == []


async def test_bad_triggers_are_refused_at_create_naming_the_field(world: World) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"type": "@cron", "arguments": "0 0 32 * *"}, "arguments", "day of month"),
        ({"type": "@cron", "arguments": "* * * * * * *"}, "arguments", "fields"),
        ({"type": "@every", "arguments": "0s"}, "arguments", ""),
        ({"type": "@every", "arguments": "-5m"}, "arguments", ""),
        (
            {"type": "@every", "arguments": "1h", "options": {"timezone": "Mars/Olympus"}},
            "options.timezone",
            "Mars",
        ),
        ({"type": "@event", "arguments": "no.such:CREATED"}, "arguments", "unknown collection"),
        ({"type": "@event", "arguments": "t.things:SHOUTED"}, "arguments", ""),
        ({"type": "@client", "arguments": "x"}, "arguments", "no arguments"),
        ({"type": "@client", "method": "t.plain", "params": [1]}, "method", "not a job"),
        ({"type": "@client", "params": []}, "params", ""),
        ({"type": "@client", "debounce": "1m"}, "debounce", ""),
        ({"type": "@webhook", "auth": {"kind": "none"}}, "auth.kind", "unsigned"),
        (
            {"type": "@webhook", "auth": {"kind": "hmac-sha256", "secret": "short"}},
            "auth.secret",
            "16",
        ),
    ]
    for given, field_name, words in cases:
        data: dict[str, Any] = {"method": "t.run", "params": ["x"], **given}
        with pytest.raises(ValidationErrors) as refused:
            await world.create(None, **data)
        fields = [f for f, _, _ in refused.value.errors]
        assert any(f.startswith(field_name) for f in fields), (data, refused.value.errors)
        assert words.lower() in refused.value.reason.lower(), (data, refused.value.reason)
    assert world.engine.triggers == {}


async def test_missed_runs_across_a_restart(tmp_path: Path) -> None:
    bench = Bench()
    clock = FakeClock(START)
    world = await open_world(tmp_path, clock, bench)
    await world.create(type="@every", arguments="1m", method="t.run", params=["skip"])
    await world.create(
        type="@every", arguments="1m", method="t.run", params=["once"], options={"missed": "once"}
    )
    at = "2026-01-01T00:30:00Z"
    await world.create(type="@at", arguments=at, method="t.run", params=["at"])
    await world.advance(60)
    assert sorted(world.tags()) == ["once", "skip"]
    await world.app.stop()
    # Down for an hour: the @at passed, as did 59 runs of each @every.
    clock.advance(3600)
    again = await open_world(tmp_path, clock, bench)
    await again.advance(0)  # what is due at start runs at once
    assert sorted(bench.calls[i][0] for i in range(2, len(bench.calls))) == ["at", "once"]
    await again.advance(60)
    tail = sorted(tag for tag, _ in bench.calls[4:])
    assert tail == ["once", "skip"]
    await again.app.stop()


async def test_overlap_queue_skip_allow(world: World) -> None:
    made = {}
    for policy in ("queue", "skip", "allow"):
        made[policy] = await world.create(
            type="@client", method="t.hold", params=[f"g-{policy}"], options={"overlap": policy}
        )
    fired: dict[str, list[int]] = {}
    for policy, trig in made.items():
        engine = world.engine
        trigger = engine.triggers[trig["id"]]
        jobs = [await engine.fire(trigger, due=i) for i in range(1, 4)]
        fired[policy] = [j.id for j in jobs if j is not None]
    assert len(fired["queue"]) == 2  # one runs, one waits, the third is dropped
    assert len(fired["skip"]) == 1
    assert len(fired["allow"]) == 3
    queued = world.app.jobs.get_live(fired["queue"][1])
    assert queued is not None and queued.state.value == "WAITING"
    for gate in ("g-queue", "g-skip", "g-allow"):
        world.bench.gate(gate).set()
    await world.settle()


async def test_a_fire_is_stored_once_with_its_job(world: World) -> None:
    trig = await world.create(type="@client", method="t.run", params=["x"])
    trigger = world.engine.triggers[trig["id"]]
    first = await world.engine.fire(trigger, due=42)
    assert first is not None
    # The same due time again (a second node, a replay): refused by the store, no job.
    before = set(world.app.jobs.live) | {first.id}
    again = await world.engine.fire(trigger, due=42)
    assert again is None
    await world.settle()
    jobs = await world.app.calls.call("trigger.jobs", [trig["id"], {}], world.root)
    assert [j["id"] for j in jobs] == [first.id]
    assert not set(world.app.jobs.live) - before


async def publish(world: World, msg: str, obj_id: Any, **fields: Any) -> None:
    world.app.publish(Event("t.things", msg, obj_id, fields, everyone=True))
    assert world.engine._listener is not None
    await world.engine._listener.drain()


async def test_event_rules_values_and_the_changed_rule(world: World) -> None:
    await world.create(type="@event", arguments="t.things:CREATED", method="t.run", params=["new"])
    await world.create(
        type="@event",
        arguments="t.things:UPDATED:!=:colour",
        method="t.run",
        params=["recoloured"],
    )
    await world.create(
        type="@event",
        arguments="t.things:CREATED,UPDATED:red:colour",
        method="t.run",
        params=["red"],
    )
    await publish(world, ADDED, 1, colour="blue")
    await world.settle()
    assert sorted(world.tags()) == ["new"]
    await publish(world, CHANGED, 1, colour="blue")
    await world.settle()
    assert sorted(world.tags()) == ["new"]  # nothing changed
    await publish(world, CHANGED, 1, colour="red")
    await world.settle()
    assert sorted(world.tags()) == ["new", "recoloured", "red"]


async def test_debounce_absorbs_and_passes_every_event(world: World) -> None:
    trig = await world.create(
        type="@event",
        arguments="t.things:CREATED",
        method="t.seen",
        params=["batch"],
        debounce="1m",
        pass_event=True,
    )
    for i in range(5):
        await publish(world, ADDED, i, n=i)
        await world.advance(10)
    assert world.tags() == []
    await world.advance(10)  # the window opened 60 s ago: it closes now, not extended
    assert world.tags() == ["batch"]
    payload = world.bench.calls[0][1][0]
    assert payload["trigger_id"] == trig["id"]
    assert [e["id"] for e in payload["events"]] == [0, 1, 2, 3, 4]
    await publish(world, ADDED, 9, n=9)
    await world.advance(60)
    assert world.tags() == ["batch", "batch"]


async def test_a_trigger_never_fires_on_its_own_jobs(world: World) -> None:
    # Every job event: its own jobs would otherwise fire it for ever.
    await world.create(
        type="@event", arguments="core.get_jobs:CREATED", method="t.run", params=["echo"]
    )
    await world.app.calls.call("t.run", ["outside"], world.root)
    await world.settle()
    await world.settle()
    assert sorted(world.tags()) == ["echo", "outside"]


async def test_chains_of_triggers_are_bounded(world: World) -> None:
    # A and B fire on each other's jobs: a loop the chain bound stops.
    for name in ("a", "b"):
        await world.create(
            type="@event",
            arguments="core.get_jobs:CREATED:t.run:method",
            method="t.run",
            params=[name],
        )
    await world.app.calls.call("t.run", ["start"], world.root)
    for _ in range(30):
        await world.settle()
    assert 2 <= len(world.tags()) <= 2 + 2 * 8


async def test_an_owner_deleted_pauses_their_triggers_with_the_reason(world: World) -> None:
    trig = await world.create(
        world.alice, type="@every", arguments="10s", method="t.run", params=["alice"]
    )
    assert world.alice.user_id is not None
    await world.app.directory.delete_user(world.alice.user_id)
    await world.settle()
    trigger = world.engine.triggers[trig["id"]]
    assert trigger.paused and "owner" in trigger.state["last_error"]
    await world.advance(60)
    assert world.tags() == []


async def test_users_see_and_touch_only_their_own_triggers(world: World) -> None:
    mine = await world.create(world.alice, type="@client", method="t.run", params=["a"])
    theirs = await world.create(type="@client", method="t.run", params=["r"])
    seen = await world.app.calls.call("trigger.query", [[], {}], world.alice)
    assert [t["id"] for t in seen] == [mine["id"]]
    for method in ("trigger.get_instance", "trigger.launch", "trigger.delete", "trigger.pause"):
        with pytest.raises(Exception, match="does not exist"):
            await world.app.calls.call(method, [theirs["id"]], world.alice)
    job_id = await world.app.calls.call("trigger.launch", [mine["id"]], world.alice)
    assert isinstance(job_id, int)
    # A method the owner may not call is refused at create.
    with pytest.raises(ValidationErrors):
        await world.create(world.alice, type="@client", method="user.query", params=[])


async def test_a_trigger_hears_only_what_its_owner_may_see(world: World) -> None:
    await world.create(
        world.alice,
        type="@event",
        arguments="core.get_jobs:CREATED",
        method="t.seen",
        params=["alice-saw"],
        pass_event=True,
    )
    await world.app.calls.call("t.run", ["roots-job"], world.root)
    await world.settle()
    assert "alice-saw" not in world.tags()
    await world.app.calls.call("t.run", ["alices-job"], world.alice)
    await world.settle()
    saw = [payload for tag, payload in world.bench.calls if tag == "alice-saw"]
    assert len(saw) == 1 and saw[0][0]["events"][0]["fields"]["arguments"] == ["alices-job"]
