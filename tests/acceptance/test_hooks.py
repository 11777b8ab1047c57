"""Hook scripts over the wire, with real processes: every event with its arguments and
stdin (launch, job.SUCCESS/FAILED/ABORTED, upload.complete and its .json through a real
upload, on.<method> after calls with secrets hidden), a hung script killed at its timeout
while others complete, a failing script's exit code and output tail in hook.runs and the
--trigger-log file, scripts added and removed while the server runs, a file that is not
executable reported once, and hook.runs for administrators only."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.test_commands import until
from tests.procstate import alive
from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

CURL = shutil.which("curl")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "hooks"
SECRET = "hook-secret-env-1b7e"

# Records each run in rec/<script>/<n>.args (NUL-separated) and <n>.stdin, the stdin first
# so that an .args file means a finished record. One script's runs never overlap.
RECORD = r"""d="$PWD/rec/$(basename "$0")"
mkdir -p "$d"
n=$(cat "$d/count" 2>/dev/null || echo 0)
echo $((n + 1)) > "$d/count"
cat > "$d/$n.stdin"
{ printf '%s\0' "$@"; printf 'cwd=%s\0env=%s\0' "$PWD" "${HOOK_TEST_SECRET:-}"; } > "$d/$n.tmp"
mv "$d/$n.tmp" "$d/$n.args"
"""


def script(folder: Path, name: str, body: str = RECORD, mode: int = 0o755) -> Path:
    """Written beside, then renamed in: the server never sees (nor execs) half a file."""
    tmp = folder / f".{name}.tmp"
    tmp.write_text("#!/bin/sh\n" + body)
    tmp.chmod(mode)
    path = folder / name
    tmp.rename(path)
    return path


def records(folder: Path, name: str) -> list[tuple[list[str], bytes]]:
    """The runs of ``name`` recorded so far: (args, stdin), in order."""
    d = folder / "rec" / name
    out = []
    n = 0
    while (d / f"{n}.args").exists():
        fields = (d / f"{n}.args").read_bytes().split(b"\0")[:-1]
        out.append(([f.decode() for f in fields], (d / f"{n}.stdin").read_bytes()))
        n += 1
    return out


async def recorded(folder: Path, name: str, count: int = 1) -> list[tuple[list[str], bytes]]:
    async def check() -> list[tuple[list[str], bytes]] | None:
        found = records(folder, name)
        return found if len(found) >= count else None

    result: list[tuple[list[str], bytes]] = await until(check, f"{count} runs of {name}")
    return result


async def job_record(folder: Path, event: str, job_id: int) -> tuple[list[str], bytes]:
    """The run of ``event`` for job ``job_id`` (other jobs, core.job_wait's, end too)."""

    async def check() -> tuple[list[str], bytes] | None:
        found = [r for r in records(folder, event) if r[0][0] == str(job_id)]
        return found[0] if found else None

    result: tuple[list[str], bytes] = await until(check, f"{event} of job {job_id}")
    return result


async def hook_runs(c: Raw, check: Callable[[list[dict[str, Any]]], bool]) -> list[Any]:
    async def poll() -> list[Any] | None:
        runs: list[Any] = await c.call("hook.runs", 1000)
        return runs if check(runs) else None

    result: list[Any] = await until(poll, "hook.runs")
    return result


async def start_job(c: Raw, method: str, *params: Any) -> int:
    await c.call("core.set_options", {"legacy_jobs": True})
    try:
        job_id: int = await c.call(method, *params)
    finally:
        await c.call("core.set_options", {"legacy_jobs": False})
    return job_id


def upload(srv: ServerProc, folder: Path, *files: Path) -> int:
    assert CURL is not None
    args = [CURL, "-sS", "-u", f"root:{srv.password}"]
    args += ["-F", "data=" + json.dumps({"method": "filesystem.put", "params": [str(folder)]})]
    for f in files:
        args += ["-F", f"file=@{f}"]
    done = subprocess.run(
        [*args, f"{srv.url}/_upload"], capture_output=True, check=True, timeout=60
    )
    job_id: int = json.loads(done.stdout)["job_id"]
    return job_id


@pytest.mark.skipif(CURL is None, reason="curl is not installed (.ci/run installs it)")
async def test_every_event_gets_its_arguments_and_stdin(
    make_server: Callable[..., ServerProc], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    names = ["launch", "job.SUCCESS", "job.FAILED", "job.ABORTED", "upload.complete"]
    for name in [*names, "upload.complete.json", "on.core.ping"]:
        script(hooks, name)
    # In the server's environment, never in a script's.
    monkeypatch.setenv("HOOK_TEST_SECRET", SECRET)
    srv = make_server("--trigger-dir", str(hooks), "--trigger-concurrency", "1")

    ((args, stdin),) = await recorded(hooks, "launch")
    assert args == [str(srv.port), f"cwd={hooks}", "env="]
    assert stdin == b""

    async with raw(srv.ws_url, "root", srv.password) as c:
        assert await c.call("core.ping") == "pong"
        kept = await start_job(c, "test.keep", {"n": 1})
        args, stdin = await job_record(hooks, "job.SUCCESS", kept)
        assert args[:3] == [str(kept), "test.keep", "root"]
        record = json.loads(stdin)
        assert record["id"] == kept and record["state"] == "SUCCESS"
        assert record["result"] == {"n": 1} and record["arguments"] == [{"n": 1}]

        failed = await start_job(c, "test.fail", "broken-on-purpose")
        args, stdin = await job_record(hooks, "job.FAILED", failed)
        assert args[:3] == [str(failed), "test.fail", "root"]
        record = json.loads(stdin)
        assert record["state"] == "FAILED" and "broken-on-purpose" in record["error"]

        waiting = await start_job(c, "test.wait", "hook-gate")
        await c.call("core.job_abort", waiting)
        args, stdin = await job_record(hooks, "job.ABORTED", waiting)
        assert args[:3] == [str(waiting), "test.wait", "root"]
        assert json.loads(stdin)["state"] == "ABORTED"

        folder = srv.data_dir / "files" / "incoming"
        folder.mkdir()
        sent = [tmp_path / "a.txt", tmp_path / "b.bin"]
        for i, f in enumerate(sent):
            f.write_bytes(b"x" * (10 + i))
        up = await asyncio.to_thread(upload, srv, folder, *sent)
        args, stdin = await job_record(hooks, "upload.complete", up)
        assert args[:2] == [str(up), "root"]
        written = [str(folder / "a.txt"), str(folder / "b.bin")]
        assert stdin.decode().splitlines() == [f"a.txt {written[0]}", f"b.bin {written[1]}"]
        args, stdin = await job_record(hooks, "upload.complete.json", up)
        assert args[:2] == [str(up), "root"]
        assert json.loads(stdin) == {
            "inputFiles": ["a.txt", "b.bin"],
            "outputFiles": written,
            "userData": {"method": "filesystem.put", "params": [str(folder), {}]},
        }
        # The upload's job ran job.SUCCESS too, and on.core.ping never ran: the server was
        # started without --trigger-on-api.
        args, _ = await job_record(hooks, "job.SUCCESS", up)
        assert args[1:3] == ["filesystem.put", "root"]
        runs = await c.call("hook.runs")
        assert not [r for r in runs if r["event"] == "on.core.ping"]
        assert not (hooks / "rec" / "on.core.ping").exists()
        assert {r["event"] for r in runs} == {*names, "upload.complete.json"}
        assert all(r["exit_code"] == 0 and not r["timed_out"] for r in runs), runs
        status = await c.call("hook.status")
        assert status["directory"] == str(hooks) and status["on_api"] is False
        assert status["finished"] >= len(runs) and status["dropped"] == 0


async def test_on_method_after_each_call_with_secrets_hidden(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    for name in ("on.test.echo", "on.auth.login", "on.auth.generate_token", "on.no.such"):
        script(hooks, name)
    log = tmp_path / "hooks.jsonl"
    srv = make_server(
        "--trigger-dir",
        str(hooks),
        "--trigger-on-api",
        "--trigger-log",
        str(log),
        "--trigger-concurrency",
        "1",
    )
    async with raw(srv.ws_url) as c:
        assert await c.call("auth.login", "root", "wrong-password-42") is False
    async with raw(srv.ws_url, "root", srv.password) as c:
        assert await c.call("test.echo", {"k": [1, 2]}) == {"k": [1, 2]}
        await c.error("test.echo", 1, 2)
        token = await c.call("auth.generate_token")
        await c.error("no.such", "x")
        (ok, bad) = await recorded(hooks, "on.test.echo", 2)
        call, status, message, result = ok[0][:4]
        assert json.loads(call) == {"request": "test.echo", "parameters": [{"k": [1, 2]}]}
        assert (status, message, json.loads(result)) == ("success", "OK", {"k": [1, 2]})
        call, status, message, result = bad[0][:4]
        assert json.loads(call) == {"request": "test.echo", "parameters": [1, 2]}
        assert status == "error" and "Too many arguments" in message
        assert json.loads(result)["error"]["errname"] == "EINVAL"

        logins = await recorded(hooks, "on.auth.login", 2)
        failed_login = json.loads(logins[0][0][0])
        assert failed_login == {"request": "auth.login", "parameters": ["root", "********"]}
        assert logins[0][0][1:4] == ["success", "OK", "false"]
        assert json.loads(logins[1][0][0])["parameters"] == ["root", "********"]
        assert logins[1][0][1:4] == ["success", "OK", "true"]
        ((args, _),) = await recorded(hooks, "on.auth.generate_token")
        assert json.loads(args[3]) == "********"

        # Runs go one at a time in submission order here: once the token's run is in,
        # a run for the call to no method would have been too.
        runs = await hook_runs(c, lambda rs: len(rs) >= 5)
        assert not (hooks / "rec" / "on.no.such").exists()
        assert [r["event"] for r in runs].count("on.no.such") == 0

    text = log.read_text() + srv.log_text()
    for secret in ("wrong-password-42", srv.password, token):
        assert secret not in text
        for r in runs:
            assert secret not in json.dumps(r)
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["event"] for e in logged if "exit_code" in e][:2] == ["on.auth.login"] * 2


async def test_a_hung_script_is_killed_at_its_timeout_and_blocks_nothing_else(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    script(hooks, "on.test.echo", 'sleep 60 & echo $! >> sleepers; echo "hung $1"; wait\n')
    script(hooks, "on.core.ping")
    srv = make_server(
        "--trigger-dir",
        str(hooks),
        "--trigger-on-api",
        "--trigger-timeout",
        "2",
        "--trigger-concurrency",
        "2",
    )
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call("test.echo", 1)
        await c.call("test.echo", 2)
        for _ in range(10):
            await c.call("core.ping")
        await recorded(hooks, "on.core.ping", 10)
        # The pings all ran while the first echo still hung.
        runs = await c.call("hook.runs")
        assert not [r for r in runs if r["event"] == "on.test.echo"]

        def both_hung(rs: list[dict[str, Any]]) -> bool:
            return len([r for r in rs if r["event"] == "on.test.echo"]) == 2

        runs = await hook_runs(c, both_hung)
    echoes = sorted((r for r in runs if r["event"] == "on.test.echo"), key=lambda r: r["args"])
    for r in echoes:
        assert r["timed_out"] is True and r["exit_code"] == -15, r
        assert 2.0 <= r["duration"] < 7.0, r
    assert "hung" in echoes[0]["output_tail"]
    # In event order: the second started once the first was ended.
    first_end = echoes[0]["started"]["$date"] + echoes[0]["duration"] * 1000
    assert echoes[1]["started"]["$date"] >= first_end - 5
    pings = [r for r in runs if r["event"] == "on.core.ping"]
    assert len(pings) == 10 and all(r["exit_code"] == 0 for r in pings)
    # Their process groups went with them: the sleeps they started are gone.
    sleepers = [int(p) for p in (hooks / "sleepers").read_text().split()]
    assert len(sleepers) == 2
    assert not [p for p in sleepers if alive(p)]
    assert "timed out after" in srv.log_text()


async def test_a_failing_script_is_logged_with_its_exit_code_and_output_tail(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    script(hooks, "launch", 'seq 1 3000; echo "last words on $1" >&2; exit 3\n')
    log = tmp_path / "hooks.jsonl"
    srv = make_server("--trigger-dir", str(hooks), "--trigger-log", str(log))
    async with raw(srv.ws_url, "root", srv.password) as c:
        (run,) = await hook_runs(c, lambda rs: len(rs) == 1)
    assert run["event"] == "launch" and run["script"] == str(hooks / "launch")
    assert run["args"] == [str(srv.port)]
    assert run["exit_code"] == 3 and run["timed_out"] is False and run["error"] is None
    tail = run["output_tail"]
    assert tail.endswith(f"2999\n3000\nlast words on {srv.port}\n")
    assert len(tail) == 4096 and run["output_bytes"] > 13_000
    (logged,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert {k: logged[k] for k in run} == run
    assert log.stat().st_mode & 0o777 == 0o600
    assert "exited with code 3" in srv.log_text()


async def test_scripts_come_and_go_and_an_unexecutable_file_is_reported_once(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    log = tmp_path / "hooks.jsonl"
    srv = make_server(
        "--trigger-dir",
        str(hooks),
        "--trigger-on-api",
        "--trigger-log",
        str(log),
        "--trigger-concurrency",
        "1",
    )
    async with raw(srv.ws_url, "root", srv.password) as c:
        await c.call("core.ping")  # no script yet
        ping = script(hooks, "on.core.ping")
        await c.call("core.ping")
        await recorded(hooks, "on.core.ping", 1)
        ping.unlink()
        await c.call("core.ping")  # gone: nothing runs
        script(hooks, "on.test.echo", mode=0o644)
        await c.call("test.echo", 1)
        await c.call("test.echo", 2)
        script(hooks, "on.core.ping")
        await c.call("core.ping")
        # One at a time, in order: the second run's record means all before it were seen.
        await recorded(hooks, "on.core.ping", 2)
        await hook_runs(c, lambda rs: len(rs) == 2)
    assert len(records(hooks, "on.core.ping")) == 2
    assert not (hooks / "rec" / "on.test.echo").exists()
    notes = [json.loads(line) for line in log.read_text().splitlines()]
    reports = [n for n in notes if n.get("event") == "on.test.echo"]
    assert len(reports) == 1, notes
    assert reports[0]["message"].startswith("not executable")
    assert srv.log_text().count("not executable") == 1


async def test_hook_runs_is_for_administrators(server: ServerProc) -> None:
    user = "hookviewer"
    async with raw(server.ws_url, "root", server.password) as c:
        await c.call(
            "user.create",
            {"username": user, "password": "pw-" + user * 2, "allowlist": ["hook.runs"]},
        )
        assert await c.call("hook.runs") == []  # no --trigger-dir: nothing ran
        status = await c.call("hook.status")
        assert status["directory"] is None and status["finished"] == status["dropped"] == 0
        error = await c.error("hook.runs", 0)
        assert error["data"]["errname"] == "EINVAL"
    async with raw(server.ws_url, user, "pw-" + user * 2) as c:
        for method in ("hook.runs", "hook.status"):
            error = await c.error(method)
            assert "for administrators only" in error["data"]["reason"], error


def test_bad_hook_options_are_refused_clearly(tmp_path: Path) -> None:
    def start(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "middlewared", "--port", "0"]
        cmd += ["--data-dir", str(tmp_path / "data"), *args]
        env = {**os.environ, "MIDDLEWARED_ROOT_PASSWORD": "pw"}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)

    done = start("--trigger-on-api")
    assert done.returncode == 2 and "need --trigger-dir" in done.stderr
    done = start("--trigger-dir", str(tmp_path / "absent"))
    assert done.returncode == 1 and "absent" in done.stderr
    done = start("--trigger-dir", str(tmp_path), "--trigger-timeout", "0")
    assert done.returncode == 2 and "--trigger-timeout" in done.stderr


@pytest.mark.skipif(CURL is None, reason="curl is not installed (.ci/run installs it)")
async def test_the_example_scripts_run_as_the_readme_shows(
    make_server: Callable[..., ServerProc], tmp_path: Path
) -> None:
    hooks = tmp_path / "hooks"
    shutil.copytree(EXAMPLES, hooks)
    srv = make_server("--trigger-dir", str(hooks), "--trigger-on-api")
    async with raw(srv.ws_url) as c:
        assert await c.call("auth.login", "root", "not-the-password") is False
    async with raw(srv.ws_url, "root", srv.password) as c:
        failed = await start_job(c, "test.fail", "disk-on-fire")
        folder = srv.data_dir / "files"
        sent = tmp_path / "report.txt"
        sent.write_text("hello\n")
        up = await asyncio.to_thread(upload, srv, folder, sent)

    async def logged(name: str) -> str | None:
        path = hooks / name
        return path.read_text() if path.exists() else None

    assert await until(lambda: logged("failures.log"), "failures.log") == (
        f"job {failed} (test.fail, started by root) failed: disk-on-fire\n"
    )
    assert await until(lambda: logged("uploads.log"), "uploads.log") == (
        f"root uploaded report.txt to {folder / 'report.txt'} (job {up})\n"
    )
    assert await until(lambda: logged("logins.log"), "logins.log") == (
        "failed login as root: success OK false\n"
    )
