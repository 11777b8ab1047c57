"""Jobs over the wire: locks and merged calls, abort, failures, progress coalescing, logs."""

from __future__ import annotations

import uuid
from typing import Any

from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw


def gate() -> str:
    return uuid.uuid4().hex


def job_event(job_id: int, state: str | None = None) -> Any:
    def match(n: dict[str, Any]) -> bool:
        p = n["params"]
        return p["id"] == job_id and (state is None or p["fields"].get("state") == state)

    return match


def for_call(call_id: Any) -> Any:
    def match(n: dict[str, Any]) -> bool:
        fields = n["params"].get("fields") or {}
        return call_id in (fields.get("message_ids") or [])

    return match


async def start(c: Raw, method: str, *params: Any) -> tuple[Any, int]:
    """Call a job method; return the call id and the job id (from the event)."""
    call_id = await c.request(method, *params)
    event = await c.notification(for_call(call_id))
    return call_id, event["params"]["id"]


async def test_merged_calls_under_a_lock(server: ServerProc) -> None:
    g1, g2 = gate(), gate()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        first_call, first = await start(c, "test.locked", "L1", g1)
        await c.notification(job_event(first, "RUNNING"))
        second_call, second = await start(c, "test.locked", "L1", g2)
        assert second != first
        # The lock's queue (size 1) is full: the third call merges into the waiting job.
        third_call = await c.request("test.locked", "L1", g2)
        merged = await c.notification(for_call(third_call))
        assert merged["params"]["msg"] == "changed"
        assert merged["params"]["id"] == second
        assert merged["params"]["fields"]["message_ids"] == [second_call, third_call]
        assert merged["params"]["fields"]["state"] == "WAITING"
        await c.call("test.open_gate", g2)
        await c.call("test.open_gate", g1)
        assert (await c.reply(first_call))["result"] == first
        # Both merged calls get the one job's outcome; it ran after the first.
        assert (await c.reply(second_call))["result"] == second
        assert (await c.reply(third_call))["result"] == second
        jobs = await c.call(
            "core.get_jobs", [["id", "in", [first, second]]], {"order_by": ["time_finished"]}
        )
        assert [j["id"] for j in jobs] == [first, second]


async def test_lock_runs_one_at_a_time_in_order(server: ServerProc) -> None:
    g1 = gate()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        a_call, a = await start(c, "test.locked", "L2", g1)
        await c.notification(job_event(a, "RUNNING"))
        b_call, b = await start(c, "test.locked", "L2", g1)
        # b stays WAITING while a holds the lock, although its gate is the same.
        state = await c.call("core.get_jobs", [["id", "=", b]], {"get": True})
        assert state["state"] == "WAITING"
        await c.call("test.open_gate", g1)
        await c.reply(a_call)
        await c.reply(b_call)
        running_b = [n for n in c.notifications if job_event(b, "RUNNING")(n)]
        assert running_b, "b never ran"


async def test_lock_queue_size_zero_refuses(server: ServerProc) -> None:
    g = gate()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        call, job = await start(c, "test.exclusive", g)
        await c.notification(job_event(job, "RUNNING"))
        err = await c.error("test.exclusive", g)
        assert err["code"] == -32001
        assert err["data"]["errname"] == "EBUSY"
        await c.call("test.open_gate", g)
        assert (await c.reply(call))["result"] is True


async def test_abort_running_and_waiting(server: ServerProc) -> None:
    g = gate()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        call, job = await start(c, "test.wait", g)
        await c.notification(job_event(job, "RUNNING"))
        assert await c.call("core.job_abort", job) is None
        reply = await c.reply(call)
        assert reply["error"]["code"] == -32001
        assert reply["error"]["data"]["errname"] == "ECANCELED"
        ended = await c.notification(job_event(job, "ABORTED"))
        fields = ended["params"]["fields"]
        assert fields["exc_info"]["type"] == "JobAborted"
        assert fields["exception"]  # TrueNAS clients read its last line
        assert fields["time_finished"] is not None


async def test_not_abortable(server: ServerProc) -> None:
    g = gate()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        call, job = await start(c, "test.stubborn", g)
        await c.notification(job_event(job, "RUNNING"))
        err = await c.error("core.job_abort", job)
        assert err["data"]["errname"] == "EINVAL"
        assert "not abortable" in err["data"]["reason"]
        await c.call("test.open_gate", g)
        assert (await c.reply(call))["result"] == g


