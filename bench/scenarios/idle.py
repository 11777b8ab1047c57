"""Scenario 5, idle connections: server RSS per connection at 1,000 and 5,000 logged-in
connections, each subscribed to ``core.get_jobs``, against bare aiohttp."""

from __future__ import annotations

from collections.abc import Callable

from bench.context import AUTH, Context
from bench.model import PROJECT, Result
from bench.procs import Proc
from bench.scenarios._common import Cases, Contender, run_all

BARE = "bare aiohttp"


def run(ctx: Context) -> Result:
    levels, settle = ([20, 50], 0.2) if ctx.smoke else ([1000, 5000], 1.0)
    result = Result(
        "idle",
        "Idle connections (logged in, subscribed to core.get_jobs)",
        {"levels": levels, "settle_s": settle},
        columns=["rss_per_conn_kib", "rss_mib", "open_per_s", "held"],
    )
    result.notes.append(
        "RSS per connection = (RSS at N connections - RSS with 1) / (N - 1): the first "
        "login's scrypt allocates 16 MiB once; the others log in with a token; the bare "
        "server keeps subscribed sockets in a dict"
    )

    def go(with_auth: bool) -> Callable[[Proc], Cases]:
        def measure(proc: Proc) -> Cases:
            spec = {
                "url": proc.url(),
                "auth": AUTH if with_auth else None,
                "levels": levels,
                "settle": settle,
                "server_pid": proc.pid,
            }
            cases: Cases = ctx.load("idle", spec, timeout=600)["cases"]
            return cases

        return measure

    run_all(
        ctx,
        result,
        [
            Contender(
                PROJECT,
                lambda: ctx.middlewared(ctx.data_dir("idle"), raise_nofile=True),
                go(True),
            ),
            Contender(BARE, lambda: ctx.reference("aiohttp_broadcast"), go(False)),
        ],
    )
    for level in levels:
        result.target(
            f"idle {level} conns: RSS per connection vs bare aiohttp",
            result.ratio(f"{level} conns", "rss_per_conn_kib", BARE),
            "<=",
            1.5,
            "x",
        )
    top = levels[-1]
    result.target(
        f"idle: connections held of {top}",
        result.median(f"{top} conns", PROJECT, "held"),
        ">=",
        top,
    )
    return result
