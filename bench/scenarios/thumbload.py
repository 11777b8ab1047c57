"""Scenario 13, thumbload: ``core.ping`` p99 while 10 ``image.thumbnail`` jobs of a
12-megapixel JPEG are in flight (re-submitted as they finish), against the same server's
idle p99; with the default worker limits, and with image.thumbnail's concurrency raised to 10
so that all ten run at once."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

from bench.context import AUTH, Context
from bench.loads.thumbload import IDLE, LOADED
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all
from bench.scenarios.thumbnails import photo

JOBS = 10
ALL_RUN = f"middlewared, thumbnail concurrency {JOBS}"


def run(ctx: Context) -> Result:
    warmup, seconds = (0.2, 0.5) if ctx.smoke else (2.0, 10.0)
    interval = 0.01
    result = Result(
        "thumbload",
        f"core.ping latency, idle and while {JOBS} image.thumbnail jobs of a 12 MP JPEG run",
        {"warmup_s": warmup, "seconds": seconds, "ping_interval_s": interval, "jobs": JOBS},
        columns=["p50_ms", "p99_ms", "p99_vs_idle", "images_per_s", "server_busy", "client_busy"],
    )
    result.notes.append(
        f"one ping every {interval * 1000:g} ms on its own connection, each awaited; {JOBS} "
        "other connections each keep one image.thumbnail in flight (each its own copy of the "
        "photo); 'middlewared' keeps the default worker limits (image.thumbnail's "
        "concurrency = CPUs, so the rest queue), the other raises it to 10 with worker.update; "
        "either way the decoding and resizing run in the server's pool of 2 threads, so at most "
        "2 images are rendered at once"
    )
    data = ctx.data_dir("thumbload")
    first = photo(data / "files" / "photo-0.jpg")
    images = [str(first)]
    for i in range(1, JOBS):
        images.append(str(shutil.copy(first, data / "files" / f"photo-{i}.jpg")))

    def go(concurrency: int | None) -> Callable[[Proc], Cases]:
        def measure(proc: Proc) -> Cases:
            spec: dict[str, Any] = {"images": images, "interval": interval}
            spec |= {"warmup": warmup, "seconds": seconds, "concurrency": concurrency}
            spec |= {"url": proc.url(), "auth": AUTH, "server_pid": proc.pid}
            cases: Cases = ctx.load("thumbload", spec, timeout=900)["cases"]
            return cases

        return measure

    run_all(
        ctx,
        result,
        [
            Contender(PROJECT, lambda: ctx.middlewared(data), go(None)),
            Contender(ALL_RUN, lambda: ctx.middlewared(data), go(JOBS)),
        ],
    )
    result.target(
        f"thumbload: ping p99 with {JOBS} thumbnail jobs vs idle",
        result.median(LOADED, PROJECT, "p99_vs_idle"),
        "<=",
        2.0,
        "x",
    )
    result.target(
        f"thumbload: ping p99 with {JOBS} thumbnail jobs vs idle, all {JOBS} running",
        result.median(LOADED, ALL_RUN, "p99_vs_idle"),
        "<=",
        2.0,
        "x",
    )
    for contender in (PROJECT, ALL_RUN):
        idle = result.median(IDLE, contender, "p99_ms")
        loaded = result.median(LOADED, contender, "p99_ms")
        if idle is not None and loaded is not None:
            result.notes.append(f"{contender}: ping p99 {idle:.2f} ms idle, {loaded:.2f} ms loaded")
    return result
