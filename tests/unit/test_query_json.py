"""Fields of a JSON record column in SQL: filters, orders and keysets agree with Python.

Records hold every kind of JSON value at the queried paths (missing, null, booleans, numbers
at the 64-bit edges, strings with NULs and case, dates, lists, objects). Each is stored as the
server stores it (jsonc) and decoded back for the oracle, as the server decodes stored rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from contextlib import closing
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from middlewared import jsonc
from middlewared.query import (
    SQLITE,
    Column,
    Fields,
    compile_filter,
    parse_filters,
    parse_options,
    query,
)
from middlewared.query.bounded_regex import literal_prefix
from middlewared.query.cursor import order_values
from middlewared.query.filters import BASE_OPS
from middlewared.query.options import position_key, position_of, sort_records, with_id_last
from middlewared.query.sqlorder import compile_sql_order, run_key
from middlewared.query.sqltext import Sql
from middlewared.query.stream import Collector
from tests.querycases import KINDS_OF_VALUE, cases

FIELDS = Fields({"id": Column("id", "int", nullable=False)}, SQLITE, "record")
TEXT = st.sampled_from(["", "a", "A", "b", "ab", "aB", "\0", "a\0", "a\0b", "é", "É", "1"])
NUMBERS = st.sampled_from(
    [0, 1, -1, 2, 0.5, -0.0, 1.0, 2.5, 2**53 + 1, 2**63 - 1, -(2**63), 2**63, 2**63 + 1, 2.0**63]
)
DATES = st.sampled_from(
    [{"$date": 0}, {"$date": 1}, {"$date": 1.5}, {"$date": True}, {"$date": 1, "x": 2}]
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT, TEXT, NUMBERS, DATES)
VALUES = st.one_of(
    SCALARS,
    SCALARS,
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(["c", "0", "$date"]), SCALARS, max_size=2),
)
# Mostly "a", so that records and conditions meet often.
PATHS = ["a", "a", "a", "a", "b.c", "b.0", "l", "l.0", "l.1", "a.0", "a.$date", "nope"]
ISO = st.sampled_from(["1970-01-01T00:00:00Z", "1970-01-01T00:00:00.001", "x", "2023-11-14"])


@st.composite
def records(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = []
    for i in range(draw(st.integers(1, 7))):
        row: dict[str, Any] = {"id": i + 1}
        if draw(st.integers(0, 3)):
            row["a"] = draw(VALUES)
        if draw(st.booleans()):
            row["b"] = draw(st.one_of(VALUES, st.fixed_dictionaries({}, optional={"c": VALUES})))
        if draw(st.booleans()):
            row["l"] = draw(st.one_of(st.lists(VALUES, max_size=3), VALUES))
        rows.append(row)
    return rows


@st.composite
def conditions(draw: st.DrawFn) -> list[Any]:
    base = draw(st.sampled_from(sorted(BASE_OPS)))
    op = ("C" if base != "~" and draw(st.booleans()) else "") + base
    value: Any
    if base in ("in", "nin"):
        value = draw(st.lists(st.one_of(SCALARS, ISO), max_size=3))
    elif base == "~":
        value = draw(st.sampled_from(["", "a", "A.", ".*b", "(?i)a", "\\d"]))
    elif base in ("^", "!^", "$", "!$"):
        value = draw(TEXT)
    else:
        value = draw(st.one_of(VALUES, ISO))
    return [draw(st.sampled_from(PATHS)), op, value]


FILTERS = st.lists(
    st.one_of(
        conditions(),
        st.lists(conditions(), min_size=1, max_size=3).map(lambda b: ["OR", b]),
    ),
    max_size=3,
)


def stored(rows: list[dict[str, Any]]) -> tuple[sqlite3.Connection, list[dict[str, Any]]]:
    """A table of the rows as the server stores them, and the rows as it reads them back."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, record TEXT NOT NULL)")
    texts = [(r["id"], jsonc.dumps(r)) for r in rows]
    conn.executemany("INSERT INTO jobs VALUES (?, ?)", texts)
    return conn, [jsonc.loads(t) for _, t in texts]


def scan(conn: sqlite3.Connection, sql: Sql, collector: Collector) -> list[dict[str, Any]]:
    cursor = conn.execute(sql.text, sql.params)
    while (batch := cursor.fetchmany(2)) and collector(batch):
        pass
    return collector.finish()


def decode(row: Any) -> dict[str, Any]:
    record: dict[str, Any] = jsonc.loads(row[0])
    return record


@settings(max_examples=1500, deadline=None)
@given(rows=records(), filters=FILTERS)
def test_json_filters_agree_with_python(rows: list[dict[str, Any]], filters: list[Any]) -> None:
    f = parse_filters(filters)
    where, residual = compile_filter(f, FIELDS)
    with closing(stored(rows)[0]) as conn:
        sql = Sql("SELECT record FROM jobs WHERE ") + where + Sql(" ORDER BY id")
        got = scan(conn, sql, Collector(decode, 1000, residual=residual))
        expected = [r for r in stored(rows)[1] if f.matches(r)]
    assert [r["id"] for r in got] == [r["id"] for r in expected]


ORDER_KEYS = st.builds(
    lambda prefix, minus, field: f"{prefix}{minus}{field}",
    st.sampled_from(["", "nulls_first:", "nulls_last:"]),
    st.sampled_from(["", "-"]),
    st.sampled_from(PATHS),
)


