"""One child process in a process group of its own: spawned with ``posix_spawn`` (its fds
placed, its signals reset), waited through a pidfd without being reaped, its group
signalled, and always reaped.

The leader stays a zombie until ``reap``: while it is one, its pid cannot be reused, so
signalling its group can only reach what it left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

# Signals a child starts with at their default action: Python ignores SIGPIPE and SIGXFSZ
# (an ignored signal stays ignored across exec), and the server handles the others.
DEFAULT_SIGNALS = frozenset(
    {
        signal.SIGPIPE,
        signal.SIGXFSZ,
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGHUP,
        signal.SIGQUIT,
        signal.SIGCHLD,
    }
)


def _above(fd: int, lowest: int) -> int:
    """``fd``, moved to a number of at least ``lowest`` (dup2 onto itself would keep its
    close-on-exec flag)."""
    if fd >= lowest:
        return fd
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return moved


class Child:
    """A spawned process, leader of its own process group (its pgid is its pid)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watch()

    @classmethod
    def spawn(cls, argv: Sequence[str], env: Mapping[str, str], fds: Mapping[int, int]) -> Child:
        """Start ``argv`` with ``fds`` (child fd -> our fd; one fd may serve several) in
        place of 0, 1, 2, 3...; stdin is /dev/null unless ``fds`` gives fd 0. Every other fd
        of ours is close-on-exec."""
        _no_inherit()
        lowest = max(fds, default=0) + 1
        moved: dict[int, int] = {}
        for fd in fds.values():
            if fd not in moved:
                moved[fd] = _above(fd, lowest)
        placed = {target: moved[fd] for target, fd in fds.items()}
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = []
        if 0 not in placed:
            actions.append((os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0))
        actions += [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in sorted(placed.items())]
        try:
            pid = os.posix_spawn(
                argv[0],
                list(argv),
                dict(env),
                file_actions=actions,
                setpgroup=0,
                setsigmask=(),
                setsigdef=DEFAULT_SIGNALS,
            )
        finally:
            for fd, at in moved.items():
                if at != fd:
                    os.close(at)
        return cls(pid)

    @property
    def pgid(self) -> int:
        return self.pid

    @property
    def exited(self) -> bool:
        return self._exited.done()

    async def wait_exited(self) -> None:
        """Until the leader has exited (it is not reaped: see ``reap``)."""
        await asyncio.shield(self._exited)

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            # No pidfd (old kernel): a thread waits without reaping.
            waiting = loop.run_in_executor(None, _wait_no_reap, self.pid)
            waiting.add_done_callback(lambda _: self._set_exited())
            return

        def readable() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            self._set_exited()

        loop.add_reader(pidfd, readable)

    def _set_exited(self) -> None:
        if not self._exited.done():
            self._exited.set_result(None)

    def signal_group(self, sig: int) -> None:
        """Signal every process of the group (nothing once the leader is reaped)."""
        if self.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def reap(self) -> int:
        """Collect the exited leader: its exit code, or minus the signal that ended it."""
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def _no_inherit() -> None:
    """Make every fd of ours close-on-exec: one the server inherited (or a library opened
    without the flag) must not reach the user's programs."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                if os.get_inheritable(fd):
                    os.set_inheritable(fd, False)


def _wait_no_reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


# -- reading /proc: the start time that tells a process from a later one with its pid -------
def start_time(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat`` field 22)."""
    stat = _stat(pid)
    return None if stat is None else int(stat[19])


def group_of(pid: int) -> int | None:
    stat = _stat(pid)
    return None if stat is None else int(stat[2])


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Fields after the command name, which is in parentheses and may hold anything.
    return text[text.rfind(")") + 2 :].split()


def boot_id() -> str:
    """This boot of the machine: pids and start times mean nothing across boots."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"
