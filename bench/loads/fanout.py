"""Progress fan-out: S subscribers (and maybe one that never reads) while J jobs publish
progress every ``interval``; counts what the reading subscribers get and how old it is."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from bench.loads.common import CpuWindow, auth, ws_url
from bench.loads.fastws import close_all, open_many
from bench.stats import percentile

# Where a pulse event carries the time it was published (progress.extra.t).
STAMP = b'"extra":{"t":'


class Deliveries:
    """What the subscribers received while counting: how many, and each event's age."""

    def __init__(self) -> None:
        self.counting = False
        self.count = 0
        self.ages: list[float] = []

    def on_note(self, data: bytes) -> None:
        if not self.counting:
            return
        i = data.find(STAMP)
        if i < 0:
            return
        start = i + len(STAMP)
        sent = float(data[start : data.index(b"}", start)])
        self.count += 1
        self.ages.append(time.time() - sent)


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth, jobs, interval, warmup, seconds, server_pid and cells, a list of
    [case, subscribers, stalled]."""
    cases: dict[str, dict[str, float]] = {}
    for case, subscribers, stalled in spec["cells"]:
        cases[case] = await cell({**spec, "subscribers": subscribers, "stalled": stalled})
    return {"cases": cases}


async def cell(spec: dict[str, Any]) -> dict[str, float]:
    got = Deliveries()
    jobs, interval = spec["jobs"], spec["interval"]
    url = ws_url(spec)
    subs = await open_many(url, spec["subscribers"], auth(spec), True, lambda _: got.on_note)
    if spec["stalled"]:
        (stalled,) = await open_many(url, 1, auth(spec), True)
        stalled.stall()
        subs.append(stalled)
    (driver,) = await open_many(url, 1, auth(spec))
    # Enough reports that every job is still reporting when the count ends.
    count = math.ceil((spec["warmup"] + spec["seconds"]) / interval) + 1
    pulses = [
        await driver.request("bench.pulse", count, interval, j * interval / jobs)
        for j in range(jobs)
    ]
    await asyncio.sleep(spec["warmup"])
    cpu = CpuWindow(spec.get("server_pid"))
    got.counting = True
    cpu.start()
    await asyncio.sleep(spec["seconds"])
    got.counting = False
    cpu.stop()
    # Hang up first: a server still flushing a backlog to them would delay the jobs.
    await close_all(subs)
    await asyncio.wait_for(asyncio.gather(*pulses), count * interval + 60)
    await driver.close()
    offered = jobs / interval * spec["subscribers"]
    rate = got.count / cpu.wall
    return {
        "deliveries_per_s": rate,
        "offered_per_s": offered,
        "delivered_share": rate / offered,
        "age_p50_ms": percentile(got.ages, 50) * 1000,
        "age_p99_ms": percentile(got.ages, 99) * 1000,
        **cpu.per(got.count),
    }
