"""``midclt trigger ...`` as a person runs it: a subprocess against the real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from middlewared.triggers.model import TYPES
from middlewared_client import Client
from tests.acceptance.test_midclt import TIMEOUT, midclt
from tests.serverproc import ServerProc

README = Path(__file__).resolve().parents[2] / "README.md"
COLUMNS = ("ID", "NAME", "TRIGGER", "METHOD", "NEXT RUN", "LAST RUN", "STATE")
# A zone of its own for midclt (no DST, a half-hour offset): local times are visibly local.
ZONE = "Asia/Kolkata"


@pytest.fixture
def admin(server: ServerProc) -> Iterator[Client]:
    with Client(server.ws_url, username="root", password=server.password) as client:
        yield client


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def create(server: ServerProc, *args: str) -> int:
    out = ok(midclt(server, "trigger", "create", *args))
    assert re.fullmatch(r"\d+\n", out), out
    return int(out)


def table(text: str) -> dict[int, dict[str, str]]:
    """The rows of a ``trigger list`` table by id, cut at the header's column starts."""
    header, *lines = text.splitlines()
    starts = [header.index(name) for name in COLUMNS]
    assert header.split() == " ".join(COLUMNS).split(), header
    rows = {}
    for line in lines:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows[int(cells[0])] = dict(zip(COLUMNS, cells, strict=True))
    return rows


def listed(server: ServerProc, *args: str) -> dict[int, dict[str, str]]:
    return table(ok(midclt(server, "trigger", "list", *args, env={"TZ": ZONE})))


def local(value: dict[str, int]) -> str:
    return datetime.fromtimestamp(value["$date"] / 1000, ZoneInfo(ZONE)).strftime(
        "%Y-%m-%d %H:%M:%S"
    )


def settled(client: Client, trigger_id: int) -> dict[str, Any]:
    """The trigger after its job's end was waited for: the engine records the end in the
    trigger's state before the job's waiters hear of it, so it says how the job went."""
    record: dict[str, Any] = client.call("trigger.get_instance", trigger_id)
    assert record["current_state"]["status"] in ("done", "errored"), record
    return record


def test_help_says_what_each_subcommand_and_type_is(server: ServerProc) -> None:
    out = ok(midclt(server, "trigger", "--help", login=False))
    for sub in ("create", "list", "get", "launch", "pause", "resume", "delete", "jobs"):
        assert re.search(rf"^\s+{sub}\s+\w", out, re.M), sub
    assert "midclt trigger create @every 1h" in out
    out = ok(midclt(server, "trigger", "create", "--help", login=False))
    assert "TYPE [ARG] METHOD [PARAMS_JSON]" in out
    for kind in TYPES:  # every type the server knows is explained
        assert re.search(rf"(^\s+|, ){kind}\b", out, re.M), kind


def test_create_then_list_shows_next_runs_in_local_time(server: ServerProc, admin: Client) -> None:
    name = f"hourly-{uuid.uuid4().hex[:6]}"
    every = create(server, "@every", "1h", "test.progress", "[1]", "--name", name)
    cron = create(server, "--tz", "UTC", "@cron", "0 3 * * *", "test.progress", "[2]")
    records = {r["id"]: r for r in admin.call("trigger.query", [["id", "in", [every, cron]]])}
    assert records[every]["arguments"] == "1h" and records[every]["description"] == name
    assert records[every]["params"] == [1] and records[cron]["params"] == [2]
    assert records[cron]["options"]["timezone"] == "UTC"

    rows = listed(server)
    assert rows[every] == {
        "ID": str(every),
        "NAME": name,
        "TRIGGER": "@every 1h",
        "METHOD": "test.progress",
        "NEXT RUN": local(records[every]["next_run"]),
        "LAST RUN": "-",
        "STATE": "active",
    }
    assert rows[cron]["TRIGGER"] == "@cron 0 3 * * *" and rows[cron]["NAME"] == "-"
    # 03:00 UTC is 08:30 in Kolkata.
    assert rows[cron]["NEXT RUN"] == local(records[cron]["next_run"])
    assert rows[cron]["NEXT RUN"].endswith(" 08:30:00")

    only = listed(server, json.dumps([["id", "=", cron]]))
    assert list(only) == [cron]
    raw = json.loads(ok(midclt(server, "trigger", "list", "--json")))
    assert {r["id"]: r for r in raw if r["id"] in records} == records
    for trigger_id in (every, cron):
        assert ok(midclt(server, "trigger", "delete", str(trigger_id))) == (
            f"trigger {trigger_id}: deleted\n"
        )
    assert not admin.call("trigger.query", [["id", "in", [every, cron]]])


