"""One hook run as a process: the script in a process group of its own, in the trigger
directory, with a minimal environment, its stdin fed from memory and the last bytes of its
output kept. Past the timeout the group gets SIGTERM, then SIGKILL after the grace; the
script's leftovers in its group go the same way once it exits. Always reaped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from middlewared.commands.process import Child
from middlewared.commands.streams import Pipes
from middlewared.hooks.record import Run, RunRecord

SHELL = "/bin/sh"
# ``sh -c TRAMPOLINE hook DIR SCRIPT ARGS...``: posix_spawn cannot change the directory.
TRAMPOLINE = 'cd -- "$1" || exit 126; shift; exec "$@"'
# Output kept for the log and ``hook.runs``: its last bytes.
TAIL_BYTES = 4096
# Once the group has ended, how long its output may stay open (held by a process that left
# the group) before it is no longer read.
DRAIN_SECONDS = 1.0


@dataclass(frozen=True)
class Limits:
    timeout: float
    grace: float


class Tail:
    """The last ``size`` bytes of a stream, and how many came in all."""

    def __init__(self, size: int = TAIL_BYTES) -> None:
        self.size = size
        self.total = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        self._buf += data
        if len(self._buf) > 2 * self.size:
            del self._buf[: -self.size]

    def text(self) -> str:
        return bytes(self._buf[-self.size :]).decode("utf-8", "replace")


class _Stdin(asyncio.Protocol):
    """Feeds a run's stdin; a script that does not read it is not waited for."""

    def connection_lost(self, exc: Exception | None) -> None:
        return None


async def execute(
    run: Run,
    cwd: Path,
    env: Mapping[str, str],
    limits: Limits,
    clock: Callable[[], float] = time.time,
) -> RunRecord:
    """Run ``run`` to its end (or its timeout). Cancelled (shutdown): the group is ended
    and reaped before the cancellation goes on."""
    started = clock()
    t0 = time.monotonic()
    tail = Tail()
    argv = [SHELL, "-c", TRAMPOLINE, "hook", str(cwd), str(run.script), *run.args]
    theirs: list[int] = []
    ours: list[int] = []
    try:
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        ours.append(out_r)
        theirs.append(out_w)
        fds = {1: out_w, 2: out_w}
        if run.stdin is not None:
            in_r, in_w = os.pipe2(os.O_CLOEXEC)
            ours.append(in_w)
            theirs.append(in_r)
            fds[0] = in_r
        child = Child.spawn(argv, env, fds)
    except OSError as e:
        for fd in ours:
            os.close(fd)
        return _record(run, started, t0, None, tail, error=f"cannot start: {e.strerror or e}")
    finally:
        for fd in theirs:
            os.close(fd)
    stdin: asyncio.WriteTransport | None = None
    pipes = Pipes()
    try:
        # Each is closed by what takes it, even when that fails.
        await pipes.add(ours.pop(0), tail.feed, lambda: None)
        if run.stdin is not None:
            stdin = await _feed(ours.pop(0), run.stdin)
        timed_out = not await _wait(child, limits.timeout)
        if timed_out:
            await _end_group(child, limits.grace)
    except BaseException:
        for fd in ours:
            os.close(fd)
        await asyncio.shield(_finish(child, pipes, 0.0, stdin))
        raise
    code = await asyncio.shield(_finish(child, pipes, limits.grace, stdin))
    return _record(run, started, t0, code, tail, timed_out=timed_out)


async def _feed(fd: int, data: bytes) -> asyncio.WriteTransport:
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.connect_write_pipe(_Stdin, os.fdopen(fd, "wb", buffering=0))
    except BaseException:
        os.close(fd)
        raise
    transport.write(data)
    transport.close()  # once written
    return transport


async def _wait(child: Child, timeout: float) -> bool:
    """Whether the script exited within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            await child.wait_exited()
    except TimeoutError:
        return False
    return True


async def _end_group(child: Child, grace: float) -> None:
    child.signal_group(signal.SIGTERM)
    if not await _wait(child, grace):
        child.signal_group(signal.SIGKILL)
        await child.wait_exited()


async def _finish(
    child: Child, pipes: Pipes, grace: float, stdin: asyncio.WriteTransport | None
) -> int:
    """The script exited (or is to be ended now, ``grace`` 0): what it left in its group
    gets SIGTERM, SIGKILL past the grace; then it is reaped."""
    if not child.exited:
        child.signal_group(signal.SIGKILL)
        await child.wait_exited()
    child.signal_group(signal.SIGTERM)
    if not await pipes.ended(grace):
        child.signal_group(signal.SIGKILL)
    code = child.reap()
    await pipes.ended(DRAIN_SECONDS)
    pipes.close()
    if stdin is not None:
        with contextlib.suppress(Exception):
            stdin.abort()
    return code


def _record(
    run: Run,
    started: float,
    t0: float,
    code: int | None,
    tail: Tail,
    timed_out: bool = False,
    error: str | None = None,
) -> RunRecord:
    return RunRecord(
        event=run.event,
        script=str(run.script),
        args=run.args,
        started=started,
        duration=time.monotonic() - t0,
        exit_code=code,
        timed_out=timed_out,
        output_tail=tail.text(),
        output_bytes=tail.total,
        error=error,
    )
