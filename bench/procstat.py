"""A process's CPU time and memory, read from /proc (Linux), and its open-file limit."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far (clock-tick resolution)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # Fields after the command name, which may hold spaces: utime and stime are 14th, 15th.
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def cpu_seconds_fine(pid: int) -> float:
    """User + system CPU of the live threads of ``pid`` in nanoseconds' resolution (the
    scheduler's ``/proc/PID/task/TID/schedstat``): for near-idle windows, where ``stat``'s
    clock ticks (10 ms) are too coarse. A thread that exits meanwhile takes its time along."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (steal included)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def own_seconds() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """CPU the rest of the machine used meanwhile: the bench's numbers are noisy when
    another workload shares the cores. Measure between points where every child the bench
    started has exited."""

    def __init__(self) -> None:
        self._start = (machine_busy_seconds(), own_seconds(), time.monotonic())

    def cores(self) -> float:
        busy, own, t0 = self._start
        other = (machine_busy_seconds() - busy) - (own_seconds() - own)
        return max(0.0, other / max(1e-9, time.monotonic() - t0))


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int) -> int:
    """The resident high-water mark since start or since ``reset_peak``."""
    return _status_kib(pid, "VmHWM") * 1024


def reset_peak(pid: int) -> bool:
    """Restart the high-water mark at the current RSS (False where the kernel refuses)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard maximum; returns the new limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
