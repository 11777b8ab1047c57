"""Scenario 1, RPC round trips: ``core.ping`` and ``bench.echo`` with a small dict, 1 and 50
connections with one call in flight each, against bare echo servers and jsonrpcserver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.context import AUTH, Context
from bench.model import PROJECT, Result
from bench.optional import missing
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, note_baseline, run_all, with_baseline

SMALL_DICT = {
    "name": "tank/data",
    "recursive": True,
    "properties": {"compression": "lz4", "quota": 1073741824, "atime": "off"},
    "tags": ["daily", "offsite"],
}
# (label, method, params)
CALLS: list[tuple[str, str, list[Any]]] = [
    ("ping", "core.ping", []),
    ("echo", "bench.echo", [SMALL_DICT]),
]
CONNS = [1, 50]
ECHO = "aiohttp echo"
# The audit's ratio with a raw client (0.60x of medians; 0.55x per pair of runs).
BEFORE_VS_ECHO = {"ping": 0.60}


def run(ctx: Context) -> Result:
    warmup, seconds = (0.05, 0.1) if ctx.smoke else (0.5, 2.0)
    result = Result(
        "rpc",
        "RPC round trip (one call in flight per connection)",
        {"conns": CONNS, "calls": CALLS, "warmup_s": warmup, "seconds": seconds},
        columns=[
            "calls_per_s",
            "p50_ms",
            "p99_ms",
            "server_us_per_op",
            "server_busy",
            "client_busy",
        ],
    )
    result.notes.append(
        "the load is one picows process (each reply sends the next call from its callback); "
        "server_busy and client_busy are cores used during the window: a reference whose "
        "server_busy is near 1 is the bottleneck, not the client"
    )

    def measure(with_auth: bool) -> Callable[[Proc], Cases]:
        def go(proc: Proc) -> Cases:
            spec = {
                "url": proc.url(),
                "auth": AUTH if with_auth else None,
                "conns": CONNS,
                "calls": CALLS,
                "warmup": warmup,
                "seconds": seconds,
                "server_pid": proc.pid,
            }
            cases: Cases = ctx.load("rpc", spec, timeout=120)["cases"]
            return cases

        return go

    run_all(
        ctx,
        result,
        with_baseline(
            ctx,
            [
                Contender(PROJECT, lambda: ctx.middlewared(ctx.data_dir("rpc")), measure(True)),
                Contender(ECHO, lambda: ctx.reference("aiohttp_echo"), measure(False)),
                Contender(
                    "websockets echo", lambda: ctx.reference("websockets_echo"), measure(False)
                ),
                Contender(
                    "jsonrpcserver",
                    lambda: ctx.reference("jsonrpcserver_aiohttp"),
                    measure(False),
                    missing("jsonrpcserver"),
                ),
            ],
            "rpc",
        ),
    )
    note_baseline(ctx, result, "calls_per_s")
    _targets(result)
    return result


def _targets(result: Result) -> None:
    for label, _method, _params in CALLS:
        many, one = f"{label}/50", f"{label}/1"
        result.target(
            f"rpc {label} 50 conns: calls/s vs aiohttp echo",
            result.ratio(many, "calls_per_s", ECHO),
            ">=",
            0.8,
            "x",
            BEFORE_VS_ECHO.get(label),
        )
        result.target(
            f"rpc {label} 50 conns: server CPU per call",
            result.median(many, PROJECT, "server_us_per_op"),
            "<=",
            20,
            "us",
        )
        result.target(
            f"rpc {label} 50 conns: p99 latency",
            result.median(many, PROJECT, "p99_ms"),
            "<=",
            5,
            "ms",
        )
        result.target(
            f"rpc {label} 1 conn: p50 vs aiohttp echo p50",
            result.ratio(one, "p50_ms", ECHO),
            "<=",
            1.5,
            "x",
        )
    # The measurement is only honest when the reference, not the client, sets the pace.
    for label, _method, _params in CALLS:
        result.target(
            f"harness: rpc {label} 50 conns: aiohttp echo server busy",
            result.median(f"{label}/50", ECHO, "server_busy"),
            ">=",
            0.9,
            " cores",
        )
        result.target(
            f"harness: rpc {label} 50 conns: load client busy (echo)",
            result.median(f"{label}/50", ECHO, "client_busy"),
            "<=",
            0.8,
            " cores",
        )
