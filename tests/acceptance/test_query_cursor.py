"""Keyset paging of core.get_jobs: a cursor walk sees every job that existed when it began
exactly once, in order, while other jobs are being added; bad cursors are -32602."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from middlewared.query import query
from middlewared_client import Client
from tests.rpcsync import Rpc, wait_ended
from tests.serverproc import ServerProc

VALUES: list[Any] = [None, 3, "b", "a\0b", [2], {"n": 1}, 2.5, "A", True, [1, "x"]]


@pytest.fixture
def busy(make_server: Callable[..., ServerProc]) -> Iterator[tuple[ServerProc, list[int]]]:
    """A server with 150 finished jobs, and another client adding jobs all along."""
    srv = make_server()
    rpc = Rpc(srv.ws_url, srv.password)
    ids = [rpc.start("test.keep", VALUES[i % len(VALUES)]) for i in range(150)]
    wait_ended(rpc, ids)
    rpc.close()
    stop = threading.Event()
    adder = threading.Thread(target=_keep_adding, args=(srv, stop), daemon=True)
    adder.start()
    yield srv, ids
    stop.set()
    adder.join(30)


def _keep_adding(srv: ServerProc, stop: threading.Event) -> None:
    rpc = Rpc(srv.ws_url, srv.password)
    try:
        n = 0
        while not stop.is_set():
            rpc.start("test.keep", VALUES[n % len(VALUES)])
            n += 1
    finally:
        rpc.close()


def _walk(rpc: Rpc, filters: list[Any], options: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor: bool | str = True
    while cursor:
        page = rpc.result("core.get_jobs", filters, {**options, "cursor": cursor})
        assert len(page["results"]) <= options["limit"]
        rows.extend(page["results"])
        cursor = page["next_cursor"]
    return rows


@pytest.mark.parametrize(
    "order_by",
    [[], ["-id"], ["method", "-id"], ["-state", "time_finished"], ["result"], ["-arguments.0"]],
    ids=repr,
)
def test_a_walk_sees_every_job_once_in_order(
    busy: tuple[ServerProc, list[int]], order_by: list[str]
) -> None:
    srv, existing = busy
    rpc = Rpc(srv.ws_url, srv.password)
    try:
        filters = [["method", "=", "test.keep"]]
        rows = _walk(rpc, filters, {"order_by": order_by, "limit": 7})
    finally:
        rpc.close()
    seen = [r["id"] for r in rows]
    # Jobs that ended before the walk began hold still: each is seen exactly once. (A job
    # added meanwhile may move as it runs, under an order by state or finishing time.)
    assert sorted(i for i in seen if i in set(existing)) == sorted(existing)
    # In order: sorting them changes nothing (the id breaks ties, as in the walk).
    by_id = order_by if any(k.lstrip("-") == "id" for k in order_by) else [*order_by, "id"]
    assert [r["id"] for r in query(rows, [], {"order_by": by_id})] == seen, "out of order"


def test_the_client_iterates_jobs_page_by_page(busy: tuple[ServerProc, list[int]]) -> None:
    srv, existing = busy
    with Client(srv.ws_url, username="root", password=srv.password) as client:
        ids = [
            job["id"]
            for job in client.iter_jobs(
                [["method", "=", "test.keep"]], {"order_by": ["-id"]}, page_size=20
            )
        ]
    assert sorted(i for i in ids if i in set(existing)) == sorted(existing)
    assert ids == sorted(ids, reverse=True)


def test_bad_cursors_are_invalid_params(server: ServerProc) -> None:
    rpc = Rpc(server.ws_url, server.password)
    try:
        for _ in range(3):
            rpc.start("test.keep", 1)
        first = rpc.result("core.get_jobs", [], {"cursor": True, "limit": 1})
        token = first["next_cursor"]
        assert isinstance(token, str)
        forged = _forge(token, id_value="x")
        for filters, options, why in (
            ([], {"cursor": "not a cursor", "limit": 1}, "not a cursor this server gave"),
            ([], {"cursor": token[:-4], "limit": 1}, "not a cursor this server gave"),
            ([], {"cursor": forged, "limit": 1}, "not a cursor this server gave"),
            ([], {"cursor": token, "order_by": ["-id"]}, "belongs to another query"),
            ([["id", ">", 0]], {"cursor": token}, "belongs to another query"),
            ([], {"cursor": token, "offset": 2}, "cannot be combined with offset"),
            ([], {"cursor": True, "count": True}, "cannot be combined with count"),
            ([], {"cursor": 5}, "must be true"),
        ):
            error = rpc.call("core.get_jobs", filters, options)["error"]
            assert error["code"] == -32602, (options, error)
            assert error["data"]["extra"][0][0] == "options.cursor", error
            assert why in error["data"]["reason"], (options, error)
        second = rpc.result("core.get_jobs", [], {"cursor": token, "limit": 1})
        assert second["results"][0]["id"] > first["results"][0]["id"]
    finally:
        rpc.close()


def _forge(token: str, id_value: Any) -> str:
    """The same cursor with its id replaced: a value of the wrong kind for the column."""
    data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    data["k"][-1] = id_value
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
