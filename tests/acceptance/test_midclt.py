"""``midclt`` as a user runs it: a subprocess against the real server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from middlewared_client import Client
from tests.serverproc import ServerProc

TIMEOUT = 60.0


def midclt(
    server: ServerProc | None,
    *args: str,
    login: bool = True,
    env: dict[str, str] | None = None,
    url: str | None = None,
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "middlewared_client.midclt"]
    url = url or (server.ws_url if server is not None else None)
    if url is not None:
        cmd += ["-u", url]
    if login and server is not None:
        cmd += ["-U", "root", "-P", server.password]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MIDCLT_")}
    full_env.update(env or {})
    # Bytes, decoded here: text mode would turn the progress bar's "\r" into newlines.
    done = subprocess.run([*cmd, *args], capture_output=True, timeout=TIMEOUT, env=full_env)
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def test_ping(server: ServerProc) -> None:
    done = midclt(server, "ping", login=False)
    assert (done.returncode, done.stdout) == (0, "pong\n"), done.stderr


def test_call_prints_strings_raw_and_the_rest_as_json(server: ServerProc) -> None:
    done = midclt(server, "call", "core.ping")
    assert (done.returncode, done.stdout) == (0, "pong\n"), done.stderr
    done = midclt(server, "call", "core.get_jobs", "[]", '{"limit": 2}')
    assert done.returncode == 0, done.stderr
    jobs = json.loads(done.stdout)
    assert isinstance(jobs, list) and len(jobs) <= 2


def test_call_job_method_prints_its_result(server: ServerProc) -> None:
    done = midclt(server, "call", "test.progress", "2")
    assert (done.returncode, done.stdout) == (0, "2\n"), done.stderr


def test_call_j_draws_a_progress_bar_on_stderr(server: ServerProc) -> None:
    done = midclt(server, "call", "-j", "test.progress", "4")
    assert (done.returncode, done.stdout) == (0, "4\n"), done.stderr
    frames = [f for f in done.stderr.split("\r") if f.strip()]
    assert frames, done.stderr
    assert frames[-1].startswith("[" + "#" * 30 + "]")
    assert "100.0%" in frames[-1]
    assert done.stderr.endswith("\n")


def test_call_j_failed_job_exits_1_with_the_reason(server: ServerProc) -> None:
    done = midclt(server, "call", "-j", "test.fail", "went wrong")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "went wrong" in done.stderr
    assert "midclt: [E" in done.stderr


def test_unknown_method_exits_1_with_errname_and_reason(server: ServerProc) -> None:
    done = midclt(server, "call", "no.such_method")
    assert done.returncode == 1
    assert "[ENOMETHOD]" in done.stderr
    assert "no.such_method" in done.stderr


def test_bad_password_exits_1(make_server: Callable[..., ServerProc]) -> None:
    server = make_server()  # of its own: failed logins are rate limited per address
    done = midclt(server, "-U", "root", "-P", "wrong", "call", "core.ping", login=False)
    assert done.returncode == 1
    assert "midclt: login failed" in done.stderr
    assert done.stdout == ""


def test_call_without_login_is_refused(server: ServerProc) -> None:
    done = midclt(server, "call", "core.get_jobs", login=False)
    assert done.returncode == 1
    assert "[ENOTAUTHENTICATED]" in done.stderr


def test_connection_refused_exits_1() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = midclt(None, "ping", url=f"ws://127.0.0.1:{port}/api/current")
    assert done.returncode == 1
    assert "ECONNREFUSED" in done.stderr


def test_bad_usage_exits_2(server: ServerProc) -> None:
    assert midclt(server, "frobnicate").returncode == 2
    assert midclt(server, "call").returncode == 2
    assert midclt(server, "jobs", "--limit", "many").returncode == 2


def test_credentials_and_url_from_the_environment(server: ServerProc) -> None:
    env = {"MIDCLT_URL": server.ws_url, "MIDCLT_USER": "root", "MIDCLT_PASSWORD": server.password}
    done = midclt(None, "call", "test.progress", "1", env=env)
    assert (done.returncode, done.stdout) == (0, "1\n"), done.stderr


def test_jobs_prints_a_table(server: ServerProc) -> None:
    ok = midclt(server, "call", "test.progress", "1")
    assert ok.returncode == 0, ok.stderr
    failed = midclt(server, "call", "test.fail", "table row")
    assert failed.returncode == 1

    done = midclt(server, "jobs", "--limit", "5")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["ID", "METHOD", "STATE", "PERCENT", "DESCRIPTION"]
    assert 2 <= len(lines) - 1 <= 5
    ids = [int(line.split()[0]) for line in lines[1:]]
    assert ids == sorted(ids)
    assert lines[-1].split()[1:3] == ["test.fail", "FAILED"]

    done = midclt(server, "jobs", "--state", "success")
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[1:]
    assert rows and all(row.split()[2] == "SUCCESS" for row in rows)


def test_all_jobs_come_page_by_page(make_server: Callable[..., ServerProc]) -> None:
    """``--limit 0`` lists every job, past what one query may hold on the server."""
    srv = make_server("--query-max-rows", "5")
    with Client(srv.ws_url, username="root", password=srv.password) as client:
        for n in range(12):
            client.call("test.keep", n)
        total = client.call("core.get_jobs", [], {"count": True})
    assert midclt(srv, "call", "core.get_jobs").returncode == 1  # too many for one query
    done = midclt(srv, "jobs", "--limit", "0")
    assert done.returncode == 0, done.stderr
    ids = [int(line.split()[0]) for line in done.stdout.splitlines()[1:]]
    assert len(ids) == total >= 12 and ids == sorted(ids)


def test_subscribe_prints_count_events_then_exits(server: ServerProc) -> None:
    cmd = [sys.executable, "-m", "middlewared_client.midclt", "-u", server.ws_url]
    cmd += ["-U", "root", "-P", server.password, "subscribe", "-n", "3", "core.get_jobs"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Jobs until the subscriber has had its three events: it may not be subscribed yet
        # when the first ones run, and no output says when it is.
        with Client(server.ws_url, username="root", password=server.password) as client:
            for _ in range(200):
                client.call("test.progress", 1)
                try:
                    proc.wait(timeout=0.1)
                    break
                except subprocess.TimeoutExpired:
                    continue
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    events: list[Any] = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 3
    assert all(
        e["collection"] == "core.get_jobs" and e["msg"] in ("added", "changed") for e in events
    )


@pytest.mark.parametrize("argv", [["subscribe", "-n", "1"], ["call", "-j"]])
def test_missing_operands_exit_2(server: ServerProc, argv: list[str]) -> None:
    assert midclt(server, *argv).returncode == 2
