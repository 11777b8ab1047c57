"""The triggers scenario's loads, by ``part``:

- ``every``: N ``@every 1s`` triggers running ``bench.stamp`` (or, ``target`` apscheduler,
  the reference's N interval jobs) for a window: each fire's lateness, from its due time to
  the moment its job's code ran; then every schedule is moved to 1 h (nothing due) and the
  server's CPU is read over an idle window.
- ``events``: N ``@event`` triggers whose rules match none of the events published (N may
  be 0), then no-op jobs in a closed loop with one subscriber of ``core.get_jobs``: bus
  events/s (the subscriber's frames) and the server's CPU per event.
- ``webhook``: one ``@webhook`` trigger (hmac-sha256, overlap ``allow``) or the bare aiohttp
  handler, POSTed a signed body by C keep-alive connections in closed loops: requests/s.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp

from bench.loads import rawhttp
from bench.loads.common import CpuWindow, auth, ws_url
from bench.loads.fastws import Conn, close_all, open_many
from bench.loads.jobs import PER_CONN, level
from bench.procstat import cpu_seconds_fine
from bench.references.aiohttp_hmac import HEADER, SECRET
from bench.stats import latency_ms

EVERY = {"type": "@every", "arguments": "1s", "method": "bench.stamp", "params": []}
# Requests (creates, updates) in flight at once while setting triggers up.
WINDOW = 200
BODY = b'{"ref": "main", "repository": "bench/app", "commits": 1}'


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    part = spec["part"]
    if part == "every":
        if spec.get("target") == "apscheduler":
            return await every_apscheduler(spec)
        return await every_middlewared(spec)
    if part == "events":
        return await events(spec)
    return await webhook(spec)


async def _pipelined(conn: Conn, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    """Every call, WINDOW in flight at a time; their results in order."""
    results: list[Any] = []
    for start in range(0, len(calls), WINDOW):
        futs = [await conn.request(m, *p) for m, p in calls[start : start + WINDOW]]
        results += await asyncio.wait_for(asyncio.gather(*futs), 300)
    return results


# -- every --------------------------------------------------------------------------------


def lateness_metrics(pairs: list[tuple[float, float]], n: int, wall: float) -> dict[str, float]:
    """(due, ran) pairs of the fires due in a window of ``wall`` s of ``n`` 1 s schedules."""
    late = [ran - due for due, ran in pairs]
    return {
        "per_s": len(pairs) / wall if wall else 0.0,
        "fired_share": len(pairs) / max(1.0, n * wall),
        **latency_ms(late),
    }


async def _windows(spec: dict[str, Any]) -> tuple[CpuWindow, float, float]:
    """Warm-up, then the counted window: its CPU and its wall-clock edges."""
    await asyncio.sleep(spec["warmup"])
    cpu = CpuWindow(spec.get("server_pid"))
    since = time.time()
    cpu.start()
    await asyncio.sleep(spec["seconds"])
    cpu.stop()
    return cpu, since, time.time()


async def _idle(spec: dict[str, Any]) -> dict[str, float]:
    """The server's CPU over an idle window, read from its threads' schedstat (ns)."""
    await asyncio.sleep(spec["settle"])
    pid: int = spec["server_pid"]
    cpu = CpuWindow(None)
    server = cpu_seconds_fine(pid)
    cpu.start()
    await asyncio.sleep(spec["idle_seconds"])
    cpu.stop()
    busy = (cpu_seconds_fine(pid) - server) / cpu.wall
    return {"server_busy": busy, "idle_pct": 100 * busy, "client_busy": cpu.client / cpu.wall}


def _cases(
    pairs: list[tuple[float, float]], n: int, cpu: CpuWindow, idle: dict[str, float]
) -> dict[str, dict[str, float]]:
    firing = {**lateness_metrics(pairs, n, cpu.wall), **cpu.per(len(pairs))}
    return {f"{n} @every 1s": firing, f"{n} @every 1h (idle)": idle}


def fires(db: Path, since: float, until: float) -> list[tuple[float, float]]:
    """(due, ran) of the fires due in [since, until): the due time from the fire's row (the
    server's durable record, keyed by trigger and due time), the run time from its job's
    result (``bench.stamp``'s clock reading). A job that has not ended is left out."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)) as conn:
        rows = conn.execute(
            "SELECT f.due, j.record FROM trigger_fires f JOIN jobs j ON j.id = f.job_id "
            "WHERE f.due >= ? AND f.due < ?",
            (int(since * 1000), int(until * 1000)),
        ).fetchall()
    pairs = []
    for due, record in rows:
        result = json.loads(record).get("result")
        if isinstance(result, int | float):
            pairs.append((due / 1000, float(result)))
    return pairs


async def every_middlewared(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth, data_dir, server_pid, triggers, spread (s over which the creates
    are paced), warmup, seconds, settle, idle_seconds."""
    n = spec["triggers"]
    (conn,) = await open_many(ws_url(spec), 1, auth(spec))
    clock = time.perf_counter
    step = spec["spread"] / n
    t0 = clock()
    futs = []
    for i in range(n):
        delay = t0 + i * step - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        futs.append(await conn.request("trigger.create", EVERY))
    records = await asyncio.wait_for(asyncio.gather(*futs), 300)
    cpu, since, until = await _windows(spec)
    ids = [r["id"] for r in records]
    await _pipelined(conn, [("trigger.update", [i, {"arguments": "1h"}]) for i in ids])
    idle = await _idle(spec)
    await close_all([conn])
    pairs = fires(Path(spec["data_dir"]) / "middlewared.db", since, until)
    phases = [r["created"]["$date"] % 1000 for r in records]
    return {"cases": _cases(pairs, n, cpu, idle), "phases": phases}


async def every_apscheduler(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, server_pid, triggers, phases (ms in the second each schedule fires at,
    middlewared's of the same run; else spread evenly), warmup, seconds, settle,
    idle_seconds."""
    n = spec["triggers"]
    phases: list[int] = spec.get("phases") or [i * 1000 // n for i in range(n)]
    base = int(time.time()) + 1
    starts = [base + p / 1000 for p in phases[:n]]
    async with aiohttp.ClientSession(spec["url"]) as http:
        async with http.post("/start", json={"period": 1.0, "starts": starts}) as r:
            r.raise_for_status()
        cpu, since, until = await _windows(spec)
        async with http.post("/period", json={"period": 3600.0}) as r:
            r.raise_for_status()
        idle = await _idle(spec)
        async with http.get("/runs", params={"since": since, "until": until}) as r:
            r.raise_for_status()
            got = await r.json()
    pairs = [(d, ran) for d, ran in got["runs"]]
    cases = _cases(pairs, n, cpu, idle)
    cases[f"{n} @every 1s"]["missed"] = got["missed"]
    return {"cases": cases}


# -- events -------------------------------------------------------------------------------


def rule(i: int) -> str:
    """A realistic mix of rules that match none of the events the load publishes: job
    methods no job runs, job ids far beyond any made, a state no no-op job reaches, and
    another collection's objects."""
    kind = i % 4
    if kind == 0:
        return f"core.get_jobs:CREATED,UPDATED:bench.absent{i}:method"
    if kind == 1:
        return f"core.get_jobs:UPDATED:{10**12 + i}"
    if kind == 2:
        return "core.get_jobs:UPDATED:ABORTED:state"
    return f"trigger.query:DELETED:{10**12 + i}"


class Frames:
    def __init__(self) -> None:
        self.count = 0

    def on_note(self, data: bytes) -> None:
        self.count += 1


def _listener(stats: dict[str, Any]) -> dict[str, float]:
    for one in stats.get("listeners", []):
        if one["name"] == "triggers":
            return {k: float(one[k]) for k in ("delivered", "coalesced", "dropped")}
    return {"delivered": 0.0, "coalesced": 0.0, "dropped": 0.0}


async def events(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth, server_pid, triggers (0: none), method, inflight, warmup, seconds."""
    url = ws_url(spec)
    (admin,) = await open_many(url, 1, auth(spec))
    n = spec["triggers"]
    made = await _pipelined(
        admin,
        [
            ("trigger.create", [{"type": "@event", "arguments": rule(i), "method": "bench.noop"}])
            for i in range(n)
        ],
    )
    assert len(made) == n
    frames = Frames()
    (sub,) = await open_many(url, 1, auth(spec), True, lambda _: frames.on_note)
    inflight = spec["inflight"]
    conns = await open_many(url, max(1, -(-inflight // PER_CONN)), auth(spec))
    method = spec["method"]
    await level(conns, method, inflight, spec["warmup"], None)
    before, seen = _listener(await admin.call("core.stats")), frames.count
    lat, cpu = await level(conns, method, inflight, spec["seconds"], spec.get("server_pid"))
    got = frames.count - seen
    after = _listener(await admin.call("core.stats"))
    await close_all([admin, sub, *conns])
    handled = after["delivered"] - before["delivered"]
    case = {
        "per_s": got / cpu.wall,
        "events": got,
        "jobs_per_s": len(lat) / cpu.wall,
        "events_per_job": got / max(1, len(lat)),
        "listener_handled": handled,
        "listener_coalesced": after["coalesced"] - before["coalesced"],
        "listener_dropped": after["dropped"] - before["dropped"],
        **cpu.per(got),
    }
    return {"cases": {"bus events": case}}


# -- webhook ------------------------------------------------------------------------------


async def _hook_path(spec: dict[str, Any]) -> str:
    """middlewared: a webhook trigger made for the run; the reference: any key."""
    if spec.get("auth") is None:
        return "/hooks/bench"
    (conn,) = await open_many(ws_url(spec), 1, auth(spec))
    made = await conn.call(
        "trigger.create",
        {
            "type": "@webhook",
            "method": "bench.noop",
            "auth": {"kind": "hmac-sha256", "secret": SECRET.decode()},
            "options": {"overlap": "allow"},
        },
    )
    await close_all([conn])
    return f"/hooks/{made['id']}"


async def webhook(spec: dict[str, Any]) -> dict[str, Any]:
    """spec: url, auth (middlewared) or null (the reference), server_pid, conns, warmup,
    seconds."""
    host, port = spec["url"].removeprefix("http://").rsplit(":", 1)
    path = await _hook_path(spec)
    sign = hmac.new(SECRET, BODY, hashlib.sha256).hexdigest()
    request = rawhttp.post(
        host, int(port), path, {"Content-Type": "application/json", HEADER: sign}, BODY
    )
    lat: list[float] = []
    statuses: dict[int, int] = {}
    loops = await rawhttp.open_loops(host, int(port), spec["conns"], request, lat, statuses)
    await rawhttp.run_for(loops, spec["warmup"])
    lat.clear()
    statuses.clear()
    cpu = CpuWindow(spec.get("server_pid"))
    cpu.start()
    await rawhttp.run_for(loops, spec["seconds"])
    cpu.stop()
    rawhttp.close(loops)
    accepted = statuses.get(202, 0)
    case = {
        "per_s": accepted / cpu.wall,
        "requests": len(lat),
        "errors": len(lat) - accepted,
        **latency_ms(lat),
        **cpu.per(len(lat)),
        **_statuses(statuses),
    }
    return {"cases": {"webhook hmac-sha256": case}}


def _statuses(statuses: dict[int, int]) -> dict[str, float]:
    return {f"http_{k}": float(v) for k, v in sorted(statuses.items())}
