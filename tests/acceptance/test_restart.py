"""Jobs survive restarts: interrupted ones are failed with a reason (or re-queued), ids
continue, retention purges with REMOVED events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.serverproc import ServerProc
from tests.wsraw import raw


async def test_kill_with_jobs_waiting_and_running(
    make_server: Callable[..., ServerProc],
) -> None:
    srv = make_server()
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call("core.set_options", {"legacy_jobs": True})
        done = await c.call("test.progress", 2)
        assert await c.call("core.job_wait", done) == 2
        running = await c.call("test.locked", "R", "never")
        waiting = await c.call("test.locked", "R", "never")
        retried = await c.call("test.retried", "later")
        await c.call("core.set_options", {"legacy_jobs": False})
        states = {j["id"]: j["state"] for j in await c.call("core.get_jobs")}
        assert states[running] == "RUNNING" and states[waiting] == "WAITING"
    srv.kill()
    srv.output.clear()
    srv.start()
    async with raw(srv.ws_url, "root", srv.password) as c:
        jobs = {j["id"]: j for j in await c.call("core.get_jobs")}
        assert jobs[done]["state"] == "SUCCESS" and jobs[done]["result"] == 2
        for job_id, was in ((running, "RUNNING"), (waiting, "WAITING")):
            job = jobs[job_id]
            assert job["state"] == "FAILED"
            assert job["error"] == f"Interrupted: the server stopped while the job was {was}"
            assert job["time_finished"] is not None
            assert job["exc_info"]["type"] == "Interrupted"
        # Declared safe to retry: queued again under the same id, and it runs to the end.
        assert jobs[retried]["state"] in ("WAITING", "RUNNING")
        await c.call("test.open_gate", "later")
        assert await c.call("core.job_wait", retried) == "again"
        # Ids are never reused.
        await c.call("core.set_options", {"legacy_jobs": True})
        new = await c.call("test.progress", 1)
        assert new > max(jobs)


async def test_ids_not_reused_after_purge(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server("--retention-count", "1")
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        await c.call("core.set_options", {"legacy_jobs": True})
        ids = [await c.call("test.progress", 1) for _ in range(3)]
        for i in ids:
            await c.call("core.job_wait", i)
    srv.restart()
    async with raw(srv.ws_url, "root", srv.password) as c:
        # Retention (keep 1) ran at start: only the newest finished job is left... plus the
        # core.job_wait jobs, which are jobs too; the newest one is kept.
        remaining = await c.call("core.get_jobs", [], {"count": True})
        assert remaining == 1
        await c.call("core.set_options", {"legacy_jobs": True})
        new = await c.call("test.progress", 1)
        assert new > max(ids) + 2


async def test_retention_emits_removed(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server("--retention-count", "2", "--retention-interval", "0.2")
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        first_call = await c.request("test.progress", 1)
        await c.reply(first_call)
        first = next(
            n["params"]["id"]
            for n in c.notifications
            if first_call in n["params"].get("fields", {}).get("message_ids", [])
        )
        for _ in range(3):
            await c.reply(await c.request("test.progress", 1))
        removed = await c.notification(
            lambda n: n["params"]["msg"] == "removed" and n["params"]["id"] == first
        )
        assert "fields" not in removed["params"]
        assert await c.call("core.get_jobs", [["id", "=", first]]) == []


async def test_sigterm_lets_running_jobs_finish(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server("--shutdown-grace", "0.5")
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call("core.set_options", {"legacy_jobs": True})
        job = await c.call("test.wait", "forever")
        assert await asyncio.to_thread(srv.stop) == 0
    srv.output.clear()
    srv.start()
    async with raw(srv.ws_url, "root", srv.password) as c:
        record = await c.call("core.get_jobs", [["id", "=", job]], {"get": True})
        assert record["state"] == "ABORTED"
        assert record["error"] == "Job aborted: the server is shutting down"


async def test_a_big_purge_does_not_drop_subscribers(
    make_server: Callable[..., ServerProc],
) -> None:
    """Retention of many jobs while a subscriber watches: REMOVED events come in batches of
    at most a quarter of --max-pending-events with pauses between, so a reader that keeps
    reading gets every one and is never let go (4008). Unpaced, the one pass that purges
    the jobs made below would queue hundreds of REMOVED at once, past the limit of 200."""
    jobs, keep_seconds = 600, 4.0
    srv = make_server(
        "--max-pending-events",
        "200",
        "--retention-days",
        str(keep_seconds / 86400),
        "--retention-interval",
        "0.5",
    )
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        await c.call("core.set_options", {"legacy_jobs": True})
        ids = set()
        for _ in range(jobs):
            ids.add(await c.call("test.progress", 1))
        removed: set[int] = set()
        while not ids <= removed:
            note = await c.notification(lambda n: n["params"]["msg"] == "removed", timeout=60)
            removed.add(note["params"]["id"])
        assert await c.call("core.ping") == "pong"
    assert "events unread" not in srv.log_text()
