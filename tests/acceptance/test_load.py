"""Load, bounded in count and time, over loopback against the real server.

- Soak: 200 connections call methods and run jobs for a while (20 s; 5 minutes with
  ``--long``); no call fails, and after a warm-up the server's RSS and open fds stay flat.
  The curve is printed (and kept in the data dir as soak.json).
- 5,000 idle connections, logged in and subscribed to ``core.get_jobs``, are held; then a
  storm of 1,000 connections in about a second does not starve a logged-in client, and all
  5,000 still answer after it.

Memory and fds are compared with slack; time is recorded, never asserted (the machines are
shared).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.loads.idle import answering
from bench.loads.wsrpc import Conn, RpcError, connect, open_many, session
from bench.procstat import rss_bytes
from tests.serverproc import ServerProc

MIB = 1024 * 1024
SOAK_CONNECTIONS = 200
SUBSCRIBERS = 20  # the web UIs among them
THINK_SECONDS = 0.01
# After the warm-up, what the server may still grow by (SQLite's page cache, allocator).
RSS_SLACK = 24 * MIB
FD_SLACK = 8


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_parts(pid: int) -> dict[str, float]:
    """RSS split as the kernel counts it, in MiB: heap and stacks (RssAnon) apart from file
    pages mapped in (RssFile: SQLite's memory-mapped reads of the store, shared libraries),
    which are the page cache's, not the process's to leak."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = round(int(value.split()[0]) / 1024, 2)
    return {
        "rss_mib": fields["VmRSS"],
        "anon_mib": fields["RssAnon"],
        "file_mib": fields["RssFile"],
    }


def _pid(srv: ServerProc) -> int:
    assert srv.process is not None
    return srv.process.pid


def _auth(srv: ServerProc) -> dict[str, str]:
    return {"user": "root", "password": srv.password}


@dataclass
class Soak:
    calls: int = 0
    jobs: int = 0
    events: int = 0
    errors: list[str] = field(default_factory=list)
    curve: list[dict[str, float]] = field(default_factory=list)


async def _worker(conn: Conn, i: int, until: float, soak: Soak) -> None:
    """Calls of a script: ping, a small dict argument, and now and then a job to its end,
    with a short pause between rounds (a soak, not a saturation test: the subscribers in
    this same process must keep up with the events)."""
    n = 0
    while time.monotonic() < until:
        await asyncio.sleep(THINK_SECONDS)
        n += 1
        try:
            assert await conn.call("core.ping", timeout=60) == "pong"
            arg = {"worker": i, "n": n, "tags": ["a", "b"]}
            assert await conn.call("test.echo", arg, timeout=60) == arg
            soak.calls += 2
            if n % 4 == 0:
                assert await conn.call("test.progress", 3, timeout=60) == 3
                soak.jobs += 1
        except (RpcError, AssertionError, TimeoutError) as e:
            soak.errors.append(f"worker {i}: {e!r}")
            return


async def _sample(pid: int, start: float, until: float, soak: Soak) -> None:
    while time.monotonic() < until:
        soak.curve.append(
            {
                "t": round(time.monotonic() - start, 1),
                **_rss_parts(pid),
                "fds": _fds(pid),
                "calls": soak.calls,
                "jobs": soak.jobs,
                "events": soak.events,
            }
        )
        await asyncio.sleep(1.0)


async def _soak(srv: ServerProc, seconds: float) -> Soak:
    soak = Soak()

    def on_note(_i: int) -> Callable[[str], None]:
        def note(_raw: str) -> None:
            soak.events += 1

        return note

    async with session() as http:
        conns = await open_many(http, srv.ws_url, SUBSCRIBERS, _auth(srv), True, on_note)
        conns += await open_many(http, srv.ws_url, SOAK_CONNECTIONS - SUBSCRIBERS, _auth(srv))
        start = time.monotonic()
        until = start + seconds
        await asyncio.gather(
            _sample(_pid(srv), start, until, soak),
            *(_worker(c, i, until, soak) for i, c in enumerate(conns)),
        )
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return soak


def test_soak_200_connections(make_server: Callable[..., ServerProc], long_run: bool) -> None:
    srv = make_server()
    seconds = 300.0 if long_run else 20.0
    soak = asyncio.run(_soak(srv, seconds))
    (srv.data_dir / "soak.json").write_text(json.dumps(soak.curve))
    warm = [p for p in soak.curve if p["t"] >= seconds / 4]
    print(
        f"soak {seconds:.0f} s, {SOAK_CONNECTIONS} connections: {soak.calls} calls, "
        f"{soak.jobs} jobs, {soak.events} events to {SUBSCRIBERS} subscribers, "
        f"{len(soak.errors)} errors"
    )
    for p in soak.curve[:: max(1, len(soak.curve) // 12)] + soak.curve[-1:]:
        print(
            f"  t={p['t']:>6} s  rss {p['rss_mib']:6.1f} MiB (anon {p['anon_mib']:6.1f}, "
            f"file {p['file_mib']:6.1f})  fds {p['fds']:4}  calls {p['calls']}"
        )
    assert soak.errors == [], soak.errors[:5]
    assert soak.jobs > 0 and soak.events > 0
    assert len(warm) >= 3, soak.curve
    anon_grown = (max(p["anon_mib"] for p in warm) - warm[0]["anon_mib"]) * MIB
    assert anon_grown < RSS_SLACK, f"RssAnon grew {anon_grown / MIB:.1f} MiB after the warm-up"
    assert max(p["fds"] for p in warm) <= warm[0]["fds"] + FD_SLACK, warm


# -- 5,000 idle connections, then a storm -----------------------------------------------------

IDLE = 5000
STORM = 1000


async def _storm_one(http: aiohttp.ClientSession, url: str) -> bool:
    """A connection that says hello (ping before login) and leaves."""
    try:
        conn = await connect(http, url)
        try:
            return bool(await conn.call("core.ping", timeout=60) == "pong")
        finally:
            await conn.close()
    except (RpcError, OSError, aiohttp.ClientError, TimeoutError):
        return False


@dataclass
class Probe:
    """A logged-in client pinging in a loop: when each answer came, and how long it took."""

    answers: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: bool = False

    async def run(self, conn: Conn) -> None:
        while not self.stop:
            sent = time.monotonic()
            try:
                assert await conn.call("core.ping", timeout=60) == "pong"
            except (RpcError, AssertionError, TimeoutError) as e:
                self.errors.append(repr(e))
                return
            self.answers.append((time.monotonic(), time.monotonic() - sent))
            await asyncio.sleep(0.005)


async def _idle_and_storm(srv: ServerProc) -> dict[str, Any]:
    pid = _pid(srv)
    async with session() as http:
        (probe_conn,) = await open_many(http, srv.ws_url, 1, _auth(srv))
        base_rss = rss_bytes(pid)
        t0 = time.monotonic()
        idle = await open_many(http, srv.ws_url, IDLE, _auth(srv), True)
        opened_s = time.monotonic() - t0
        await asyncio.sleep(1.0)
        rss = rss_bytes(pid)
        held_before = await answering(idle)

        probe = Probe()
        probing = asyncio.create_task(probe.run(probe_conn))
        await asyncio.sleep(0.3)
        storm_start = time.monotonic()
        storm = await asyncio.gather(*(_storm_one(http, srv.ws_url) for _ in range(STORM)))
        storm_end = time.monotonic()
        await asyncio.sleep(0.3)
        probe.stop = True
        await probing
        held_after = await answering(idle)
        during = [lat for at, lat in probe.answers if storm_start <= at <= storm_end]
        await asyncio.gather(*(c.close() for c in [*idle, probe_conn]), return_exceptions=True)
    return {
        "opened_s": opened_s,
        "rss_per_conn_kib": (rss - base_rss) / IDLE / 1024,
        "held_before": held_before,
        "held_after": held_after,
        "storm_ok": sum(storm),
        "storm_s": storm_end - storm_start,
        "probe_errors": probe.errors,
        "probe_during": during,
    }


def test_5000_idle_connections_and_a_storm(make_server: Callable[..., ServerProc]) -> None:
    # The storm's 1,000 clients all come from 127.0.0.1 here, not from 1,000 addresses.
    srv = make_server("--max-unauthenticated-per-address", str(STORM))
    r = asyncio.run(_idle_and_storm(srv))
    during = r["probe_during"]
    worst = max(during, default=float("nan"))
    median = statistics.median(during) if during else float("nan")
    print(
        f"{IDLE} idle connections opened in {r['opened_s']:.1f} s, "
        f"{r['rss_per_conn_kib']:.1f} KiB RSS each; storm of {STORM} in {r['storm_s']:.2f} s "
        f"({r['storm_ok']} served); logged-in probe during it: {len(during)} answers, "
        f"median {median * 1000:.1f} ms, worst {worst * 1000:.1f} ms"
    )
    assert r["held_before"] == IDLE, r["held_before"]
    assert r["storm_ok"] == STORM, r["storm_ok"]
    assert r["probe_errors"] == [], r["probe_errors"]
    # Not starved: answered while the storm was still going, not only once it was over.
    assert len(during) >= 2, during
    assert r["held_after"] == IDLE, r["held_after"]