def test_options_pause_with_reason_resume_get_and_delete(server: ServerProc, admin: Client) -> None:
    tid = create(
        server,
        *("@event", "core.get_jobs:UPDATED:FAILED:state", "test.echo_job"),
        *("--debounce", "2s", "--pass-event", "--missed", "once", "--overlap", "skip"),
        *("--paused", "--name", "on failures", "--json", '{"notify_on_failure": []}'),
    )
    record = admin.call("trigger.get_instance", tid)
    assert record["paused"] is True
    assert (record["type"], record["arguments"]) == ("@event", "core.get_jobs:UPDATED:FAILED:state")
    assert (record["debounce"], record["pass_event"]) == ("2s", True)
    assert record["options"] == {"missed": "once", "overlap": "skip", "timezone": None}
    assert listed(server)[tid]["STATE"] == "paused"

    shown = ok(midclt(server, "trigger", "get", str(tid)))
    fields = dict(re.split(r":\s+", line, maxsplit=1) for line in shown.splitlines())
    assert fields["name"] == "on failures" and fields["state"] == "paused"
    assert fields["trigger"] == "@event core.get_jobs:UPDATED:FAILED:state"
    assert (fields["debounce"], fields["pass event"], fields["owner"]) == ("2s", "yes", "root")
    assert fields["options"] == "missed=once overlap=skip timezone=the server's"
    assert json.loads(ok(midclt(server, "trigger", "get", "--json", str(tid)))) == record

    assert ok(midclt(server, "trigger", "resume", str(tid))) == f"trigger {tid}: active\n"
    assert admin.call("trigger.get_instance", tid)["paused"] is False
    done = midclt(server, "trigger", "pause", str(tid), "--reason", "disks  swapped\ttoday")
    assert ok(done) == f"trigger {tid}: paused: disks swapped today\n"
    record = admin.call("trigger.get_instance", tid)
    assert record["current_state"]["last_error"] == "disks  swapped\ttoday"
    assert listed(server)[tid]["STATE"] == "paused: disks swapped today"
    assert ok(midclt(server, "trigger", "resume", str(tid))) == f"trigger {tid}: active\n"
    assert admin.call("trigger.get_instance", tid)["current_state"]["last_error"] is None

    ok(midclt(server, "trigger", "delete", str(tid)))
    done = midclt(server, "trigger", "get", str(tid))
    assert done.returncode == 1 and done.stdout == ""
    assert f"[ENOENT] Trigger {tid} does not exist" in done.stderr


def test_resume_says_when_a_schedule_fires_next(server: ServerProc, admin: Client) -> None:
    tid = create(server, "@every", "2h", "test.progress", "[1]", "--paused")
    assert admin.call("trigger.get_instance", tid)["next_run"] is not None
    assert listed(server)[tid]["NEXT RUN"] == "-"  # paused: it does not fire
    done = midclt(server, "trigger", "resume", str(tid), env={"TZ": ZONE})
    record = admin.call("trigger.get_instance", tid)
    assert ok(done) == f"trigger {tid}: active, next run {local(record['next_run'])}\n"
    ok(midclt(server, "trigger", "delete", str(tid)))


def test_a_trigger_created_paused_does_not_fire(server: ServerProc, admin: Client) -> None:
    paused = create(server, "@every", "1s", "test.progress", "[1]", "--paused")
    running = create(server, "@every", "1s", "test.progress", "[1]")
    # Two runs of the other one: the paused one was due at least once meanwhile.
    deadline = time.monotonic() + TIMEOUT
    while len(admin.call("trigger.jobs", running, {})) < 2:
        assert time.monotonic() < deadline, "the running trigger never fired twice"
        time.sleep(0.05)
    assert admin.call("trigger.jobs", paused, {}) == []
    assert listed(server)[paused]["LAST RUN"] == "-"
    for trigger_id in (paused, running):
        ok(midclt(server, "trigger", "delete", str(trigger_id)))


