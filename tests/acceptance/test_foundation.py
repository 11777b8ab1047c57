"""The foundation of the second wave, over the wire: in-process listeners, one owner per
data dir, the start order, private files, retries, plugin settings, routes and collections,
internal calls with the caller's credentials, the memory store, and snapshots checked row
by row (foundation 1-4; hardening 14)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.serverproc import ServerProc
from tests.snapshots import upload_config
from tests.wsraw import raw


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def curl(*args: str) -> tuple[int, str]:
    """The status and body of a request (``-o FILE`` among ``args`` keeps the body there)."""
    cmd = ["curl", "-s", "-w", "\n%{http_code}", *args]
    if "-o" not in args:
        cmd[2:2] = ["-o", "-"]
    out = await asyncio.to_thread(subprocess.check_output, cmd, timeout=60)
    body, _, code = out.decode(errors="replace").rpartition("\n")
    return int(code), body


async def wait_until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


async def test_a_listener_gets_job_events_with_no_subscriber(make_server: Any) -> None:
    proc = make_server()
    async with raw(proc.ws_url, "root", proc.password) as c:
        await c.call("core.set_options", {"legacy_jobs": True})
        job = await c.call("test.progress", 2)

        async def seen() -> list[Any]:
            return [e for e in await c.call("hard.seen") if e[2] == job and e[3] == "SUCCESS"]

        await wait_until(seen, "the listener to see the job end")
        events = [e for e in await c.call("hard.seen") if e[2] == job]
        assert events[0][:2] == ["core.get_jobs", "added"]
        stats = await c.call("core.stats")
        (listener,) = [s for s in stats["listeners"] if s["name"] == "hard-recorder"]
        assert listener["delivered"] >= len(events) and listener["dropped"] == 0


async def test_a_second_server_on_the_same_data_dir_is_refused(
    make_server: Callable[..., ServerProc],
) -> None:
    first = make_server()
    gate = uuid.uuid4().hex
    async with raw(first.ws_url, "root", first.password) as c:
        await c.call("core.set_options", {"legacy_jobs": True})
        job = await c.call("test.wait", gate)
        env = {**os.environ, "MIDDLEWARED_ROOT_PASSWORD": "x"}
        second = await asyncio.to_thread(
            subprocess.run,
            [*_server_cmd(first.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert second.returncode == 1
        assert f"in use by pid {first.process.pid if first.process else '?'}" in second.stderr
        assert "Traceback" not in second.stderr
        # The first server's running job was not touched: it ends as it should.
        await c.call("test.open_gate", gate)
        await c.call("core.set_options", {"legacy_jobs": False})
        assert await c.call("core.job_wait", job) == gate
        (record,) = await c.call("core.get_jobs", [["id", "=", job]])
        assert record["state"] == "SUCCESS"
        await c.call("core.set_options", {"legacy_jobs": True})
        assert await c.call("test.wait", gate) == job + 2  # the job_wait took job + 1


def _server_cmd(data_dir: Path) -> list[str]:
    return [sys.executable, "-m", "middlewared", "--port", "0", "--data-dir", str(data_dir)]


async def test_a_requeued_job_starts_after_the_plugin_lifespans(
    make_server: Callable[..., ServerProc],
) -> None:
    proc = make_server()
    gate = uuid.uuid4().hex
    async with raw(proc.ws_url, "root", proc.password) as c:
        await c.call("core.set_options", {"legacy_jobs": True})
        await c.call("core.subscribe", "core.get_jobs")
        job = await c.call("hard.after_lifespan", gate)
        await c.notification(
            lambda n: n["params"].get("id") == job and n["params"]["fields"]["state"] == "RUNNING"
        )
    proc.kill()
    proc.start()
    async with raw(proc.ws_url, "root", proc.password) as c:
        await c.call("hard.open", gate)
        assert await c.call("core.job_wait", job) is True
        (record,) = await c.call("core.get_jobs", [["id", "=", job]])
        assert record["origin"] == "restart"


async def test_the_data_dir_is_private_and_an_old_one_is_tightened(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    proc = make_server()
    async with raw(proc.ws_url, "root", proc.password) as c:
        assert await c.call("test.logs", 3) == 3
    data = proc.data_dir
    assert mode(data) == 0o700
    for name in ("middlewared.db", "middlewared.db-wal", "middlewared.lock", "root.password"):
        if (data / name).exists():
            assert mode(data / name) == 0o600, name
    logs = list((data / "logs").iterdir())
    assert logs and all(mode(p) == 0o600 for p in logs)
    assert mode(data / "logs") == 0o700 and mode(data / "spool") == 0o700
    proc.stop()
    # An older install left everything readable by others: tightened at start, said once.
    os.chmod(data, 0o755)
    os.chmod(data / "logs", 0o755)
    os.chmod(data / "middlewared.db", 0o644)
    for p in logs:
        os.chmod(p, 0o644)
    proc.output.clear()
    proc.start()
    assert mode(data) == 0o700 and mode(data / "middlewared.db") == 0o600
    assert all(mode(p) == 0o600 for p in logs)
    warnings = [line for line in proc.output if "readable by others" in line]
    assert len(warnings) == 1, warnings


async def test_retries_with_backoff_and_their_attempts(server: ServerProc) -> None:
    name = uuid.uuid4().hex
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.subscribe", "core.get_jobs")
        assert await c.call("hard.flaky", name, 2) == 3
        (job,) = await c.call("core.get_jobs", [["arguments.0", "=", name]])
        assert (job["state"], job["attempt"], job["error"]) == ("SUCCESS", 3, None)
        states = [
            n["params"]["fields"]["state"]
            for n in c.notifications
            if n["params"].get("id") == job["id"] and "fields" in n["params"]
        ]
        # Back to WAITING between attempts, each time seen by subscribers.
        assert states.count("WAITING") >= 3 and states[-1] == "SUCCESS", states
        again = uuid.uuid4().hex
        err = await c.error("hard.flaky", again, 5)
        assert err["data"]["errname"] == "EAGAIN"
        (failed,) = await c.call("core.get_jobs", [["arguments.0", "=", again]])
        assert (failed["state"], failed["attempt"]) == ("FAILED", 3)
        # A validation error is never retried.
        err = await c.error("hard.flaky", again, -1)
        assert err["code"] == -32602


async def test_plugin_settings_are_validated_kept_and_restored(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    proc = make_server()
    backup = tmp_path / "backup.db"
    async with raw(proc.ws_url, "root", proc.password) as c:
        assert await c.call("settings.get", "hard") == {"colour": "red", "level": 1}
        assert "hard" in await c.call("settings.schemas")
        err = await c.error("settings.update", "hard", {"colour": "pink"})
        assert err["code"] == -32602 and err["data"]["extra"][0][0] == "colour"
        err = await c.error("settings.update", "hard", {"shape": "round"})
        assert err["code"] == -32602
        assert await c.call("settings.update", "hard", {"level": 7}) == {
            "colour": "red",
            "level": 7,
        }
        assert await c.call("hard.settings") == {"colour": "red", "level": 7}
        _, url = await c.call("core.download", "config.save", [{}], "backup.db")
        code, _ = await curl("-o", str(backup), proc.url + url)
        assert code == 200
        await c.call("settings.update", "hard", {"colour": "blue"})
    proc.restart()
    async with raw(proc.ws_url, "root", proc.password) as c:
        assert await c.call("settings.get", "hard") == {"colour": "blue", "level": 7}
        await upload_config(c, proc, backup)
        assert await c.call("settings.get", "hard") == {"colour": "red", "level": 7}


async def test_plugin_routes_authenticate_and_bound_their_body(server: ServerProc) -> None:
    url = f"{server.url}/hard/echo/5"
    code, body = await curl("-u", f"root:{server.password}", "-d", "hello", url)
    assert code == 202 and json.loads(body) == {"id": "5", "body": "hello", "who": "root"}
    code, body = await curl("-d", "hello", url)
    assert code == 401 and "credentials" in json.loads(body)["error"].lower()
    code, body = await curl("-u", f"root:{server.password}", "-d", "x" * 2000, url)
    assert code == 413 and json.loads(body)["status"] == 413


async def test_plugin_collections_reach_subscribers_and_listeners(server: ServerProc) -> None:
    user = f"c{uuid.uuid4().hex[:6]}"
    async with raw(server.ws_url, "root", server.password) as admin:
        await admin.call(
            "user.create", {"username": user, "password": "pw-" + user, "allowlist": ["hard.*"]}
        )
        async with raw(server.ws_url, user, "pw-" + user) as u:
            await u.call("core.subscribe", "hard.things")
            await u.call("hard.publish", 42, "answer")
            event = await u.notification(lambda n: n["params"]["collection"] == "hard.things")
            assert event["params"]["fields"] == {"name": "answer"}

        async def listened() -> bool:
            return any(e[:3] == ["hard.things", "added", 42] for e in await admin.call("hard.seen"))

        await wait_until(listened, "the listener to see the plugin's event")


async def test_plugin_calls_carry_the_callers_credentials(server: ServerProc) -> None:
    user = f"p{uuid.uuid4().hex[:6]}"
    async with raw(server.ws_url, "root", server.password) as admin:
        await admin.call(
            "user.create", {"username": user, "password": "pw-" + user, "allowlist": ["hard.*"]}
        )
        assert isinstance(await admin.call("hard.call_as_caller", "user.query"), list)
        async with raw(server.ws_url, user, "pw-" + user) as u:
            err = await u.error("hard.call_as_caller", "user.query")
            assert err["data"]["errname"] == "EACCES"
            # A plugin that is not built in cannot act as the server, for anyone.
            err = await u.error("hard.call_as_server", "user.query")
            assert err["data"]["errname"] == "EACCES"
        err = await admin.error("hard.call_as_server", "user.query")
        assert err["data"]["errname"] == "EACCES"


async def test_the_memory_store_serves_and_keeps_nothing(
    make_server: Callable[..., ServerProc],
) -> None:
    proc = make_server("--store", "memory://")
    async with raw(proc.ws_url, "root", proc.password) as c:
        assert await c.call("test.progress", 3) == 3
        await c.call("user.create", {"username": "mem", "password": "mem-password"})
        jobs = await c.call("core.get_jobs", [["method", "=", "test.progress"]])
        assert [j["state"] for j in jobs] == ["SUCCESS"]
        assert await c.call("core.get_jobs", [["progress.percent", "=", 100]], {"count": True}) == 1
    assert not (proc.data_dir / "middlewared.db").exists()
    proc.restart()
    async with raw(proc.ws_url, "root", proc.password) as c:
        assert await c.call("core.get_jobs") == []
        assert await c.call("user.query", [["username", "=", "mem"]]) == []


async def test_a_snapshot_with_a_bad_row_is_refused_and_changes_nothing(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    proc = make_server()
    good = tmp_path / "good.db"
    async with raw(proc.ws_url, "root", proc.password) as c:
        _, url = await c.call("core.download", "config.save", [{}], "b.db")
        assert (await curl("-o", str(good), proc.url + url))[0] == 200
        await c.call("user.create", {"username": "present", "password": "present-pw"})
        for column, value, table, why in (
            ("allowlist", "not json", "users", "users row"),
            ("admin", 7, "users", "users row"),
            ("key_hash", "short", "api_keys", "api_keys row"),
            ("value", "[1]", "settings", "settings row"),
        ):
            bad = tmp_path / f"bad-{column}.db"
            shutil.copy(good, bad)
            # Closed when done: the snapshot is in WAL mode, and closing checkpoints the
            # change into the file that is uploaded.
            with contextlib.closing(sqlite3.connect(bad)) as db, db:
                if table == "api_keys":
                    db.execute(
                        "INSERT INTO api_keys (id, name, username, user_id, key_hash, allowlist,"
                        " created) VALUES (99, 'k', 'root', 1, 'x', '[]', 0)"
                    )
                if table == "settings":
                    db.execute("INSERT INTO settings VALUES ('hard', '{}')")
                db.execute(f"UPDATE {table} SET {column} = ?", (value,))
            code, body = await curl(
                "-u",
                f"root:{proc.password}",
                "-F",
                'data={"method": "config.upload", "params": []}',
                "-F",
                f"file=@{bad}",
                f"{proc.url}/_upload",
            )
            assert code == 200, body
            err = await c.error("core.job_wait", json.loads(body)["job_id"])
            assert err["code"] == -32602 and why in err["data"]["reason"], err
            assert column in err["data"]["reason"]
        assert await c.call("user.query", [["username", "=", "present"]])
    # Nothing was taken: the server starts again as it was.
    proc.restart()
    async with raw(proc.ws_url, "present", "present-pw") as c:
        assert await c.call("core.ping") == "pong"


async def test_jobs_record_what_started_them(server: ServerProc, tmp_path: Path) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("core.set_options", {"legacy_jobs": True})
        called = await c.call("test.progress", 1)
        bulk = await c.call("core.bulk", "test.progress", [[1]])
        await c.call("core.set_options", {"legacy_jobs": False})
        statuses = await c.call("core.job_wait", bulk)
        src = server.data_dir / "files" / f"o{uuid.uuid4().hex[:6]}"
        src.write_text("x")
        downloaded, url = await c.call("core.download", "filesystem.get", [str(src)], "o", True)
        (tmp_path / "u").write_text("u")
        _, body = await curl(
            "-u",
            f"root:{server.password}",
            "-F",
            f'data={{"method": "filesystem.put", "params": ["{src}.up"]}}',
            "-F",
            f"file=@{tmp_path / 'u'}",
            f"{server.url}/_upload",
        )
        uploaded = json.loads(body)["job_id"]
        origins = {
            j["id"]: j["origin"]
            for j in await c.call(
                "core.get_jobs",
                [["id", "in", [called, bulk, statuses[0]["job_id"], downloaded, uploaded]]],
            )
        }
        assert origins == {
            called: "call",
            bulk: "call",
            statuses[0]["job_id"]: f"bulk:{bulk}",
            downloaded: "download",
            uploaded: "upload",
        }
        assert (await curl(server.url + url))[0] == 200
