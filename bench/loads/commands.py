"""Command job overhead: ``command.run`` of a command whose one line is ``true``, submit to
SUCCESS, one after another; or (``bare``) ``asyncio.create_subprocess_exec("true")``
awaited in a bare loop in this process.

Output throughput (``output``: bytes): one run of a line writing that much to stdout, into
the job's log; or (``bare``) the same line's stdout read to its end by a bare asyncio reader
in this process, as ``cat file > /dev/null`` would."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from bench.loads.common import CpuWindow, auth, level_metrics, ws_url
from bench.loads.fastws import close_all, open_many
from bench.procstat import peak_rss_bytes, reset_peak, rss_bytes

NAME = "bench-true"
CASE = "true, 1 at a time"
OUTPUT_NAME = "bench-output"
OUTPUT_CASE = "stdout into the job log"
LINE = "middlewared output throughput: one line of the log, stamped as it comes"
CHUNK = 256 * 1024


def writer(size: int) -> str:
    """A shell line writing ``size`` bytes of text lines to stdout."""
    return f"yes '{LINE}' | head -c {size}"


async def bare(seconds: float) -> list[float]:
    lat: list[float] = []
    clock = time.perf_counter
    deadline = clock() + seconds
    while (t0 := clock()) < deadline:
        proc = await asyncio.create_subprocess_exec("true")
        await proc.wait()
        lat.append(clock() - t0)
    return lat


async def runs(spec: dict[str, Any], seconds: float) -> list[float]:
    (conn,) = await open_many(ws_url(spec), 1, auth(spec))
    try:
        found = await conn.call("command.query", [["name", "=", NAME]])
        if not found:
            await conn.call("command.create", {"name": NAME, "commands": ["true"]})
        lat: list[float] = []
        clock = time.perf_counter
        deadline = clock() + seconds
        while (t0 := clock()) < deadline:
            await conn.call("command.run", NAME)
            lat.append(clock() - t0)
        return lat
    finally:
        await close_all([conn])


async def bare_output(size: int, into: str | None) -> int:
    """Read the line's stdout to its end, dropping it or appending it to the file ``into``."""
    proc = await asyncio.create_subprocess_shell(writer(size), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    fd = os.open(into, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) if into else None
    read = 0
    try:
        while chunk := await proc.stdout.read(CHUNK):
            read += len(chunk)
            if fd is not None:
                os.write(fd, chunk)
    finally:
        if fd is not None:
            os.close(fd)
            os.unlink(into)  # type: ignore[arg-type]
    await proc.wait()
    return read


async def output(spec: dict[str, Any]) -> dict[str, Any]:
    """One run writing ``spec["output"]`` bytes: MB/s, and the server's RSS before and at
    its peak during the run (its peak is reset first where the kernel allows)."""
    size: int = spec["output"]
    if spec.get("bare"):
        t0 = time.perf_counter()
        read = await bare_output(size, spec.get("into"))
        elapsed = time.perf_counter() - t0
        assert read == size, (read, size)
        return {"cases": {OUTPUT_CASE: {"mb_per_s": size / elapsed / 1e6, "seconds": elapsed}}}
    pid: int = spec["server_pid"]
    (conn,) = await open_many(ws_url(spec), 1, auth(spec))
    try:
        if not await conn.call("command.query", [["name", "=", OUTPUT_NAME]]):
            await conn.call("command.create", {"name": OUTPUT_NAME, "commands": [writer(size)]})
        before = rss_bytes(pid)
        exact = reset_peak(pid)
        t0 = time.perf_counter()
        await conn.call("command.run", OUTPUT_NAME)
        elapsed = time.perf_counter() - t0
        peak = peak_rss_bytes(pid) if exact else rss_bytes(pid)
    finally:
        await close_all([conn])
    return {
        "cases": {
            OUTPUT_CASE: {
                "mb_per_s": size / elapsed / 1e6,
                "seconds": elapsed,
                "rss_growth_mib": max(peak - before, 0) / 2**20,
            }
        }
    }


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: bare (bool), url and auth (not bare), warmup and seconds, server_pid; or
    output (bytes) for one run of the output throughput."""
    if "output" in spec:
        return await output(spec)

    async def measure(seconds: float) -> list[float]:
        return await (bare(seconds) if spec.get("bare") else runs(spec, seconds))

    await measure(spec["warmup"])
    cpu = CpuWindow(spec.get("server_pid"))
    cpu.start()
    lat = await measure(spec["seconds"])
    cpu.stop()
    return {"cases": {CASE: level_metrics(lat, cpu)}}