def test_launch_wait_follows_the_job_and_the_table_shows_how_it_went(
    server: ServerProc, admin: Client
) -> None:
    gate = f"gate-{uuid.uuid4().hex[:8]}"
    tid = create(server, "@client", "test.progress", json.dumps([4, gate]), "--name", "counter")
    cmd = [sys.executable, "-m", "middlewared_client.midclt", "-u", server.ws_url]
    cmd += ["-U", "root", "-P", server.password, "trigger", "launch", "--wait", str(tid)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        job_id = int(proc.stdout.readline())
        job = admin.call("core.get_jobs", [["id", "=", job_id]], {"get": True})
        assert job["origin"] == f"trigger:{tid}"
        assert proc.poll() is None  # the job waits at its gate, and midclt with it
        admin.call("test.open_gate", gate)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.decode() == "4\n"
    frames = [f for f in err.decode().split("\r") if f.strip()]
    assert frames[-1].startswith("[" + "#" * 30 + "]") and "step 4 of 4" in frames[-1]

    record = settled(admin, tid)
    assert record["current_state"]["last_manual_job_id"] == job_id
    row = listed(server)[tid]
    assert (row["LAST RUN"], row["NEXT RUN"], row["STATE"]) == (
        f"done (job {job_id})",
        "-",
        "active",
    )
    jobs = ok(midclt(server, "trigger", "jobs", str(tid))).splitlines()
    assert jobs[0].split() == ["ID", "METHOD", "STATE", "PERCENT", "DESCRIPTION"]
    assert [line.split()[:3] for line in jobs[1:]] == [[str(job_id), "test.progress", "SUCCESS"]]

    # Without --wait: the job id at once; a second job, listed after the first.
    second = int(ok(midclt(server, "trigger", "launch", str(tid))))
    admin.call("test.open_gate", gate)
    assert admin.call("core.job_wait", second) == 4
    raw = json.loads(ok(midclt(server, "trigger", "jobs", "--json", str(tid))))
    assert [j["id"] for j in raw] == [second, job_id]  # newest first, as the server gives
    last = ok(midclt(server, "trigger", "jobs", "--limit", "1", str(tid))).splitlines()
    assert [line.split()[0] for line in last[1:]] == [str(second)]
    ok(midclt(server, "trigger", "delete", str(tid)))


def test_a_failed_launch_exits_1_and_the_table_says_errored(
    server: ServerProc, admin: Client
) -> None:
    tid = create(server, "@client", "test.fail", '["the disk is full"]')
    done = midclt(server, "trigger", "launch", "--wait", str(tid))
    assert done.returncode == 1
    job_id = int(done.stdout.splitlines()[0])
    assert done.stdout == f"{job_id}\n"
    assert "midclt: [E" in done.stderr and "the disk is full" in done.stderr
    settled(admin, tid)
    assert listed(server)[tid]["LAST RUN"] == f"errored (job {job_id})"
    shown = ok(midclt(server, "trigger", "get", str(tid)))
    assert re.search(r"^last error:\s+.*the disk is full$", shown, re.M), shown
    ok(midclt(server, "trigger", "delete", str(tid)))


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["@fortnightly", "test.progress", "[1]"], "type"),
        (["@cron", "0 3 32 * *", "test.progress", "[1]"], "day of month"),
        (["@cron", "0 3 * * * * *", "test.progress", "[1]"], "arguments"),
        (["@every", "0s", "test.progress", "[1]"], "more than zero"),
        (["@every", "1h", "test.progress", "[1]", "--tz", "Mars/Olympus"], "options.timezone"),
        (["@every", "1h", "test.progress", "[1]", "--debounce", "3m"], "debounce"),
        (["@client", "1h", "test.progress", "[1]"], "takes no arguments"),
        (["@event", "no.such_collection", "test.progress", "[1]"], "no.such_collection"),
        (["@every", "1h", "test.progress", '["many"]'], "params"),
        (["@every", "1h", "test.ping_no_such_method"], "method"),
        (["@every", "1h", "test.progress", "[1]", "--json", '{"colour": "red"}'], "colour"),
    ],
)
def test_bad_triggers_exit_1_with_the_servers_reason(
    server: ServerProc, admin: Client, argv: list[str], reason: str
) -> None:
    before = admin.call("trigger.query", [], {"count": True})
    done = midclt(server, "trigger", "create", *argv)
    assert done.returncode == 1, done.stdout
    assert done.stdout == ""
    assert re.match(r"midclt: \[E[A-Z]+\] ", done.stderr), done.stderr
    assert reason in done.stderr, done.stderr
    assert admin.call("trigger.query", [], {"count": True}) == before


