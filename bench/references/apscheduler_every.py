"""APScheduler 3.x in one process: N interval jobs running a no-op coroutine on the bench's
event loop (``AsyncIOScheduler``, its ``AsyncIOExecutor``, the default memory job store), the
reference of the triggers scenario's ``@every`` part. A small aiohttp app on the same loop
lets the load set it up and read what ran:

- ``POST /start`` ``{"period", "starts": [Unix seconds, ...]}``: one job per start time, at
  ``start + k * period``; each run appends (its due time, the time its coroutine ran).
- ``POST /period`` ``{"period"}``: every job rescheduled to that period from its start.
- ``GET /runs?since=S&until=U``: ``[[due, ran], ...]`` of the runs due in [S, U).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from bench.optional import load
from bench.references._serve import serve_aiohttp


async def stamp() -> float:
    """The no-op: reads the clock, as middlewared's ``bench.stamp`` does."""
    return time.time()


class Runs:
    def __init__(self) -> None:
        self.scheduler: Any = None
        self.starts: list[datetime] = []
        # (due, ran) of every run, in the order they ended.
        self.done: list[tuple[float, float]] = []
        self.missed = 0

    def on_event(self, event: Any) -> None:
        if getattr(event, "retval", None) is None:
            self.missed += 1
            return
        self.done.append((event.scheduled_run_time.timestamp(), float(event.retval)))

    def trigger(self, start: datetime, period: float) -> Any:
        interval: Any = load("apscheduler.triggers.interval")
        return interval.IntervalTrigger(seconds=period, start_date=start, timezone=UTC)

    async def start(self, request: web.Request) -> web.Response:
        spec = await request.json()
        schedulers: Any = load("apscheduler.schedulers.asyncio")
        events: Any = load("apscheduler.events")
        if schedulers is None or events is None:
            raise web.HTTPInternalServerError(text="apscheduler is not installed")
        # Late runs are run (no grace limit), coalesced into one as middlewared fires a late
        # due time once; one instance of a job at a time (its default).
        self.scheduler = schedulers.AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        self.scheduler.add_listener(
            self.on_event, events.EVENT_JOB_EXECUTED | events.EVENT_JOB_MISSED
        )
        period = float(spec["period"])
        self.starts = [datetime.fromtimestamp(s, UTC) for s in spec["starts"]]
        for i, start in enumerate(self.starts):
            self.scheduler.add_job(stamp, self.trigger(start, period), id=str(i))
        self.scheduler.start()
        return web.json_response({"jobs": len(self.starts)})

    async def period(self, request: web.Request) -> web.Response:
        period = float((await request.json())["period"])
        for i, start in enumerate(self.starts):
            self.scheduler.reschedule_job(str(i), trigger=self.trigger(start, period))
        return web.json_response({"jobs": len(self.starts)})

    async def runs(self, request: web.Request) -> web.Response:
        since, until = float(request.query["since"]), float(request.query["until"])
        runs = [[d, r] for d, r in self.done if since <= d < until]
        return web.json_response({"runs": runs, "missed": self.missed})


def app() -> web.Application:
    runs = Runs()
    application = web.Application()
    application.router.add_post("/start", runs.start)
    application.router.add_post("/period", runs.period)
    application.router.add_get("/runs", runs.runs)
    return application


if __name__ == "__main__":
    serve_aiohttp(app, sys.argv[1:])
