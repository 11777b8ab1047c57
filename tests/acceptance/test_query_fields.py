"""Filters and orders on fields that are not columns, over the wire, against the Python
evaluator (``middlewared.query``) on the same records: every operator and its C form, on
every kind of value a field may hold (missing, null, booleans, numbers at the 64-bit edges,
strings with NULs, dates, lists, objects)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from middlewared.query import parse_filters, query
from tests.querycases import KINDS_OF_VALUE, cases
from tests.rpcsync import Rpc
from tests.serverproc import ServerProc


@pytest.fixture(scope="module")
def kept(server: ServerProc) -> Iterator[tuple[Rpc, list[dict[str, Any]]]]:
    """One finished job per kind of value, holding it as argument, progress extra and result;
    and the records as the server returns them."""
    rpc = Rpc(server.ws_url, server.password)
    ids = [rpc.start("test.keep", value) for value in KINDS_OF_VALUE]
    for job_id in ids:
        rpc.call("core.job_wait", job_id)
    records = rpc.result("core.get_jobs", [["id", "in", ids]], {"order_by": ["id"]})
    assert [r["state"] for r in records] == ["SUCCESS"] * len(ids)
    yield rpc, records
    rpc.close()


@pytest.mark.parametrize("field", ["result", "arguments.0", "progress.extra.0", "result.c"])
def test_every_operator_agrees_with_python(
    kept: tuple[Rpc, list[dict[str, Any]]], field: str
) -> None:
    rpc, records = kept
    mine = ["id", "in", [r["id"] for r in records]]
    wrong: list[Any] = []
    for op, operand in cases():
        cond = [field, op, operand]
        got = rpc.result("core.get_jobs", [mine, cond], {"select": ["id"], "order_by": ["id"]})
        expected = [r["id"] for r in records if parse_filters([cond]).matches(r)]
        if [r["id"] for r in got] != expected:
            wrong.append((cond, got, expected))
        if field == "result":  # counts take the same compiled filter
            count = rpc.result("core.get_jobs", [mine, cond], {"count": True})
            if count != len(expected):
                wrong.append((cond, "count", count, len(expected)))
    assert not wrong, wrong[:5]


@pytest.mark.parametrize(
    "options",
    [
        {"order_by": ["result"]},
        {"order_by": ["-result"]},
        {"order_by": ["nulls_last:result", "-id"]},
        {"order_by": ["nulls_first:-arguments.0"]},
        {"order_by": ["result"], "offset": 17, "limit": 9},
        {"order_by": ["-progress.extra"], "offset": 40},
        {"order_by": ["result.c", "result"], "limit": 30},
    ],
    ids=repr,
)
def test_orders_agree_with_python(
    kept: tuple[Rpc, list[dict[str, Any]]], options: dict[str, Any]
) -> None:
    rpc, records = kept
    mine = [["id", "in", [r["id"] for r in records]]]
    got = rpc.result("core.get_jobs", mine, {**options, "select": ["id"]})
    expected = query(records, mine, {**options, "select": ["id"]})
    assert got == expected


@pytest.mark.parametrize("order_by", [["result"], ["-arguments.0", "id"], ["progress.extra"]])
def test_cursor_walks_agree_with_python(
    kept: tuple[Rpc, list[dict[str, Any]]], order_by: list[str]
) -> None:
    rpc, records = kept
    mine = [["id", "in", [r["id"] for r in records]]]
    walked: list[int] = []
    cursor: bool | str = True
    while cursor:
        options = {"order_by": order_by, "limit": 4, "cursor": cursor, "select": ["id"]}
        page = rpc.result("core.get_jobs", mine, options)
        walked.extend(r["id"] for r in page["results"])
        cursor = page["next_cursor"]
    expected = query(records, mine, {"order_by": order_by})
    assert walked == [r["id"] for r in expected]
