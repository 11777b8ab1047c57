"""The no-op task the queue references run, and huey's app around its SQLite file."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.optional import load

QUEUE = "bench"


def noop() -> bool:
    """rq imports it by name: ``bench.references.tasks.noop``. Returns a value because huey
    stores no result for None (and its producer would wait for one forever)."""
    return True


async def arq_noop(ctx: dict[str, Any]) -> bool:
    """arq's signature: a coroutine taking the worker context. It awaits once, as
    middlewared's ``bench.yield_once`` does."""
    await asyncio.sleep(0)
    return True


def huey_app(path: str) -> tuple[Any, Any]:
    """SqliteHuey on ``path`` with its defaults (WAL, SQLite's synchronous=FULL), and the
    no-op task registered on it (the producer and the consumer build the same)."""
    huey = load("huey")
    if huey is None:
        raise SystemExit("huey is not installed")
    app = huey.SqliteHuey(name=QUEUE, filename=path)
    return app, app.task(name="bench_noop")(noop)
