"""Commands over the wire, with real processes: progress and the log seen live, the
environment, a script calling back through ``midclt`` with its run's token (refused outside
``allow`` and after the run), abort and timeout ending a whole process group, a failing
line, output cut at ``--max-job-log`` with the server's memory flat, karajo's log names and
retention, who may create and run, secrets, and kill -9 with a command running."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.midcltproc import midclt
from tests.procstate import alive
from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

SECRET = "s3cret-value-7f2a"
LOOP = 'for i in 1 2 3; do echo "step $i $X"; echo "{\\"percent\\": $((i * 33))}" >&3; done'


def unique(prefix: str = "cmd") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


async def start(c: Raw, name: str, *params: Any) -> int:
    """``command.run`` as a job whose id comes back at once."""
    await c.call("core.set_options", {"legacy_jobs": True})
    try:
        job_id: int = await c.call("command.run", name, *params)
    finally:
        await c.call("core.set_options", {"legacy_jobs": False})
    return job_id


async def ended(c: Raw, job_id: int) -> dict[str, Any]:
    """The job's record once it ended."""
    await c.reply(await c.request("core.job_wait", job_id))
    job: dict[str, Any] = await c.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
    return job


def workdir(proc: ServerProc, name: str) -> Path:
    return proc.data_dir / "commands" / name


async def test_progress_env_and_the_log_are_seen_live(server: ServerProc) -> None:
    name = unique()
    gate = workdir(server, name) / "gate"
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call(
            "command.create",
            {
                "name": name,
                "commands": [
                    'echo "halfway $GREETING #$MIDDLEWARED_COUNTER in $(pwd)"',
                    'echo \'{"percent": 40, "description": "copying"}\' >&3; read x < gate',
                    'echo "$MIDDLEWARED_FIELDS"; echo "late to stderr" >&2',
                ],
                "env": {"GREETING": "hello"},
            },
        )
        gate.parent.mkdir(parents=True)
        os.mkfifo(gate)
        await c.call("core.subscribe", "core.get_jobs")
        job_id = await start(c, name, {}, {"fields": {"n": 1}})

        def live(n: dict[str, Any]) -> bool:
            fields = n["params"].get("fields") or {}
            return (
                n["params"]["id"] == job_id
                and fields.get("state") == "RUNNING"
                and (fields.get("progress") or {}).get("percent") == 40
                and "halfway hello #1" in (fields.get("logs_excerpt") or "")
            )

        event = await c.notification(live)
        assert event["params"]["fields"]["progress"]["description"] == "copying"
        await asyncio.to_thread(gate.write_text, "go\n")
        job = await ended(c, job_id)
    assert job["state"] == "SUCCESS", job["error"]
    assert job["result"] == {"command": name, "counter": 1}
    log = job["logs_excerpt"]
    assert f"stdout: halfway hello #1 in {workdir(server, name)}" in log
    assert 'stdout: {"fields":{"n":1}}' in log
    assert "stderr: late to stderr" in log
    # Every line stamped: 2026-12-05T09:14:28.123Z <stream>: ...
    assert all(line[23:25] == "Z " for line in log.splitlines()), log


async def test_a_script_calls_back_with_its_token_within_allow_only_until_the_end(
    server: ServerProc,
) -> None:
    name = unique()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call(
            "command.create",
            {
                "name": name,
                "allow": ["core.ping"],
                "commands": [
                    "midclt call core.ping",
                    "midclt call auth.me",
                    'midclt call user.query; echo "user.query exit $?"',
                    'printf %s "$MIDDLEWARED_TOKEN" > token',
                ],
            },
        )
        job = await ended(c, await start(c, name))
        assert job["state"] == "SUCCESS", job["error"]
        log = await c.call("command.log", name, 1)
    assert "stdout: pong" in log
    assert '"scope":["core.ping"]' in log and '"full_admin":false' in log
    assert "Not permitted to call user.query" in log
    assert "stdout: user.query exit 1" in log
    token = (workdir(server, name) / "token").read_text()
    assert len(token) > 20 and token not in log
    # The run ended: its token logs in no more.
    done = midclt("-u", server.ws_url, "-T", token, "call", "core.ping", env={})
    assert done.returncode == 1 and "login failed" in done.stderr, done
    done = midclt(
        "call", "core.ping", env={"MIDDLEWARED_URL": server.ws_url, "MIDDLEWARED_TOKEN": token}
    )
    assert done.returncode == 1 and "login failed" in done.stderr, done


