"""Every resource one client can create has a bound: merges, bulk entries, stored results,
batch members, subscriptions, live jobs; waits cannot wait for themselves; retention is
fair between owners (hardening 7, 11, 12, 13, 20, 21, 24)."""

from __future__ import annotations

import asyncio
import errno
import json
import subprocess
import uuid
from typing import Any

from middlewared.jobs.queue import MAX_MERGED_CALLS
from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw


def gate() -> str:
    return f"b-{uuid.uuid4().hex[:8]}"


async def make_user(admin: Raw, username: str, allowlist: list[str]) -> None:
    await admin.call(
        "user.create", {"username": username, "password": "pw-" + username, "allowlist": allowlist}
    )


async def test_merges_are_for_the_same_call_of_the_same_user_and_bounded(
    server: ServerProc,
) -> None:
    g1, g2, lock = gate(), gate(), gate()
    bob = f"bob{uuid.uuid4().hex[:4]}"
    async with raw(server.ws_url, "root", server.password) as root:
        await make_user(root, bob, ["test.*"])
        await root.call("core.set_options", {"legacy_jobs": True})
        running = await root.call("test.locked", lock, g1)
        waiting = await root.call("test.locked", lock, g2)  # the queue (size 1) is now full
        async with raw(server.ws_url, bob, "pw-" + bob) as b:
            # Another user's identical call is not merged into root's job: refused.
            err = await b.error("test.locked", lock, g2)
            assert err["data"]["errname"] == "EBUSY"
            assert "same call of the same user" in err["data"]["reason"]
        # Root's different call is refused too; the same call merges, up to the bound.
        err = await root.error("test.locked", lock, "other-gate")
        assert err["data"]["errname"] == "EBUSY"
        merged = [await root.call("test.locked", lock, g2) for _ in range(MAX_MERGED_CALLS - 1)]
        assert set(merged) == {waiting}
        err = await root.error("test.locked", lock, g2)
        assert err["data"]["errname"] == "EBUSY"
        record = (await root.call("core.get_jobs", [["id", "=", waiting]]))[0]
        assert len(record["message_ids"]) == MAX_MERGED_CALLS
        await root.call("test.open_gate", g1)
        await root.call("test.open_gate", g2)
        await root.call("core.set_options", {"legacy_jobs": False})
        assert await root.call("core.job_wait", running) == running
        assert await root.call("core.job_wait", waiting) == waiting


async def test_bulk_is_bounded_and_large_results_are_kept_aside(make_server: Any) -> None:
    proc = make_server("--max-bulk-calls", "10", "--max-result-size", "10000")
    async with raw(proc.ws_url, "root", proc.password) as c:
        err = await c.error("core.bulk", "core.ping", [[]] * 11)
        assert err["code"] == -32602 and "at most 10" in err["data"]["reason"]
        # The caller gets the whole result; the record (every page, every event) does not.
        await c.call("core.subscribe", "core.get_jobs")
        assert await c.call("hard.big", 50_000) == "x" * 50_000
        (record,) = await c.call("core.get_jobs", [["method", "=", "hard.big"]])
        assert record["result"] is None and record["result_size"] == 50_002
        event = await c.notification(
            lambda n: (
                n["params"].get("id") == record["id"]
                and n["params"]["fields"]["state"] == "SUCCESS"
            )
        )
        assert event["params"]["fields"]["result"] is None
        assert await c.call("core.job_wait", record["id"]) == "x" * 50_000
        url = await c.call("core.job_download_result", record["id"])
        fetch = ["curl", "-sf", f"{proc.url}{url}"]
        body = await asyncio.to_thread(subprocess.check_output, fetch, timeout=60)
        assert json.loads(body) == "x" * 50_000
        small = await c.call("hard.big", 10)
        assert small == "x" * 10
        (rec,) = await c.call(
            "core.get_jobs", [["method", "=", "hard.big"], ["result", "=", small]]
        )
        assert rec["result_size"] is None


