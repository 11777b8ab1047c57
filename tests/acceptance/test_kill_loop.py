"""kill -9 at random moments while jobs wait, run and upload; nothing acknowledged is lost.

Short form in CI (20 kills); ``--long`` runs 100.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.acceptance.test_files import _partial_upload
from tests.serverproc import ServerProc
from tests.wsraw import Raw, raw

ENDED = {"SUCCESS", "FAILED", "ABORTED"}


async def _load(c: Raw, srv: ServerProc, acked: set[int], stop: asyncio.Event) -> None:
    """Keep submitting jobs; every id a reply returns has been acknowledged."""
    await c.call("core.set_options", {"legacy_jobs": True})
    acked.add(await c.call("test.locked", "K", "never"))
    acked.add(await c.call("test.locked", "K", "never"))  # waits behind the first
    acked.add(await c.call("test.retried", "never"))
    while not stop.is_set():
        acked.add(await c.call("test.progress", 3))


async def _one_round(srv: ServerProc, rng: random.Random, acked: set[int]) -> None:
    stop = asyncio.Event()
    dest = srv.data_dir / "files" / f"up{rng.randrange(10**6)}.bin"
    reader, writer = await asyncio.open_connection(srv.host, srv.port)
    writer.write(_partial_upload(srv, str(dest)))
    async with raw(srv.ws_url, "root", srv.password) as c:
        load = asyncio.create_task(_load(c, srv, acked, stop))
        await asyncio.sleep(rng.uniform(0.05, 0.4))  # a random moment, not a wait
        await asyncio.to_thread(srv.kill)
        stop.set()
        await asyncio.gather(load, return_exceptions=True)
    writer.close()
    del reader


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        result: str = conn.execute("PRAGMA integrity_check").fetchone()[0]
    return result


async def _check(srv: ServerProc, acked: set[int], last_max: int) -> int:
    async with raw(srv.ws_url, "root", srv.password) as c:
        jobs = {j["id"]: j for j in await c.call("core.get_jobs", [["id", "in", sorted(acked)]])}
        missing = acked - set(jobs)
        assert not missing, f"acknowledged jobs lost: {sorted(missing)[:10]}"
        for job in jobs.values():
            if job["method"] == "test.retried":
                continue  # re-queued by design
            if job["state"] not in ENDED:
                # Only jobs of this run can still be live (the restart re-queued nothing else).
                continue
            if job["state"] == "FAILED" and job["method"] != "test.fail":
                assert job["error"].startswith("Interrupted") or "Upload" in job["error"], job
        await c.call("core.set_options", {"legacy_jobs": True})
        new_id: int = await c.call("test.progress", 1)
        assert new_id > last_max, "a job id was reused"
        stats: dict[str, Any] = await c.call("core.stats")
        assert stats["live_jobs"] >= 0
        # Abort what is still live so the next round starts clean.
        await c.call("core.set_options", {"legacy_jobs": False})
        for job in await c.call("core.get_jobs", [["state", "in", ["WAITING", "RUNNING"]]]):
            if job["abortable"] or job["state"] == "WAITING":
                await c.call("core.job_abort", job["id"])
        return new_id


async def test_kill_loop(
    make_server: Callable[..., ServerProc], long_run: bool, tmp_path: Path
) -> None:
    rounds = 100 if long_run else 20
    rng = random.Random(20261123)
    srv = make_server(data_dir=tmp_path / "data")
    acked: set[int] = set()
    last_max = 0
    swept = 0
    for _ in range(rounds):
        await _one_round(srv, rng, acked)
        assert _integrity(srv.data_dir / "middlewared.db") == "ok"
        srv.output.clear()
        await asyncio.to_thread(srv.start)
        swept += srv.log_text().count("left by an interrupted upload")
        spool = srv.data_dir / "spool"
        assert list(spool.iterdir()) == [], "spooled uploads survived the restart"
        assert list((srv.data_dir / "files").glob(".*.part")) == [], "temp files left behind"
        last_max = max(await _check(srv, acked, last_max), max(acked, default=0))
    assert len(acked) > rounds * 3
    # The uploads in flight at the kills left temporary files, and restarts removed them.
    assert swept > 0