async def test_a_failing_line_fails_the_job_with_its_exit_code_and_stderr(
    server: ServerProc,
) -> None:
    name = unique()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call(
            "command.create",
            {"name": name, "commands": ["echo first", "echo 'disk full' >&2; exit 3", "echo no"]},
        )
        job = await ended(c, await start(c, name))
        runs = await c.call("command.logs", name)
    assert job["state"] == "FAILED"
    assert job["error"].startswith(f"Command {name}: line 2 exited with code 3")
    assert "disk full" in job["error"]
    assert job["exc_info"]["extra"] == [["exit_code", 3], ["line", 2]]
    assert "stdout: no" not in job["logs_excerpt"]
    assert [(r["counter"], r["status"], r["state"]) for r in runs] == [(1, "fail", "FAILED")]


async def test_secrets_are_masked_everywhere(server: ServerProc) -> None:
    name = unique()
    run_secret = "run-secret-91c4e0"
    async with raw(server.ws_url, "root", server.password) as c:
        created = await c.call(
            "command.create",
            {
                "name": name,
                "commands": ['echo "a=$A b=$B"', 'echo "$A" >&2; exit 1'],
                "env": {"A": {"value": SECRET, "secret": True}},
            },
        )
        assert created["env"] == {"A": {"value": "********", "secret": True}}
        job = await ended(c, await start(c, name, {"B": {"value": run_secret, "secret": True}}))
        assert job["arguments"][1] == {"B": {"value": "********", "secret": True}}
        assert "a=******** b=********" in job["logs_excerpt"]
        assert SECRET not in json.dumps(job) and run_secret not in json.dumps(job)
        # "********" keeps the secret it stands for.
        await c.call("command.update", name, {"env": {"A": {"value": "********", "secret": True}}})
        job = await ended(c, await start(c, name))
        assert "a=******** b=" in job["logs_excerpt"]
        (shown,) = await c.call("command.query", [["name", "=", name]])
        assert shown["env"]["A"]["value"] == "********"
    assert SECRET not in server.log_text() and run_secret not in server.log_text()


async def test_only_admins_change_commands_and_the_allow_list_decides_who_runs(
    server: ServerProc,
) -> None:
    name = unique()
    user = f"u{uuid.uuid4().hex[:8]}"
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call("command.create", {"name": name, "commands": ["echo ran"]})
        await c.call(
            "user.create",
            {"username": user, "password": "pw-123456", "allowlist": ["command.*"]},
        )
    async with raw(server.ws_url, user, "pw-123456") as u:
        for method, args in (
            ("command.create", [{"name": unique(), "commands": ["id"]}]),
            ("command.update", [name, {"commands": ["id"]}]),
            ("command.delete", [name]),
            ("command.query", []),
        ):
            err = await u.error(method, *args)
            assert err["data"]["errname"] == "EACCES", (method, err)
            assert "administrators only" in err["data"]["reason"]
        job = await ended(u, await start(u, name))
        assert job["state"] == "SUCCESS" and "stdout: ran" in job["logs_excerpt"]


async def test_bad_input_is_refused_naming_the_field(server: ServerProc) -> None:
    async with raw(server.ws_url, "root", server.password) as c:
        for data, field in (
            ({"name": "../x", "commands": ["true"]}, "data.name"),
            ({"name": unique(), "commands": []}, "data.commands"),
            ({"name": unique(), "commands": ["true"], "env": {"1X": "v"}}, "env.1X"),
            (
                {"name": unique(), "commands": ["true"], "env": {"MIDDLEWARED_URL": "x"}},
                "env.MIDDLEWARED_URL",
            ),
            ({"name": unique(), "commands": ["true"], "timeout": 0}, "data.timeout"),
        ):
            err = await c.error("command.create", data)
            assert err["code"] == -32602, (data, err)
            assert err["data"]["extra"][0][0] == field, (data, err)
        err = await c.error("command.run", unique())
        assert err["data"]["errname"] == "ENOENT"


