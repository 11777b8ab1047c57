"""What every load shares: the spec's common fields and CPU accounting of a window."""

from __future__ import annotations

import time
from typing import Any

from bench.procstat import cpu_seconds
from bench.stats import latency_ms

Auth = dict[str, str]


def ws_url(spec: dict[str, Any]) -> str:
    base: str = spec["url"]
    path: str = spec.get("ws_path", "/api/current")
    return "ws" + base.removeprefix("http") + path


def auth(spec: dict[str, Any]) -> Auth | None:
    value: Auth | None = spec.get("auth")
    return value


class CpuWindow:
    """CPU seconds the server (and this load process) spent between start() and stop()."""

    def __init__(self, server_pid: int | None) -> None:
        self.pid = server_pid
        self.server = 0.0
        self.client = 0.0
        self.wall = 0.0
        self._marks = (0.0, 0.0, 0.0)

    def start(self) -> None:
        server = cpu_seconds(self.pid) if self.pid else 0.0
        self._marks = (server, time.process_time(), time.perf_counter())

    def elapsed(self) -> float:
        """Wall seconds since start()."""
        return time.perf_counter() - self._marks[2]

    def stop(self) -> None:
        server, client, wall = self._marks
        self.server = (cpu_seconds(self.pid) if self.pid else 0.0) - server
        self.client = time.process_time() - client
        self.wall = time.perf_counter() - wall

    def per(self, count: int) -> dict[str, float]:
        """Server and client CPU µs per operation, and how busy each was (0..1 of a core)."""
        n = max(1, count)
        return {
            "server_us_per_op": self.server / n * 1e6,
            "client_us_per_op": self.client / n * 1e6,
            "server_busy": self.server / self.wall if self.wall else 0.0,
            "client_busy": self.client / self.wall if self.wall else 0.0,
        }


def level_metrics(lat: list[float], cpu: CpuWindow) -> dict[str, float]:
    """Jobs completed in a closed-loop window: their rate, latency and the CPU per job."""
    return {
        "jobs": len(lat),
        "jobs_per_s": len(lat) / cpu.wall if cpu.wall else 0.0,
        **latency_ms(lat),
        **cpu.per(len(lat)),
    }
