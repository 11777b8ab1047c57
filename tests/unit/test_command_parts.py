"""The parts of commands that need no process: output cut into stamped, masked lines;
progress lines; the slots; bounded job logs; env and its secrets; grants narrowing rights."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from middlewared.auth.credentials import CredentialKind, Credentials, Identity
from middlewared.auth.directory import Directory
from middlewared.commands.model import Command, parse_env, redact_env
from middlewared.commands.slots import Slots
from middlewared.commands.streams import MAX_LINE, Lines, Progress
from middlewared.errors import ValidationErrors
from middlewared.jobs.logs import EXCERPT_BYTES, JobLog
from middlewared.store.memory import MemoryStore

STAMPED = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+): (.*)$")


def collect(secrets: list[bytes] | None = None) -> tuple[Lines, list[bytes]]:
    out: list[bytes] = []
    return Lines("stdout", out.append, secrets or []), out


def lines_of(out: list[bytes]) -> list[tuple[str, str]]:
    found = []
    for line in b"".join(out).splitlines():
        m = STAMPED.match(line)
        assert m, line
        found.append((m.group(1).decode(), m.group(2).decode()))
    return found


def test_lines_are_stamped_and_only_complete_ones_go_out() -> None:
    lines, out = collect()
    lines.feed(b"one\ntw")
    assert lines_of(out) == [("stdout", "one")]
    lines.feed(b"o\nthree\n")
    lines.feed(b"unfinished")
    assert lines_of(out) == [("stdout", "one"), ("stdout", "two"), ("stdout", "three")]
    lines.close()
    assert lines_of(out)[-1] == ("stdout", "unfinished")


def test_secrets_are_masked_within_a_line_split_across_reads() -> None:
    lines, out = collect([b"hunter22"])
    lines.feed(b"pass=hun")
    lines.feed(b"ter22 ok\n")
    assert lines_of(out) == [("stdout", "pass=******** ok")]


def test_a_line_without_end_is_written_in_pieces() -> None:
    lines, out = collect()
    for _ in range(3):
        lines.feed(b"x" * (MAX_LINE // 2 + 1))
    pieces = lines_of(out)
    assert len(pieces) == 1 and len(pieces[0][1]) > MAX_LINE
    lines.close()
    assert sum(len(p) for _, p in lines_of(out)) == 3 * (MAX_LINE // 2 + 1)


def test_stderr_keeps_its_last_lines() -> None:
    err = Lines("stderr", lambda b: None).keep_tail()
    err.feed(b"".join(b"line %d\n" % i for i in range(30)))
    assert err.tail_text().splitlines() == [f"line {i}" for i in range(20, 30)]


def test_progress_lines_report_and_bad_ones_are_named() -> None:
    reported: list[dict[str, Any]] = []
    bad: list[str] = []
    progress = Progress(reported.append, bad.append)
    progress.feed(b'{"percent": 40, "description": "half"}\n{"perc')
    progress.feed(b'ent": 50}\nnot json\n[1]\n{"percent": "x"}\n{"other": 1}\n{"percent": 60}')
    progress.close()
    assert reported == [{"percent": 40, "description": "half"}, {"percent": 50}, {"percent": 60}]
    assert [b.split(":")[0] for b in bad] == [
        "not JSON",
        "not a JSON object",
        "percent is not a number",
        "unknown keys ['other']",
    ]


async def test_slots_bound_all_runs_and_each_command() -> None:
    slots = Slots(max_running=2)
    await slots.acquire("a", 1)
    waiting = asyncio.create_task(slots.acquire("a", 1))
    await slots.acquire("b", 5)
    await asyncio.sleep(0)
    assert not waiting.done()
    third = asyncio.create_task(slots.acquire("c", 5))
    slots.release("b")  # room overall, but "a" is at its own limit
    await asyncio.sleep(0)
    assert third.done() and not waiting.done()
    slots.release("a")
    slots.release("c")
    await asyncio.wait_for(waiting, 1)
    assert slots.running == 1 and slots.running_of("a") == 1


def test_a_job_log_is_cut_at_its_bound_and_says_so(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "1.log", max_bytes=100)
    log.write("a" * 60)
    assert log.live_excerpt() == "a" * 60 + "\n"
    log.write_bytes(b"b" * 60)
    log.write_bytes(b"c" * 1000)
    assert log.cut and log.dropped == 21 + 1000
    excerpt = log.close()
    text = (tmp_path / "1.log").read_text()
    assert text.startswith("a" * 60 + "\n" + "b" * 39 + "\n[log cut at 100 bytes")
    assert text.endswith("[1021 more bytes were not kept]\n")
    assert excerpt == text


def test_the_live_excerpt_is_the_tail(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "2.log")
    for i in range(2000):
        log.write(f"line {i}")
    excerpt = log.live_excerpt()
    assert excerpt is not None and len(excerpt) == EXCERPT_BYTES
    assert excerpt.endswith("line 1999\n")


def test_env_names_values_and_secrets() -> None:
    env = parse_env({"A": "1", "B": {"value": "s3cret", "secret": True}}, "env")
    command = Command.create({"name": "c", "commands": ["true"], "env": env_raw(env)}, 1)
    assert command.record()["env"] == {"A": "1", "B": {"value": "********", "secret": True}}
    assert command.secrets == ["s3cret"]
    kept = command.with_changes({"env": {"B": {"value": "********", "secret": True}}})
    assert kept.secrets == ["s3cret"]
    for raw, field in (
        ({"1A": "x"}, "env.1A"),
        ({"MIDDLEWARED_TOKEN": "x"}, "env.MIDDLEWARED_TOKEN"),
        ({"A": "a\0b"}, "env.A"),
    ):
        with pytest.raises(ValidationErrors) as e:
            parse_env(raw, "env")
        assert e.value.errors[0][0] == field
    with pytest.raises(ValidationErrors):
        command.with_changes({"name": "renamed"})
    assert redact_env({"A": "1", "B": {"value": "x", "secret": True}}) == {
        "A": "1",
        "B": {"value": "********", "secret": True},
    }


def env_raw(env: dict[str, Any]) -> dict[str, Any]:
    return {k: {"value": v.value, "secret": v.secret} for k, v in env.items()}


def test_a_scope_narrows_even_an_admin() -> None:
    creds = Credentials("root", True, CredentialKind.TOKEN, ("*",), scope=("core.ping",))
    assert creds.allows("core.ping") and not creds.allows("user.query")
    assert not creds.full_admin and creds.restricted_key
    assert Credentials("root", True, CredentialKind.TOKEN, scope=("*",)).full_admin


async def test_an_identity_on_a_grant_resolves_only_while_it_is_open() -> None:
    store = MemoryStore()
    await store.open()
    directory = Directory(store)
    user = await directory.create_user({"username": "alice", "allowlist": ["a.*", "b.*"]})
    grant = directory.grants.open(("b.*", "c.*"))
    identity = Identity(CredentialKind.TOKEN, user.id, grant=grant)
    creds = directory.resolve(identity)
    assert creds is not None and creds.scope == ("b.*", "c.*")
    assert creds.allows("b.x") and not creds.allows("a.x") and not creds.allows("c.x")
    directory.grants.close(grant)
    assert directory.resolve(identity) is None


def test_output_past_a_cut_log_is_counted_not_stamped(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "job.log", max_bytes=100)
    lines = Lines("stdout", log.write_bytes, [], log.drop_if_full)
    lines.feed(b"a" * 60 + b"\n")
    assert not log.cut
    lines.feed(b"b" * 60 + b"\n")  # crosses the bound: the log is cut here
    assert log.cut
    dropped = log.dropped
    lines.feed(b"c" * 1000 + b"\npartial")  # counted as it came, never cut into lines
    assert log.dropped == dropped + 1008
    lines.close()  # the partial line past the cut is not written either
    log.close()
    text = (tmp_path / "job.log").read_text()
    assert "ccc" not in text and "partial" not in text
    assert f"[{dropped + 1008} more bytes were not kept]" in text


def test_stderr_keeps_its_tail_past_a_cut_log(tmp_path: Path) -> None:
    log = JobLog(tmp_path / "job.log", max_bytes=10)
    err = Lines("stderr", log.write_bytes, [], log.drop_if_full).keep_tail()
    err.feed(b"x" * 50 + b"\n")
    err.feed(b"the reason it failed\n")
    assert log.cut and "the reason it failed" in err.tail_text()
