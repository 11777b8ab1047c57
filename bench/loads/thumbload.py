"""``core.ping`` latency while thumbnails are made: pings sent at a steady pace (one every
``interval`` seconds, each awaited) on their own connection, first with the server idle,
then while ``jobs`` connections each keep one ``image.thumbnail`` of a 12-megapixel JPEG in
flight (a new one sent as each finishes), so that many are always submitted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.loads.common import CpuWindow, auth, ws_url
from bench.loads.fastws import Conn, close_all, open_many
from bench.stats import latency_ms

IDLE = "core.ping, idle"
LOADED = "core.ping, 10 thumbnail jobs in flight"


async def pings(conn: Conn, seconds: float, interval: float) -> list[float]:
    lat: list[float] = []
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds
    due = start
    while (t0 := clock()) < deadline:
        await conn.call("core.ping")
        lat.append(clock() - t0)
        due += interval
        wait = due - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            due = clock()
    return lat


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth, server_pid, images (one path per job connection), interval (s between
    pings), warmup and seconds, concurrency (image.thumbnail's, set by worker.update; none:
    the default)."""
    images: list[str] = spec["images"]
    interval: float = spec["interval"]
    conns = await open_many(ws_url(spec), 1 + len(images), auth(spec))
    ping, workers = conns[0], conns[1:]
    try:
        if spec.get("concurrency"):
            limits = {"concurrency": spec["concurrency"]}
            await ping.call("worker.update", "image.thumbnail", limits)
        await pings(ping, spec["warmup"], interval)
        cpu = CpuWindow(spec.get("server_pid"))
        cpu.start()
        idle_lat = await pings(ping, spec["seconds"], interval)
        cpu.stop()
        idle = latency_ms(idle_lat)
        idle_busy = {"server_busy": cpu.server / cpu.wall, "client_busy": cpu.client / cpu.wall}

        stop = False
        made = [0]

        async def keep_busy(conn: Conn, path: str) -> None:
            while not stop:
                await conn.call("image.thumbnail", path, timeout=600)
                made[0] += 1

        tasks = [asyncio.create_task(keep_busy(c, p)) for c, p in zip(workers, images, strict=True)]
        await pings(ping, spec["warmup"], interval)
        cpu = CpuWindow(spec.get("server_pid"))
        before = made[0]
        cpu.start()
        lat = await pings(ping, spec["seconds"], interval)
        cpu.stop()
        done = made[0] - before
        stop = True
        await asyncio.wait_for(asyncio.gather(*tasks), 600)
        loaded = latency_ms(lat)
        ratio = loaded["p99_ms"] / idle["p99_ms"] if idle["p99_ms"] else 0.0
        return {
            "cases": {
                IDLE: {"pings": len(idle_lat), **idle, **idle_busy},
                LOADED: {
                    "pings": len(lat),
                    **loaded,
                    "p99_vs_idle": ratio,
                    "images_per_s": done / cpu.wall,
                    "server_busy": cpu.server / cpu.wall,
                    "client_busy": cpu.client / cpu.wall,
                },
            }
        }
    finally:
        await close_all(conns)
