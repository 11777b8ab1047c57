"""Progress fan-out: S subscribers (and maybe one that never reads) while J jobs publish
progress every ``interval``; counts what the reading subscribers get of the events
published in the window (by their stamp, however late they arrive within a grace period)
and how old each was on arrival."""

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


# Seconds after the window an event published in it may still arrive and count.
GRACE = 2.0


class Deliveries:
    """Events published between ``start`` and ``end`` that reached a subscriber: how many,
    and each one's age on arrival. Counting by the publish stamp, not the arrival, keeps the
    window's edges from favouring whoever delivers sooner or later."""

    def __init__(self) -> None:
        self.start = math.inf
        self.end = math.inf
        self.count = 0
        self.ages: list[float] = []
        # Each event's stamp, once: the events published in the window that reached anyone.
        self.published: set[bytes] = set()

    def on_note(self, data: bytes) -> None:
        i = data.find(STAMP)
        if i < 0:
            return
        start = i + len(STAMP)
        stamp = data[start : data.index(b"}", start)]
        sent = float(stamp)
        if self.start <= sent < self.end:
            self.count += 1
            self.ages.append(time.time() - sent)
            self.published.add(stamp)


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
    # ... and through the grace period, so the load stays the same until counting ends.
    count += math.ceil(min(GRACE, spec["seconds"]) / interval)
    pulses = [
        await driver.request("bench.pulse", count, interval, j * interval / jobs)
        for j in range(jobs)
    ]
    await asyncio.sleep(spec["warmup"])
    cpu = CpuWindow(spec.get("server_pid"))
    got.start = time.time()
    cpu.start()
    await asyncio.sleep(spec["seconds"])
    got.end = time.time()
    cpu.stop()
    await asyncio.sleep(min(GRACE, spec["seconds"]))
    # Hang up first: a server still flushing a backlog to them would delay the jobs.
    await close_all(subs)
    await asyncio.wait_for(asyncio.gather(*pulses), count * interval + 60)
    await driver.close()
    offered = jobs / interval * spec["subscribers"]
    # Of what was published in the window, the share each reading subscriber got: an event
    # on the window's edge would otherwise move the rate by up to one event per job.
    share = got.count / max(1, len(got.published) * spec["subscribers"])
    return {
        "deliveries_per_s": share * offered,
        "offered_per_s": offered,
        "delivered_share": share,
        "published_in_window": len(got.published),
        "age_p50_ms": percentile(got.ages, 50) * 1000,
        "age_p99_ms": percentile(got.ages, 99) * 1000,
        **cpu.per(got.count),
    }
