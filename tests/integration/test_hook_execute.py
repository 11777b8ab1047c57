"""One hook run as a real process: stdin fed whether or not the script reads it, output cut
to its tail, the timeout ending the whole process group, a script that cannot start."""

from __future__ import annotations

import asyncio
from pathlib import Path

from middlewared.hooks.execute import TAIL_BYTES, Limits, execute
from middlewared.hooks.record import Run
from tests.procstate import alive

ENV = {"PATH": "/usr/bin:/bin"}


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


async def test_stdin_args_cwd_and_the_output_tail(tmp_path: Path) -> None:
    script = write(
        tmp_path, "job.SUCCESS", 'echo "$# $1 $2 $(pwd)"; wc -c; head -c 5000 /dev/zero\n'
    )
    data = b"y" * 300_000  # far more than a pipe holds
    record = await execute(
        Run("job.SUCCESS", script, ("1", "two words"), data), tmp_path, ENV, Limits(10, 1)
    )
    assert record.exit_code == 0 and not record.timed_out and record.error is None
    assert record.output_bytes > 5000 and len(record.output_tail) == TAIL_BYTES
    full = f"2 1 two words {tmp_path}\n300000\n"
    assert record.output_bytes == len(full) + 5000


async def test_a_script_that_does_not_read_its_stdin(tmp_path: Path) -> None:
    script = write(tmp_path, "job.FAILED", "echo done; exit 4\n")
    record = await execute(
        Run("job.FAILED", script, (), b"z" * 1_000_000), tmp_path, ENV, Limits(10, 1)
    )
    assert record.exit_code == 4 and record.output_tail == "done\n"


async def test_the_timeout_ends_the_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = write(
        tmp_path, "launch", f"trap '' TERM; sleep 30 & echo $! > {pidfile}; echo up; wait\n"
    )
    record = await execute(Run("launch", script, ("1",)), tmp_path, ENV, Limits(0.3, 0.3))
    assert record.timed_out and record.exit_code == -9
    assert 0.6 <= record.duration < 5
    assert record.output_tail == "up\n"
    # SIGKILL is sent to the group; the kernel ends the child soon after, not at once.
    pid = int(pidfile.read_text())
    for _ in range(500):
        if not alive(pid):
            break
        await asyncio.sleep(0.01)
    assert not alive(pid)


async def test_a_script_in_a_missing_directory_reports_126(tmp_path: Path) -> None:
    script = write(tmp_path, "launch", "echo never\n")
    record = await execute(Run("launch", script, ()), tmp_path / "gone", ENV, Limits(5, 1))
    assert record.exit_code == 126 and "never" not in record.output_tail
