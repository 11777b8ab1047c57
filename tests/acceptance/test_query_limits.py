"""What one query may cost: a regex budget per query, a bound on its conditions, a time
budget and a row budget; each refused with the reason while other clients are served."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import regex

from bench import storegen
from tests.rpcsync import Rpc
from tests.serverproc import ServerProc

PATHOLOGICAL = "(g|g)+$"  # backtracks exponentially on "g" * 40 + "x!"
# Far above the query's budget, far below what a stall would take: a sanity bound only.
SANITY_SECONDS = 4.0


def _job_holding(rpc: Rpc, value: Any) -> int:
    job_id = rpc.start("test.keep", value)
    rpc.result("core.job_wait", job_id)
    return job_id


def _in_thread(rpc: Rpc, *call: Any) -> tuple[threading.Thread, list[dict[str, Any]]]:
    replies: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: replies.append(rpc.call(*call, timeout=120)))
    thread.start()
    return thread, replies


def _slow_text(seconds: float = 0.002) -> str:
    """A text PATHOLOGICAL takes at least ``seconds`` to fail on, here (each character more
    doubles it): far under the budget for one match, far over it for hundreds."""
    pattern = regex.compile(PATHOLOGICAL)
    for n in range(8, 40):
        text = "g" * n + "x!"
        started = time.perf_counter()
        for _ in range(3):
            pattern.match(text)
        if (time.perf_counter() - started) / 3 >= seconds:
            return text
    raise AssertionError("no text is slow enough")


def test_many_pathological_conditions_share_one_budget(server: ServerProc) -> None:
    """63 conditions (64 with the id, the default bound), 62 of them a catastrophic ``~``,
    each taking a few milliseconds per job: a budget per condition let them run for seconds
    in all; one budget for the query stops it at 100 ms, and the server serves meanwhile."""
    rpc, other = Rpc(server.ws_url, server.password), Rpc(server.ws_url)
    try:
        text = _slow_text()
        ids = [_job_holding(rpc, text) for _ in range(6)]
        # An OR tries every branch on every job (an AND would stop at the first miss).
        filters = [["id", "in", ids], ["OR", [["result", "~", PATHOLOGICAL]] * 62]]
        started = time.monotonic()
        thread, replies = _in_thread(rpc, "core.get_jobs", filters)
        assert other.result("core.ping") == "pong"
        thread.join(120)
        took = time.monotonic() - started
        assert "error" in replies[0], f"no budget stopped the query ({took:.1f} s)"
        error = replies[0]["error"]
        assert error["code"] == -32602, error
        assert "took longer than" in error["data"]["reason"], error
        assert took < SANITY_SECONDS, f"the query answered after {took:.1f} s"
        assert other.result("core.ping") == "pong"
    finally:
        rpc.close()
        other.close()


def test_conditions_past_the_bound_are_refused(server: ServerProc) -> None:
    rpc = Rpc(server.ws_url, server.password)
    try:
        filters = [["OR", [["result", "~", "g+x"], ["id", "=", 1]]]] * 33  # 66 conditions
        error = rpc.call("core.get_jobs", filters)["error"]
        assert error["code"] == -32602, error
        assert error["data"]["extra"][0][0] == "filters"
        assert "more than 64 conditions" in error["data"]["reason"], error
        assert rpc.result("core.get_jobs", filters[:32], {"count": True}) >= 0
    finally:
        rpc.close()


def test_matching_runs_off_the_event_loop(make_server: Callable[..., ServerProc]) -> None:
    """With a larger budget the query matches for a second and a half, in the store's reader
    thread: another client keeps getting its pings answered meanwhile."""
    srv = make_server("--query-regex-budget", "1.5")
    rpc, other = Rpc(srv.ws_url, srv.password), Rpc(srv.ws_url)
    try:
        job_id = _job_holding(rpc, "g" * 40 + "x!")
        filters = [["id", "=", job_id], ["result", "~", PATHOLOGICAL]]
        thread, replies = _in_thread(rpc, "core.get_jobs", filters)
        answered_meanwhile = 0
        while not replies:
            assert other.result("core.ping") == "pong"
            answered_meanwhile += 0 if replies else 1
        thread.join(120)
        assert replies[0]["error"]["code"] == -32602, replies
        assert "took longer than the 1500 ms" in replies[0]["error"]["data"]["reason"]
        # A stalled loop answers the pings queued behind the query only after it.
        assert answered_meanwhile >= 10, answered_meanwhile
    finally:
        rpc.close()
        other.close()


def _big_store(make_server: Callable[..., ServerProc], jobs: int, *args: str) -> ServerProc:
    """A server whose store holds ``jobs`` finished jobs, written straight into SQLite."""
    srv = make_server()
    rpc = Rpc(srv.ws_url, srv.password)
    _job_holding(rpc, 1)
    fail = rpc.start("test.fail", "seeded")
    rpc.call("core.job_wait", fail)
    rpc.close()
    srv.stop()
    storegen.generate(srv.data_dir / "middlewared.db", jobs)
    srv.args.extend(args)
    srv.output.clear()
    return srv.start()


def test_a_query_past_its_time_budget_fails(make_server: Callable[..., ServerProc]) -> None:
    srv = _big_store(make_server, 20_000, "--query-timeout", "0.001")
    rpc, other = Rpc(srv.ws_url, srv.password), Rpc(srv.ws_url)
    try:
        # Nothing matches: every row would go through Python (the pattern has no literal
        # head for SQL to narrow by), well past a millisecond.
        for options in ({"limit": 20}, {"count": True}):
            filters = [["credentials.type", "~", ".*no such text"]]
            error = rpc.call("core.get_jobs", filters, options)["error"]
            assert error["code"] == -32001, error
            assert error["data"]["errname"] == "ETIMEDOUT"
            assert "--query-timeout" in error["data"]["reason"], error
        assert other.result("core.ping") == "pong"
    finally:
        rpc.close()
        other.close()


def test_a_query_past_its_row_budget_fails(make_server: Callable[..., ServerProc]) -> None:
    srv = _big_store(make_server, 2_000, "--query-max-rows", "100")
    rpc = Rpc(srv.ws_url, srv.password)
    try:
        for filters, options in (
            ([], {}),
            ([["credentials.type", "~", "."]], {"limit": 500}),
            # Lists order by their JSON text, in Python: all 2,004 would be held to sort.
            ([], {"order_by": ["arguments"], "limit": 20}),
        ):
            error = rpc.call("core.get_jobs", filters, options)["error"]
            assert error["code"] == -32602, (filters, options, error)
            assert "--query-max-rows" in error["data"]["reason"], error
        # Within the budget: a page, a count, a filter that stops at its page, a cursor walk.
        assert len(rpc.result("core.get_jobs", [], {"limit": 100})) == 100
        assert rpc.result("core.get_jobs", [], {"count": True}) == 2_004
        page = rpc.result("core.get_jobs", [["credentials.type", "~", "."]], {"limit": 20})
        assert len(page) == 20
        walked, cursor = 0, True
        while cursor:
            reply = rpc.result("core.get_jobs", [], {"cursor": cursor, "limit": 100})
            walked += len(reply["results"])
            cursor = reply["next_cursor"]
        assert walked == 2_004
    finally:
        rpc.close()
