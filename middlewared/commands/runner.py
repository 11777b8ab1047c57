"""Run a command's lines one after another, each as ``/bin/sh -c`` in the command's working
directory and in a process group of its own, stopping at the first that fails. Output and
progress go to the caller as they come; abort, timeout and shutdown end the whole group
(SIGTERM, then SIGKILL after the grace). Every child is reaped, whatever happens."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shlex
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from middlewared.commands.process import Child, start_time
from middlewared.commands.streams import Lines, Pipes, Progress, stamp
from middlewared.errors import CallError

log = logging.getLogger(__name__)

SHELL = "/bin/sh"
PROGRESS_FD = 3
# Once a line's group has ended, how long its pipes may stay open (held by a process that
# left the group, a daemon): then they are closed and the log says so.
DRAIN_SECONDS = 1.0


@dataclass(frozen=True)
class RunSpec:
    """What to run and how."""

    name: str
    lines: Sequence[str]
    cwd: Path
    env: Mapping[str, str]
    timeout: float | None
    grace: float
    # Values masked in the output (secret env values, the run's token).
    secrets: Sequence[str] = ()


@dataclass
class RunHooks:
    """What the runner tells its caller: output (stamped lines), progress, and each line's
    process group as it starts and ends (so a crash leaves a record of it)."""

    output: Callable[[bytes], None]
    progress: Callable[[dict[str, Any]], None]
    # Whether output of that many bytes would be dropped unkept (then it is counted).
    output_full: Callable[[int], bool] | None = None
    spawned: Callable[[int, int | None], None] = field(default=lambda pgid, start: None)
    reaped: Callable[[int], None] = field(default=lambda pgid: None)


class LineFailed(CallError):
    """A line exited non-zero (or was killed by a signal)."""


def note(hooks: RunHooks, text: str) -> None:
    """A line of the runner's own in the log."""
    hooks.output(stamp("run") + text.encode("utf-8", "replace") + b"\n")


async def run(spec: RunSpec, hooks: RunHooks) -> None:
    """Run every line; raises LineFailed at the first failing one, CallError (ETIMEDOUT)
    past the timeout, CancelledError when cancelled (the group ended first)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(spec.timeout):
            for number, line in enumerate(spec.lines, 1):
                note(hooks, f"$ {line}")
                code, tail = await run_line(spec, line, hooks)
                if code != 0:
                    raise _failed(spec, number, code, tail, hooks)
    except TimeoutError:
        took = time.monotonic() - started
        note(hooks, f"timed out after {took:.1f} s: process group ended")
        raise CallError(
            f"Command {spec.name} timed out after {spec.timeout} seconds", errno.ETIMEDOUT
        ) from None
    except asyncio.CancelledError:
        note(hooks, "aborted: process group ended")
        raise


def _failed(spec: RunSpec, number: int, code: int, tail: str, hooks: RunHooks) -> LineFailed:
    how = f"was killed by {_signame(-code)}" if code < 0 else f"exited with code {code}"
    note(hooks, f"line {number} {how}")
    reason = f"Command {spec.name}: line {number} {how}"
    if tail:
        reason += f"; its last lines of stderr:\n{tail}"
    return LineFailed(reason, errno.EFAULT, [["exit_code", code], ["line", number]])


def _signame(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


async def run_line(spec: RunSpec, line: str, hooks: RunHooks) -> tuple[int, str]:
    """One line: its exit code (minus the signal that killed it) and its last lines of
    stderr."""
    secrets = [s.encode() for s in spec.secrets if len(s) >= 6]
    out = Lines("stdout", hooks.output, secrets, hooks.output_full)
    err = Lines("stderr", hooks.output, secrets).keep_tail()
    progress = Progress(hooks.progress, lambda why: note(hooks, f"progress ignored: {why}"))
    pipes = Pipes()
    ours: list[int] = []
    theirs: list[int] = []
    try:
        for _ in range(3):
            r, w = os.pipe2(os.O_CLOEXEC)
            ours.append(r)
            theirs.append(w)
        script = f"cd -- {shlex.quote(str(spec.cwd))} || exit 126\n{line}"
        child = Child.spawn(
            [SHELL, "-c", script],
            spec.env,
            {1: theirs[0], 2: theirs[1], PROGRESS_FD: theirs[2]},
        )
    finally:
        for fd in theirs:
            os.close(fd)
    hooks.spawned(child.pgid, start_time(child.pid))
    try:
        for fd, lines in ((ours[0], out), (ours[1], err)):
            await pipes.add(fd, lines.feed, lines.close)
        await pipes.add(ours[2], progress.feed, progress.close)
        ours.clear()
        await child.wait_exited()
    except BaseException:
        for fd in ours:
            os.close(fd)
        await asyncio.shield(_stop(child, pipes, spec.grace, hooks))
        raise
    code = await asyncio.shield(_finish(child, pipes, spec.grace, hooks))
    return code, err.tail_text()


async def _finish(child: Child, pipes: Pipes, grace: float, hooks: RunHooks) -> int:
    """The leader exited: what it left in its group goes too (SIGTERM, SIGKILL past the
    grace), then it is reaped."""
    child.signal_group(signal.SIGTERM)
    if not await pipes.ended(grace):
        child.signal_group(signal.SIGKILL)
    return await _reap(child, pipes, hooks)


async def _stop(child: Child, pipes: Pipes, grace: float, hooks: RunHooks) -> None:
    """Abort, timeout, shutdown: SIGTERM to the group, SIGKILL past the grace, reaped."""
    child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    try:
        await asyncio.wait_for(child.wait_exited(), grace)
    except TimeoutError:
        pass
    if not child.exited or not await pipes.ended(max(0.0, deadline - time.monotonic())):
        child.signal_group(signal.SIGKILL)
        await child.wait_exited()
    await _reap(child, pipes, hooks)


async def _reap(child: Child, pipes: Pipes, hooks: RunHooks) -> int:
    code = child.reap()
    hooks.reaped(child.pgid)
    if not await pipes.ended(DRAIN_SECONDS):
        note(
            hooks,
            "output still open after the process group ended (a process left it): no longer read",
        )
    pipes.close()
    return code