async def test_abort_and_timeout_end_the_whole_process_group(make_server: Any) -> None:
    proc = make_server("--command-kill-grace", "0.5")
    # A grandchild that ignores SIGTERM: only SIGKILL after the grace ends it.
    stubborn = "sh -c 'trap \"\" TERM; sleep 600' & echo $! > child.pid; sleep 600"
    async with raw(proc.ws_url, "root", proc.password) as c:
        await c.call("command.create", {"name": "slow", "commands": [stubborn]})
        await c.call("command.create", {"name": "late", "commands": [stubborn], "timeout": 1})

        job_id = await start(c, "slow")
        pid_file = workdir(proc, "slow") / "child.pid"
        await until(lambda: _ready(pid_file), "the grandchild")
        child = int(pid_file.read_text())
        assert alive(child)
        await c.call("core.job_abort", job_id)
        job = await ended(c, job_id)
        assert job["state"] == "ABORTED"
        assert not alive(child)
        assert "aborted: process group ended" in job["logs_excerpt"]

        job = await ended(c, await start(c, "late"))
        child = int((workdir(proc, "late") / "child.pid").read_text())
        assert job["state"] == "FAILED"
        assert job["exc_info"]["errname"] == "ETIMEDOUT"
        assert job["error"] == "Command late timed out after 1 seconds"
        assert not alive(child)
        runs = await c.call("command.logs", "late")
        assert runs[0]["status"] == "fail"


async def _ready(path: Path) -> bool:
    return await asyncio.to_thread(lambda: path.exists() and path.read_text().strip() != "")


async def test_huge_output_is_cut_at_max_job_log_and_memory_stays_flat(make_server: Any) -> None:
    proc = make_server("--max-job-log", "1000000")
    assert proc.process is not None
    # 200 MB of 100-byte lines.
    flood = "head -c 200000000 /dev/zero | tr '\\0' x | fold -w 99"
    async with raw(proc.ws_url, "root", proc.password) as c:
        await c.call("command.create", {"name": "flood", "commands": ["echo warm", flood]})
        await ended(c, await start(c, "flood"))  # warm up: the first run's allocations
        before = rss(proc.process.pid)
        job = await ended(c, await start(c, "flood"))
        after = rss(proc.process.pid)
        assert job["state"] == "SUCCESS", job["error"]
        log = await c.call("command.log", "flood", 2, {"tail": 4096})
    assert "[log cut at 1000000 bytes (--max-job-log)]" in log
    assert "more bytes were not kept]" in log
    size = (proc.data_dir / "logs" / "commands" / "flood" / "flood.2.success").stat().st_size
    assert 1_000_000 < size < 1_001_000
    assert after - before < 32 * 1024 * 1024, (before, after)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_log_retention_keeps_karajos_names(server: ServerProc) -> None:
    name = unique()
    logs = server.data_dir / "logs" / "commands" / name
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call(
            "command.create",
            {"name": name, "commands": ['test "$FAIL" != 1'], "log_retention": 2},
        )
        for env in ({}, {"FAIL": "1"}, {}):
            await ended(c, await start(c, name, env))
        runs = await c.call("command.logs", name)
        assert [(r["counter"], r["status"]) for r in runs] == [(3, "success"), (2, "fail")]
        assert sorted(os.listdir(logs)) == [f"{name}.2.fail", f"{name}.3.success"]
        err = await c.error("command.log", name, 1)
        assert err["data"]["errname"] == "ENOENT"
        assert "$ test" in await c.call("command.log", name, 3)
        await c.call("command.delete", name)
        assert not logs.exists()
        err = await c.error("command.logs", name)
        assert err["data"]["errname"] == "ENOENT"


async def test_max_running_commands_makes_runs_wait_their_turn(server: ServerProc) -> None:
    name = unique()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call(
            "command.create",
            {"name": name, "commands": ["read x < gate"], "max_concurrency": 5},
        )
        await c.call("core.subscribe", "core.get_jobs")
        gate = workdir(server, name) / "gate"
        gate.parent.mkdir(parents=True)
        os.mkfifo(gate)
        first = await start(c, name)
        await until(lambda: _runs(c, name, 1), "the first run")
        second = await start(c, name)

        def waiting(n: dict[str, Any]) -> bool:
            fields = n["params"].get("fields") or {}
            description = (fields.get("progress") or {}).get("description") or ""
            return n["params"]["id"] == second and description.startswith("Waiting for a free")

        await c.notification(waiting)
        # The default --max-running-commands is 1: the second has not started.
        assert len(await c.call("command.logs", name)) == 1
        for _ in range(2):
            await asyncio.to_thread(gate.write_text, "go\n")
            await until(lambda: _ended_count(c, [first, second]), "a run to end")
        assert (await ended(c, first))["state"] == "SUCCESS"
        assert (await ended(c, second))["state"] == "SUCCESS"


async def _runs(c: Raw, name: str, count: int) -> bool:
    return len(await c.call("command.logs", name)) >= count


async def _ended_count(c: Raw, ids: list[int]) -> int:
    jobs = await c.call("core.get_jobs", [["id", "in", ids], ["state", "=", "SUCCESS"]])
    return len(jobs)


