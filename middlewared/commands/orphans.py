"""After a crash of the server: the processes of the runs it left are found from the process
groups recorded in the store, and ended (SIGTERM, then SIGKILL after the grace).

A process is taken as one of ours when it is in the recorded group and either carries the
run's ``MIDDLEWARED_JOB_ID`` in its environment or the group's leader is still the very
process recorded (same pid, same start time, same boot), so a pid reused since is left
alone."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from middlewared.commands.process import boot_id, group_of, start_time

log = logging.getLogger(__name__)


def members(pgid: int, job_id: int, leader_start: int | None) -> list[int]:
    """The processes of group ``pgid`` that belong to the run of job ``job_id``."""
    leader_is_ours = leader_start is not None and start_time(pgid) == leader_start
    marker = f"MIDDLEWARED_JOB_ID={job_id}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid == os.getpid() or group_of(pid) != pgid:
            continue
        if leader_is_ours or marker in _environ(pid):
            found.append(pid)
    return found


def _environ(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return []


async def end_processes(pids: list[int], grace: float) -> int:
    """SIGTERM each, SIGKILL those still alive after ``grace``; how many there were."""
    fds: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fds[pid] = os.pidfd_open(pid)
    try:
        for fd in fds.values():
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGTERM)
        alive = await _wait_all(fds, grace)
        for fd in alive:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
    finally:
        for fd in fds.values():
            os.close(fd)
    return len(fds)


async def _wait_all(fds: Mapping[int, int], timeout: float) -> list[int]:
    """The pidfds whose process has not exited within ``timeout``."""
    loop = asyncio.get_running_loop()
    waits: dict[int, asyncio.Future[None]] = {}
    for fd in fds.values():
        fut: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, _settle, fut)
        waits[fd] = fut
    try:
        if waits:
            await asyncio.wait(waits.values(), timeout=timeout)
        return [fd for fd, fut in waits.items() if not fut.done()]
    finally:
        for fd in waits:
            loop.remove_reader(fd)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def end_orphans(runs: list[dict[str, Any]], grace: float) -> int:
    """End what the runs a crash interrupted left running; how many processes there were."""
    boot = boot_id()
    ended = 0
    for run in runs:
        pgid = run.get("pgid")
        if not pgid or run.get("boot_id") != boot:
            continue  # nothing was running, or the machine rebooted since
        pids = await asyncio.to_thread(members, int(pgid), int(run["job_id"]), run["pid_start"])
        if pids:
            count = await end_processes(pids, grace)
            log.warning(
                "command %s run %s (job %s): %d processes left by the last server ended",
                run["command"],
                run["counter"],
                run["job_id"],
                count,
            )
            ended += count
    return ended
