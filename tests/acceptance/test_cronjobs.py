"""TrueNAS's cron jobs over the wire: create, query, update, delete with TrueNAS's fields
and refusals; cronjob.run running the line with a token of its user (midclt calls back),
stdout and stderr hidden or kept, a failing line, a disabled job skipped by its schedule;
the trigger underneath runs it and cannot be changed through trigger.*."""

from __future__ import annotations

from typing import Any

from tests.acceptance.test_triggers import until
from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

NAME, PASSWORD = "cron-user", "a-cron-password-long-enough"
USER = {"username": NAME, "password": PASSWORD, "allowlist": ["*"]}


async def _run(c: Raw, *params: Any) -> int:
    """Run cronjob.run to its end (errors included); its job's id."""
    try:
        await c.call("cronjob.run", *params)
    except AssertionError:
        pass  # a failed job: its record says why
    newest = {"order_by": ["-id"], "limit": 1, "get": True}
    found = await c.call("core.get_jobs", [["method", "=", "cronjob.run"]], newest)
    return int(found["id"])


async def _ended(c: Raw, job_id: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job: dict[str, Any] = await c.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
        return job if job["state"] in ("SUCCESS", "FAILED", "ABORTED") else None

    ended: dict[str, Any] = await until(check, f"job {job_id} to end")
    return ended


async def _log(c: Raw, server: ServerProc, job_id: int) -> str:
    await _ended(c, job_id)
    return (server.data_dir / "logs" / f"{job_id}.log").read_text()


async def test_cronjob_crud_with_truenas_fields(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        job = await c.call("cronjob.create", {"user": "root", "command": "true"})
        assert job["enabled"] is True and job["stdout"] is True and job["stderr"] is False
        assert job["schedule"] == {
            "minute": "00",
            "hour": "*",
            "dom": "*",
            "month": "*",
            "dow": "*",
        }
        assert job["next_run"] is not None and job["description"] == ""
        (found,) = await c.call("cronjob.query", [["id", "=", job["id"]]])
        assert found == job
        err = await c.error(
            "cronjob.create", {"user": "root", "command": "true", "schedule": {"dom": "32"}}
        )
        assert err["code"] == -32602 and "day of month" in str(err["data"])
        assert "schedule" in str(err["data"])
        err = await c.error("cronjob.create", {"user": "nobody-here", "command": "true"})
        assert err["code"] == -32602 and "nobody-here" in str(err["data"])
        changed = await c.call(
            "cronjob.update",
            job["id"],
            {"enabled": False, "description": "nightly", "schedule": {"minute": "30", "hour": "4"}},
        )
        assert changed["enabled"] is False and changed["description"] == "nightly"
        assert changed["schedule"]["minute"] == "30" and changed["schedule"]["hour"] == "4"
        (trigger,) = await c.call("trigger.query", [["id", "=", job["id"]]])
        assert trigger["paused"] is True and trigger["arguments"] == "30 4 * * *"
        assert trigger["managed_by"] == "cronjob" and trigger["method"] == "cronjob.run"
        err = await c.error("trigger.update", job["id"], {"arguments": "@hourly"})
        assert err["data"]["errname"] == "EPERM"
        err = await c.error("trigger.delete", job["id"])
        assert err["data"]["errname"] == "EPERM"
        again = await c.call("cronjob.update", job["id"], {"enabled": True})
        assert again["enabled"] is True
        (trigger,) = await c.call("trigger.query", [["id", "=", job["id"]]])
        assert trigger["paused"] is False
        assert await c.call("cronjob.delete", job["id"]) is True
        assert await c.call("cronjob.query", [["id", "=", job["id"]]]) == []
        err = await c.error("cronjob.delete", job["id"])
        assert err["data"]["errname"] == "ENOENT"


async def test_cronjob_run_as_its_user_with_streams_kept_or_hidden(
    server: ServerProc,
) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        if not await c.call("user.query", [["username", "=", NAME]]):
            await c.call("user.create", USER)
        line = 'echo "to-stdout"; echo "to-stderr" >&2; midclt call auth.me'
        kept = await c.call(
            "cronjob.create",
            {"user": NAME, "command": line, "stdout": False, "stderr": False},
        )
        log = await _log(c, server, await _run(c, kept["id"]))
        assert "stdout: to-stdout" in log and "stderr: to-stderr" in log
        assert f'"{NAME}"' in log  # midclt logged in with a token of the cron job's user
        hidden = await c.call("cronjob.update", kept["id"], {"stdout": True, "stderr": True})
        assert hidden["stdout"] is True
        log = await _log(c, server, await _run(c, kept["id"]))
        assert "stdout: to-stdout" not in log and "stderr: to-stderr" not in log
        # The schedule's run (skip_disabled) skips a disabled job; a manual run does not.
        await c.call("cronjob.update", kept["id"], {"enabled": False, "stdout": False})
        record = await _ended(c, await _run(c, kept["id"], True))
        assert record["state"] == "SUCCESS" and record["result"] is None
        assert "skipped" in record["progress"]["description"]
        # The trigger underneath runs it as its schedule would.
        await c.call("cronjob.update", kept["id"], {"enabled": True})
        fired = await c.call("trigger.launch", kept["id"])
        log = await _log(c, server, fired)
        assert "stdout: to-stdout" in log
        record = await _ended(c, fired)
        assert record["method"] == "cronjob.run" and record["arguments"] == [kept["id"], True]
        # A failing line fails the job with its exit code.
        failing = await c.call("cronjob.create", {"user": "root", "command": "exit 3"})
        record = await _ended(c, await _run(c, failing["id"]))
        assert record["state"] == "FAILED" and "3" in record["error"]
        for cron in (kept, failing):
            await c.call("cronjob.delete", cron["id"])


async def test_cronjobs_are_for_administrators(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        if not await c.call("user.query", [["username", "=", NAME]]):
            await c.call("user.create", USER)
    async with raw(server.ws_url, NAME, PASSWORD) as user:
        err = await user.error("cronjob.create", {"user": "root", "command": "id"})
        assert "administrators" in err["data"]["reason"]
        err = await user.error("cronjob.query")
        assert "administrators" in err["data"]["reason"]