def test_the_cron_reason_is_the_one_the_readme_quotes(server: ServerProc) -> None:
    done = midclt(server, "trigger", "create", "@cron", "0 3 32 * *", "test.progress", "[1]")
    assert done.returncode == 1
    line = "midclt: [EINVAL] arguments: cron field 3 (day of month) out of range: 32 (allowed 1-31)"
    assert done.stderr == line + "\n"
    assert f"`{line}`" in README.read_text()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["create", "@cron", "0", "3", "*", "*", "*", "test.progress"], "quote an ARG"),
        (["create", "@every", "1h", "test.progress", "[1,"], "PARAMS_JSON"),
        (["create", "@every", "1h", "test.progress", '{"a": 1}'], "not a JSON array"),
        (["create", "@every", "1h", "test.progress", "--missed", "sometimes"], "--missed"),
        (["create", "@every", "1h", "test.progress", "--json", "[1]"], "not a JSON object"),
        (["create", "@every"], "required"),
        (["list", "not json"], "not JSON"),
        (["launch", "three"], "not a number"),
        (["pause", "0"], "at least 1"),
        (["jobs"], "required"),
        (["frobnicate", "1"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2_before_connecting(argv: list[str], says: str) -> None:
    # No server: usage is checked before any connection is made.
    done = midclt(None, "trigger", *argv, url="ws://127.0.0.1:9/api/current")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "987654"],
        ["launch", "987654"],
        ["launch", "--wait", "987654"],
        ["pause", "987654"],
        ["resume", "987654"],
        ["delete", "987654"],
        ["jobs", "987654"],
    ],
)
def test_an_unknown_id_exits_1(server: ServerProc, argv: list[str]) -> None:
    done = midclt(server, "trigger", *argv)
    assert done.returncode == 1 and done.stdout == ""
    assert "[ENOENT] Trigger 987654 does not exist" in done.stderr


def test_limited_users_and_keys_get_the_servers_refusal(server: ServerProc, admin: Client) -> None:
    key = admin.call(
        "api_key.create", {"name": f"ping-{uuid.uuid4().hex[:6]}", "allowlist": ["core.ping"]}
    )
    for argv in (["list"], ["create", "@client", "test.progress", "[1]"]):
        done = midclt(server, "-K", key["key"], "trigger", *argv, login=False)
        assert done.returncode == 1 and done.stdout == ""
        assert "[EACCES]" in done.stderr and "trigger." in done.stderr, done.stderr

    roots = create(server, "@client", "test.progress", "[1]")
    user = f"tu{uuid.uuid4().hex[:6]}"
    admin.call(
        "user.create",
        {"username": user, "password": "pw-" + user, "allowlist": ["trigger.*", "test.progress"]},
    )
    login = ["-U", user, "-P", "pw-" + user]

    def as_user(*argv: str) -> subprocess.CompletedProcess[str]:
        return midclt(server, *login, "trigger", *argv, login=False)

    done = as_user("create", "@client", "test.fail", '["x"]')
    assert done.returncode == 1
    assert "[EINVAL]" in done.stderr and "method" in done.stderr and "test.fail" in done.stderr
    own = int(ok(as_user("create", "@client", "test.progress", "[1]")))
    assert set(table(ok(as_user("list")))) == {own}  # not root's
    for argv in (["get", str(roots)], ["launch", str(roots)], ["delete", str(roots)]):
        done = as_user(*argv)
        assert done.returncode == 1 and f"Trigger {roots} does not exist" in done.stderr
    job_id = int(ok(as_user("launch", str(own))))
    assert admin.call("core.job_wait", job_id) == 1
    for trigger_id in (own, roots):
        ok(midclt(server, "trigger", "delete", str(trigger_id)))


def _readme_block() -> str:
    """The ``midclt trigger`` example of the README (the sh block that follows its marker)."""
    text = README.read_text()
    marker = text.index("`midclt trigger`")
    return text[
        text.index("```sh\n", marker) + 6 : text.index("```", text.index("```sh\n", marker) + 6)
    ]


def test_the_readme_example_runs(make_server: Callable[..., ServerProc]) -> None:
    srv = make_server()
    block = _readme_block()
    assert "trigger create" in block and "trigger launch" in block and "trigger list" in block
    shell = f'midclt() {{ "{sys.executable}" -m middlewared_client.midclt -u "$URL" "$@"; }}\n'
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIDCLT_")}
    env.update({"URL": srv.ws_url, "PW": srv.password, "TZ": ZONE})
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", shell + block],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    shown = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    printed = done.stdout.splitlines()
    header = next(line for line in printed if line.startswith("ID "))
    assert header in shown  # the README's table has the header midclt prints
    start = printed.index(header) + 1
    end = next(i for i in range(start, len(printed)) if not printed[i][:1].isdigit())
    rows = table("\n".join(printed[start - 1 : end]))
    with Client(srv.ws_url, username="root", password=srv.password) as client:
        records = client.call("trigger.query")
    assert len(rows) == len(records) >= 2
    cron = next(r for r in records if r["type"] == "@cron")
    assert rows[cron["id"]]["NEXT RUN"] == local(cron["next_run"])
    assert (
        rows[cron["id"]]["LAST RUN"]
        == f"done (job {cron['current_state']['last_executed_job_id']})"
    )
