"""The parts of hook scripts that need no process: the pool (order per script, the bound on
runs at once, a hung script holding one slot, waiting runs bounded), what on.<method>
scripts are shown of a call, the directory lookup, the output tail, the run log."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from middlewared.hooks.execute import Tail
from middlewared.hooks.pool import HookPool
from middlewared.hooks.record import Run, RunLog, RunRecord
from middlewared.hooks.redact import shown_params, shown_result
from middlewared.hooks.scripts import ScriptDir, valid_event
from middlewared.registry import Param


class FakeRuns:
    """An executor whose runs end when the test says so."""

    def __init__(self) -> None:
        self.started: list[tuple[str, tuple[str, ...]]] = []
        self.gates: dict[tuple[str, ...], asyncio.Event] = {}
        self.running = 0
        self.most = 0
        self.done: list[RunRecord] = []
        self.drops: list[tuple[str, str, int]] = []

    async def execute(self, run: Run) -> RunRecord:
        self.started.append((run.event, run.args))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.gates.setdefault(run.args, asyncio.Event()).wait()
        finally:
            self.running -= 1
        return RunRecord(run.event, str(run.script), run.args, 0.0, 0.0, 0)

    def release(self, *args: str) -> None:
        self.gates.setdefault(args, asyncio.Event()).set()

    def pool(self, concurrency: int, **bounds: int) -> HookPool:
        return HookPool(
            self.execute,
            self.done.append,
            lambda run, why, n: self.drops.append((run.event, why, n)),
            concurrency,
            **bounds,
        )


def run(event: str, *args: str, stdin: bytes | None = None) -> Run:
    return Run(event, Path("/hooks") / event, args, stdin)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_script_runs_in_order_and_scripts_share_the_bound() -> None:
    fake = FakeRuns()
    pool = fake.pool(2)
    for i in range(3):
        assert pool.submit(run("a", f"a{i}"))
    pool.submit(run("b", "b0"))
    pool.submit(run("c", "c0"))
    await settle()
    assert fake.started == [("a", ("a0",)), ("b", ("b0",))]
    fake.release("a0")
    await settle()
    # a's next run waits its turn behind c, which was ready before it.
    assert fake.started[2:] == [("c", ("c0",))]
    for name in ("b0", "c0", "a1", "a2"):
        fake.release(name)
        await settle()
    await pool.drain()
    assert [a for e, a in fake.started if e == "a"] == [("a0",), ("a1",), ("a2",)]
    assert fake.most == 2
    assert len(fake.done) == 5 and pool.counters.finished == 5


async def test_a_hung_script_holds_one_slot_only() -> None:
    fake = FakeRuns()
    pool = fake.pool(2)
    pool.submit(run("hung", "h0"))
    pool.submit(run("hung", "h1"))
    for i in range(20):
        pool.submit(run("quick", f"q{i}"))
        fake.release(f"q{i}")
    for _ in range(100):
        await settle()
        if len([d for d in fake.done if d.event == "quick"]) == 20:
            break
    assert len([d for d in fake.done if d.event == "quick"]) == 20
    assert [a for e, a in fake.started if e == "hung"] == [("h0",)]
    assert pool.running == 1 and pool.waiting == 1
    fake.release("h0")
    fake.release("h1")
    await pool.drain()
    assert [a for e, a in fake.started if e == "hung"] == [("h0",), ("h1",)]


async def test_waiting_runs_are_bounded_per_script_and_in_bytes() -> None:
    fake = FakeRuns()
    pool = fake.pool(1, max_waiting_per_script=2, max_waiting_bytes=10_000)
    assert pool.submit(run("a", "0"))
    await settle()  # a0 runs: two more may wait
    assert pool.submit(run("a", "1")) and pool.submit(run("a", "2"))
    assert not pool.submit(run("a", "3"))
    assert not pool.submit(run("a", "4"))
    assert fake.drops == [("a", "2 runs of it already wait", 1)]
    assert not pool.submit(run("b", "big", stdin=b"x" * 10_000))
    assert fake.drops[1][0] == "b" and "bytes" in fake.drops[1][1]
    assert pool.counters.dropped == 3
    for name in "012":
        fake.release(name)
    await pool.drain()
    assert [a for _, a in fake.started] == [("0",), ("1",), ("2",)]


async def test_close_ends_running_runs_and_drops_waiting_ones() -> None:
    fake = FakeRuns()
    pool = fake.pool(1)
    pool.submit(run("a", "0"))
    pool.submit(run("a", "1"))
    pool.submit(run("b", "0"))
    await settle()
    assert await pool.close() == 2
    assert fake.running == 0 and fake.done == []
    assert not pool.submit(run("a", "2"))


def test_a_pool_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FakeRuns().pool(0)


SECRET_PARAMS = (
    Param("username", {"type": "string"}),
    Param("password", {"type": "string"}, secret=True),
    Param("env", {"type": "object"}, required=False, redact=lambda v: {k: "*" for k in v}),
)


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        (["root", "pw"], ["root", "********"]),
        (["root", "pw", {"A": "1"}], ["root", "********", {"A": "*"}]),
        # More than declared: the extra may be a misplaced secret.
        (["root", "pw", {}, "extra"], ["root", "********", {}, "********"]),
        # A value its redaction cannot take (it did not bind): hidden whole.
        (["root", "pw", 5], ["root", "********", "********"]),
        (
            {"username": "u", "password": "pw", "pasword": "x"},
            {
                "username": "u",
                "password": "********",
                "pasword": "********",
            },
        ),
        ("pw", "********"),
        (None, None),
    ],
)
def test_params_shown_to_scripts_hide_secrets(given: Any, shown: Any) -> None:
    assert shown_params(given, SECRET_PARAMS) == shown


def test_params_of_a_method_without_secrets_are_shown_as_given() -> None:
    given = ["a", {"b": 1}, "extra"]
    assert shown_params(given, (Param("x"),)) is given


def test_results_hide_what_their_schema_marks_write_only() -> None:
    assert shown_result("tok", {"type": "string", "writeOnly": True}) == "********"
    key = {"type": "object", "properties": {"key": {"type": "string", "writeOnly": True}}}
    assert shown_result({"id": 1, "key": "1-abc"}, key) == {"id": 1, "key": "********"}
    pair = {"prefixItems": [{"type": "integer"}, {"writeOnly": True}], "items": {}}
    assert shown_result([7, "/_download/7?auth_token=x"], pair) == [7, "********"]
    nested = {"items": {"additionalProperties": {"writeOnly": True}}}
    assert shown_result([{"a": 1}], nested) == [{"a": "********"}]
    assert shown_result({"a": 1}, {}) == {"a": 1}


def test_the_directory_lookup_and_reports_once_per_version(tmp_path: Path) -> None:
    reports: list[tuple[str, str]] = []
    scripts = ScriptDir(tmp_path, lambda event, path, why: reports.append((event, why)))
    scripts.check()
    assert scripts.find("launch") is None and reports == []
    path = tmp_path / "launch"
    path.write_text("#!/bin/sh\n")
    path.chmod(0o644)
    assert scripts.find("launch") is None
    assert scripts.find("launch") is None
    assert reports == [("launch", "not executable")]
    os.utime(path, ns=(0, 1_000_000_000))  # another version of it: reported again
    assert scripts.find("launch") is None
    assert len(reports) == 2
    path.chmod(0o755)
    assert scripts.find("launch") == path
    (tmp_path / "job.SUCCESS").mkdir()
    assert scripts.find("job.SUCCESS") is None
    assert reports[-1] == ("job.SUCCESS", "not a regular file")
    for bad in ("", "../launch", ".launch", "a/b", "a\0b"):
        assert not valid_event(bad)
        assert scripts.find(bad) is None


def test_the_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ScriptDir(tmp_path / "absent", lambda *a: None).check()
    (tmp_path / "file").write_text("")
    with pytest.raises(NotADirectoryError):
        ScriptDir(tmp_path / "file", lambda *a: None).check()


def test_the_tail_keeps_the_last_bytes_in_bounded_memory() -> None:
    tail = Tail(10)
    for i in range(1000):
        tail.feed(f"{i:04d}".encode())
        assert len(tail._buf) <= 20
    assert tail.text() == "9709980999"
    assert tail.total == 4000


def test_the_log_lists_newest_first_and_writes_json_lines(tmp_path: Path) -> None:
    log = RunLog(tmp_path / "hooks.jsonl")
    log.open()
    for i in range(5):
        log.add(RunRecord("launch", "/h/launch", (str(i),), 1000.0 + i, 0.5, i % 2))
    log.note("on.x", Path("/h/on.x"), "not executable: not run (reported once)")
    log.close()
    assert [r["args"] for r in log.last(3)] == [["4"], ["3"], ["2"]]
    first = log.last(5)[-1]
    assert first["started"] == {"$date": 1_000_000} and first["exit_code"] == 0
    lines = [json.loads(line) for line in (tmp_path / "hooks.jsonl").read_text().splitlines()]
    assert [line.get("args") for line in lines[:5]] == [[str(i)] for i in range(5)]
    assert lines[5] == {
        "event": "on.x",
        "script": "/h/on.x",
        "message": "not executable: not run (reported once)",
    }