def _ordered(
    conn: sqlite3.Connection, order_by: list[str], after: list[Any] | None
) -> list[dict[str, Any]]:
    order = with_id_last(parse_options({"order_by": order_by}).order_by)
    sql_order = compile_sql_order(order, FIELDS)
    assert sql_order is not None
    where = Sql("TRUE")
    position = None
    if after is not None:
        where = sql_order.after(after)[0]
        position = position_of(order, after)
    sql = Sql("SELECT record FROM jobs WHERE ") + where + Sql(" ORDER BY ") + sql_order.order_by()
    collector = Collector(
        decode,
        1000,
        run_key=lambda r: run_key(sql_order, r),
        position=position_key(order),
        after=position,
    )
    return scan(conn, sql, collector)


@settings(max_examples=1000, deadline=None)
@given(rows=records(), order_by=st.lists(ORDER_KEYS, min_size=1, max_size=2), at=st.integers(0))
def test_json_orders_and_keysets_agree_with_python(
    rows: list[dict[str, Any]], order_by: list[str], at: int
) -> None:
    conn, decoded = stored(rows)
    order = with_id_last(parse_options({"order_by": order_by}).order_by)
    expected = sort_records(decoded, order)
    with closing(conn):
        assert [r["id"] for r in _ordered(conn, order_by, None)] == [r["id"] for r in expected]
        # The rows after any row's position: what a cursor at that row continues with.
        cut = at % len(expected)
        values = order_values(expected[cut], order)
        after = _ordered(conn, order_by, values)
    assert [r["id"] for r in after] == [r["id"] for r in expected[cut + 1 :]]


def test_paths_sqlite_cannot_name_stay_in_python() -> None:
    for field in ('a"b', "a\\b", "x.\n"):
        where, residual = compile_filter(parse_filters([[field, "=", 1]]), FIELDS)
        assert where == Sql("TRUE") and residual is not None
    many_indexes = "l.0.0.0.0"
    _, residual = compile_filter(parse_filters([[many_indexes, "=", 1]]), FIELDS)
    assert residual is not None


def test_exact_conditions_leave_no_residual() -> None:
    exact = [
        ["a", "=", "x"],
        ["a", "C!=", "X"],
        ["b.c", ">", 2],
        ["l.0", "in", [1, "a", None, {"$date": 5}]],
        ["l", "rin", 3],
        ["a", "^", "ab"],
        ["a", "nin", [True]],
        ["a", "<=", "2023-11-14"],
    ]
    for cond in exact:
        _, residual = compile_filter(parse_filters([cond]), FIELDS)
        assert residual is None, cond
    for cond in (["a", "~", "x"], ["a", "$", "x"], ["a", "rin", "x"], ["a", "=", [1]]):
        _, residual = compile_filter(parse_filters([cond]), FIELDS)
        assert residual is not None, cond


def _ids(rows: Iterable[Mapping[str, Any]]) -> list[int]:
    return [r["id"] for r in rows]


def test_every_operator_on_every_kind_of_value() -> None:
    rows = [{"id": i + 1, "a": v} for i, v in enumerate(KINDS_OF_VALUE)]
    rows.append({"id": len(rows) + 1})  # "a" missing
    conn, decoded = stored(rows)
    wrong = []
    with closing(conn):
        for op, operand in cases():
            f = parse_filters([["a", op, operand]])
            where, residual = compile_filter(f, FIELDS)
            sql = Sql("SELECT record FROM jobs WHERE ") + where + Sql(" ORDER BY id")
            got = _ids(scan(conn, sql, Collector(decode, 1000, residual=residual)))
            expected = [r["id"] for r in decoded if f.matches(r)]
            if got != expected:
                wrong.append((op, operand, got, expected))
    assert not wrong, wrong[:5]


def test_every_kind_of_value_sorts_as_python_sorts() -> None:
    rows = [{"id": i + 1, "a": v} for i, v in enumerate(KINDS_OF_VALUE * 2)]
    rows.append({"id": len(rows) + 1})
    conn, decoded = stored(rows)
    with closing(conn):
        for order_by in (["a"], ["-a"], ["nulls_last:a"], ["nulls_first:-a"], ["a", "-id"]):
            order = with_id_last(parse_options({"order_by": order_by}).order_by)
            expected = sort_records(decoded, order)
            assert _ids(_ordered(conn, order_by, None)) == _ids(expected), order_by
            for cut in range(0, len(expected), 7):
                after = _ordered(conn, order_by, order_values(expected[cut], order))
                assert _ids(after) == _ids(expected[cut + 1 :]), (order_by, cut)


def test_a_regex_narrows_sql_by_its_literal_head() -> None:
    for pattern, prefix in [
        ("nomatch", "nomatch"),
        ("ab*", "a"),
        ("ab+c", "ab"),
        ("x\\.y", "x"),
        ("ab{2}", "a"),
        ("(?i)ab", ""),
        ("ab|cd", ""),
        ("^ab", ""),
        (".*", ""),
    ]:
        assert literal_prefix(pattern) == prefix, pattern
    where, residual = compile_filter(parse_filters([["a", "~", "nomatch"]]), FIELDS)
    assert "nomatch" in where.params and residual is not None


def test_cursor_pages_in_python_walk_everything_once() -> None:
    rows = [{"id": i, "v": v} for i, v in enumerate(KINDS_OF_VALUE)]
    for order_by in ([], ["-v"], ["v", "-id"]):
        expected = query(rows, [], {"order_by": order_by})
        walked: list[Any] = []
        cursor: bool | str = True
        while cursor:
            page = query(rows, [], {"order_by": order_by, "limit": 4, "cursor": cursor})
            walked.extend(page["results"])
            cursor = page["next_cursor"]
        assert _ids(walked) == _ids(expected), order_by