async def test_failure_reply_and_record(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        call, job = await start(c, "test.fail", "disk on fire")
        reply = await c.reply(call)
        assert reply["error"]["code"] == -32001
        assert reply["error"]["data"]["reason"] == "disk on fire"
        record = await c.call("core.get_jobs", [["id", "=", job]], {"get": True})
        assert record["state"] == "FAILED"
        assert record["error"] == "disk on fire"
        assert record["exc_info"]["type"] == "CallError"
        assert "disk on fire" in record["exception"]


async def test_validation_error_in_params(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        err = await c.error("test.subtract", "x", 1)
        assert err["code"] == -32602
        assert err["data"]["extra"] == [["minuend", "Not a valid integer", 22]]
        err = await c.error("filesystem.copy", "/nowhere")
        assert err["code"] == -32602
        assert ["dst", "Field is required", 22] in err["data"]["extra"]


async def test_timeout(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        err = await c.error("test.slow", 60)
        assert err["data"]["errname"] == "ETIMEDOUT"


async def test_legacy_jobs_answers_with_the_id(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        opts = await c.call("core.set_options", {"legacy_jobs": True})
        assert opts["legacy_jobs"] is True
        job_id = await c.call("test.progress", 4)
        assert isinstance(job_id, int)
        await c.call("core.set_options", {"legacy_jobs": False})
        assert await c.call("core.job_wait", job_id) == 4


async def test_progress_flood_is_coalesced(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        call, job = await start(c, "test.flood", 200_000)
        assert (await c.reply(call))["result"] == 200_000
        events = [n for n in c.notifications if n["params"]["id"] == job]
        # 200,000 updates in well under a few seconds: a handful of events, not thousands.
        assert len(events) < 100, len(events)
        assert events[-1]["params"]["fields"]["state"] == "SUCCESS"
        assert events[-1]["params"]["fields"]["progress"]["percent"] == 100


async def test_progress_latest_value_arrives(server: ServerProc) -> None:
    g = gate()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        call, job = await start(c, "test.progress", 1000, g)
        # Halfway the job blocks on the gate: the latest value (step 500) must arrive.
        await c.notification(
            lambda n: (
                n["params"]["id"] == job
                and (n["params"]["fields"]["progress"]["description"] == "step 500 of 1000")
            )
        )
        await c.call("test.open_gate", g)
        await c.reply(call)


async def test_logs_and_secret_arguments(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        call, job = await start(c, "test.secret", "alice", "hunter2")
        assert (await c.reply(call))["result"] == "alice"
        record = await c.call("core.get_jobs", [["id", "=", job]], {"get": True})
        assert record["arguments"] == ["alice", "********"]
        assert record["logs_excerpt"] == "connecting as alice\n"
        assert record["logs_path"].endswith(f"/{job}.log")
        for n in c.notifications:
            assert "hunter2" not in str(n)
    assert "hunter2" not in server.log_text()


async def test_job_wait_mirrors_progress(server: ServerProc) -> None:
    g = gate()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        target_call, target = await start(c, "test.wait", g)
        await c.notification(job_event(target, "RUNNING"))
        wait_call, waiter = await start(c, "core.job_wait", target)
        await c.notification(
            lambda n: (
                n["params"]["id"] == waiter
                and (n["params"]["fields"]["progress"]["description"] == f"waiting on {g}")
            )
        )
        await c.call("test.open_gate", g)
        assert (await c.reply(wait_call))["result"] == g
        assert (await c.reply(target_call))["result"] == g


async def test_bulk(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        result = await c.call("core.bulk", "test.subtract", [[5, 3], ["x", 1], [1, 1]], "three")
        assert [r["result"] for r in result] == [2, None, 0]
        assert result[1]["error"] is not None
        jobs = await c.call("core.bulk", "test.progress", [[2], [3]])
        assert [r["result"] for r in jobs] == [2, 3]
        assert all(isinstance(r["job_id"], int) for r in jobs)


async def test_get_jobs_filters_and_options(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        ids = []
        for steps in (3, 5, 7):
            ids.append(
                await c.call("core.set_options", {"legacy_jobs": True})
                and await c.call("test.progress", steps)
            )
        await c.call("core.set_options", {"legacy_jobs": False})
        for i in ids:
            await c.call("core.job_wait", i)
        mine = [["id", "in", ids]]
        got = await c.call("core.get_jobs", mine, {"order_by": ["-id"]})
        assert [j["id"] for j in got] == ids[::-1]
        assert await c.call("core.get_jobs", mine, {"count": True}) == 3
        page = await c.call("core.get_jobs", mine, {"order_by": ["id"], "offset": 1, "limit": 1})
        assert [j["id"] for j in page] == [ids[1]]
        sel = await c.call(
            "core.get_jobs",
            [*mine, ["result", ">", 4]],
            {"select": ["id", ["progress.percent", "pct"]], "order_by": ["id"]},
        )
        assert sel == [{"id": ids[1], "pct": 100}, {"id": ids[2], "pct": 100}]
        ors = await c.call(
            "core.get_jobs", [*mine, ["OR", [["result", "=", 3], ["result", "=", 7]]]]
        )
        assert sorted(j["id"] for j in ors) == [ids[0], ids[2]]
        assert (
            await c.call("core.get_jobs", [*mine, ["method", "C^", "TEST.PRO"]], {"count": True})
            == 3
        )
        err = await c.error("core.get_jobs", [["id", "===", 1]])
        assert err["code"] == -32602
        err = await c.error("core.get_jobs", [["id", "=", -1]], {"get": True})
        assert err["data"]["errname"] == "ENOENT"


async def test_many_jobs_concurrently(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        calls = [await c.request("test.progress", 3) for _ in range(50)]
        for call in calls:
            assert (await c.reply(call))["result"] == 3


async def test_caller_disconnecting_leaves_the_job_running(server: ServerProc) -> None:
    g = gate()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        _, job = await start(c, "test.wait", g)
        await c.notification(job_event(job, "RUNNING"))
    # The caller is gone; the job is not.
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        assert (await c.call("core.get_jobs", [["id", "=", job]], {"get": True}))[
            "state"
        ] == "RUNNING"
        await c.call("test.open_gate", g)
        done = await c.notification(job_event(job, "SUCCESS"))
        assert done["params"]["fields"]["result"] == g


async def test_job_wait_on_an_ended_job_keeps_its_error(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.set_options", {"legacy_jobs": True})
        bad = await c.call("filesystem.copy", "/nowhere/a", "/nowhere/b")
        failed = await c.call("test.fail", "broken")
        await c.call("core.set_options", {"legacy_jobs": False})
        for job_id in (bad, failed):
            await c.error("core.job_wait", job_id)  # now ended and stored
        err = await c.error("core.job_wait", bad)
        assert err["code"] == -32602 and err["data"]["extra"][0][0] == "src"
        err = await c.error("core.job_wait", failed)
        assert err["code"] == -32001 and err["data"]["reason"] == "broken"