async def test_a_huge_batch_is_refused_whole(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c, raw(server.ws_url) as other:
        batch = [{"jsonrpc": "2.0", "id": i, "method": "core.ping"} for i in range(280_000)]
        await c.send(batch)
        reply = await c.recv(120)
        assert isinstance(reply, dict) and reply["id"] is None
        assert (
            reply["error"]["code"] == -32600 and "at most 256" in reply["error"]["data"]["reason"]
        )
        assert await other.call("core.ping") == "pong"
        # A batch within the bound is answered member by member.
        await c.send([{"jsonrpc": "2.0", "id": i, "method": "core.ping"} for i in range(256)])
        replies = await c.recv()
        assert [r["result"] for r in replies] == ["pong"] * 256


async def test_subscriptions_per_connection_are_bounded(make_server: Any) -> None:
    proc = make_server("--max-subscriptions", "5")
    async with raw(proc.ws_url, "root", proc.password) as c:
        ids = [await c.call("core.subscribe", "core.get_jobs") for _ in range(5)]
        err = await c.error("core.subscribe", "core.get_jobs")
        assert err["data"]["errname"] == "EBUSY"
        await c.call("core.unsubscribe", ids[0])
        assert await c.call("core.subscribe", "*")


async def test_live_jobs_are_bounded_per_connection_and_per_user(make_server: Any) -> None:
    proc = make_server("--max-live-jobs-per-connection", "3", "--max-live-jobs-per-user", "5")
    g = gate()
    async with (
        raw(proc.ws_url, "root", proc.password) as a,
        raw(proc.ws_url, "root", proc.password) as b,
    ):
        for conn in (a, b):
            await conn.call("core.set_options", {"legacy_jobs": True})
        started = [await a.call("test.wait", g) for _ in range(3)]
        err = await a.error("test.wait", g)
        assert err["data"]["errname"] == "EBUSY" and "connection" in err["data"]["reason"]
        started += [await b.call("test.wait", g) for _ in range(2)]
        err = await b.error("test.wait", g)
        assert err["data"]["errname"] == "EBUSY" and "root already has 5" in err["data"]["reason"]
        await a.call("test.open_gate", g)
        deadline = asyncio.get_running_loop().time() + 30
        while {j["state"] for j in await a.call("core.get_jobs", [["id", "in", started]])} != {
            "SUCCESS"
        }:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        # Room again once they ended.
        assert await a.call("test.wait", g)


async def test_a_job_cannot_wait_for_itself(make_server: Any) -> None:
    proc = make_server()
    async with raw(proc.ws_url, "root", proc.password) as c:
        first = await c.call("hard.big", 1)
        assert first == "x"
        (job,) = await c.call("core.get_jobs", [["method", "=", "hard.big"]])
        # Nothing else runs on this server: the next job gets the next id.
        err = await c.error("core.job_wait", job["id"] + 1)
        assert err["data"]["error"] == errno.EDEADLK, err
        assert await c.call("core.ping") == "pong"


async def test_retention_by_count_is_per_owner_and_removals_reach_only_readers(
    make_server: Any,
) -> None:
    proc = make_server("--retention-count", "5", "--retention-interval", "0.2")
    async with raw(proc.ws_url, "root", proc.password) as root:
        await make_user(root, "flood", ["test.*"])
        for _ in range(3):
            await root.call("test.progress", 1)
        root_jobs = [j["id"] for j in await root.call("core.get_jobs")]
        async with raw(proc.ws_url, "flood", "pw-flood") as f:
            await f.call("core.subscribe", "core.get_jobs")
            for _ in range(20):
                await f.call("test.progress", 1)

            # Retention runs every 0.2 s: poll until the flood is cut to five.
            deadline = asyncio.get_running_loop().time() + 30
            while len(await f.call("core.get_jobs")) > 5:
                assert asyncio.get_running_loop().time() < deadline, "retention never ran"
                await asyncio.sleep(0.05)
            # Root's three jobs are all still there.
            kept = await root.call("core.get_jobs", [["id", "in", root_jobs]])
            assert sorted(j["id"] for j in kept) == sorted(root_jobs)
            removed = {
                n["params"]["id"] for n in f.notifications if n["params"]["msg"] == "removed"
            }
            assert removed and not removed & set(root_jobs)