async def test_midclt_command_run_streams_the_log_and_draws_progress(server: ServerProc) -> None:
    name = unique()
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call(
            "command.create",
            {
                "name": name,
                "commands": [LOOP, "exit 4"],
            },
        )
    env = {"MIDCLT_URL": server.ws_url, "MIDCLT_USER": "root", "MIDCLT_PASSWORD": server.password}
    done = midclt("command", "run", name, "-e", "X=y", env=env)
    assert done.returncode == 1, done.stderr
    assert [ln.split(" ", 1)[1] for ln in done.stdout.splitlines()][:4] == [
        "run: $ " + LOOP,
        "stdout: step 1 y",
        "stdout: step 2 y",
        "stdout: step 3 y",
    ]
    assert "line 2 exited with code 4" in done.stderr
    assert "99.0%" in done.stderr


async def test_kill_9_with_a_command_running_ends_its_processes_at_restart(
    make_server: Any,
) -> None:
    proc = make_server("--command-kill-grace", "0.5")
    stubborn = "sh -c 'trap \"\" TERM; sleep 600' & echo $! > child.pid; sleep 600"
    async with raw(proc.ws_url, "root", proc.password) as c:
        await c.call("command.create", {"name": "stuck", "commands": [stubborn]})
        job_id = await start(c, "stuck")
        pid_file = workdir(proc, "stuck") / "child.pid"
        await until(lambda: _ready(pid_file), "the grandchild")
    child = int(pid_file.read_text())
    proc.kill()  # SIGKILL: the command's processes are left behind
    assert alive(child)
    again = make_server("--command-kill-grace", "0.5", data_dir=proc.data_dir)
    await until(lambda: _dead(child), "the orphan to be ended")
    async with raw(again.ws_url, "root", again.password) as c:
        job = await c.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
        assert job["state"] == "FAILED"
        (run,) = await c.call("command.logs", "stuck")
        assert (run["counter"], run["status"]) == (1, "fail")
    assert "processes left by the last server ended" in again.log_text()


async def _dead(pid: int) -> bool:
    return not alive(pid)


async def test_commands_are_in_snapshots(make_server: Any, tmp_path: Path) -> None:
    proc = make_server()
    backup = tmp_path / "b.db"
    secret_env = {"K": {"value": SECRET, "secret": True}}
    async with raw(proc.ws_url, "root", proc.password) as c:
        await c.call("command.create", {"name": "kept", "commands": ["true"], "env": secret_env})
        env = {"MIDCLT_URL": proc.ws_url, "MIDCLT_USER": "root", "MIDCLT_PASSWORD": proc.password}
        saved = await asyncio.to_thread(
            midclt, "download", "config.save", "[{}]", "b.db", str(backup), env=env
        )
        assert saved.returncode == 0, saved.stderr
        await c.call("command.delete", "kept")
        restored = await asyncio.to_thread(
            midclt, "upload", "config.upload", "[]", str(backup), env=env
        )
        assert restored.returncode == 0 and '"restored":true' in restored.stdout, restored
        # Seen at once (no restart), its secret kept and still not shown.
        (back,) = await c.call("command.query", [["name", "=", "kept"]])
        assert back["env"] == {"K": {"value": "********", "secret": True}}
        job = await ended(c, await start(c, "kept"))
        assert job["state"] == "SUCCESS"


async def test_a_server_stopping_ends_running_commands_through_the_grace(
    make_server: Any,
) -> None:
    proc = make_server("--shutdown-grace", "0.5", "--command-kill-grace", "0.5")
    stubborn = "sh -c 'trap \"\" TERM; sleep 600' & echo $! > child.pid; sleep 600"
    async with raw(proc.ws_url, "root", proc.password) as c:
        await c.call("command.create", {"name": "stuck", "commands": [stubborn]})
        job_id = await start(c, "stuck")
        pid_file = workdir(proc, "stuck") / "child.pid"
        await until(lambda: _ready(pid_file), "the grandchild")
    child = int(pid_file.read_text())
    assert await asyncio.to_thread(proc.stop) == 0  # SIGTERM
    assert not alive(child)
    again = make_server(data_dir=proc.data_dir)
    async with raw(again.ws_url, "root", again.password) as c:
        job = await c.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
        assert job["state"] == "ABORTED"
        assert job["error"] == "Job aborted: the server is shutting down"
        (run,) = await c.call("command.logs", "stuck")
        assert (run["counter"], run["status"], run["state"]) == (1, "fail", "ABORTED")
    assert "processes left by the last server" not in again.log_text()
