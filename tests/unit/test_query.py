"""Query filters and options: one table of cases, checked in Python and as SQL on SQLite."""

from __future__ import annotations

import dataclasses
import errno
import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewared.errors import NotFound, ValidationErrors
from middlewared.query import (
    POSTGRES,
    SQLITE,
    Column,
    CompiledWhere,
    Cond,
    Filter,
    Or,
    OrderKey,
    SelectField,
    apply_options,
    compile_order,
    compile_where,
    parse_filters,
    parse_options,
    query,
)
from middlewared.query.filters import BASE_OPS, resolve, split_field

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z
MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def d(ms: int) -> dict[str, int]:
    return {"$date": ms}


def progress(percent: Any, description: Any, **more: Any) -> dict[str, Any]:
    return {"percent": percent, "description": description, **more}


def job(
    id_: int,
    method: str,
    state: str,
    description: str | None,
    error: str | None,
    abortable: bool | None,
    score: float | None,
    retries: int | None,
    started: int,
    finished: int | None,
    **more: Any,
) -> dict[str, Any]:
    return {
        "id": id_,
        "method": method,
        "state": state,
        "description": description,
        "error": error,
        "abortable": abortable,
        "score": score,
        "retries": retries,
        "time_started": d(started),
        "time_finished": None if finished is None else d(finished),
        **more,
    }


# fmt: off
RECORDS: list[dict[str, Any]] = [
    job(1, "pool.scrub", "SUCCESS", "Scrub pool tank", None, True, 1.5, 0, T0, T0 + MINUTE,
        progress=progress(100, "Done", extra=None), arguments=["tank", {"threshold": 35}],
        message_ids=[10, 11]),
    job(2, "pool.import_pool", "FAILED", "Import pool Backup", "[ENOENT] Pool not found", False,
        None, 2, T0 + HOUR, T0 + HOUR + 5000,
        progress=progress(40, "Importing", extra=None), arguments=["Backup"], message_ids=[12]),
    job(3, "disk.wipe", "RUNNING", None, None, True, 0.25, None, T0 + 2 * HOUR, None,
        progress=progress(55, None, extra={"disk": "sda"}), arguments=["sda", "QUICK"],
        message_ids=[13]),
    job(4, "disk.Wipe", "WAITING", "", None, False, -3, 1, T0 + 3 * HOUR, None,
        progress=progress(None, None, extra=None), arguments=[], message_ids=[]),
    job(5, "replication.run", "ABORTED", "Replicate TANK/data", "Aborted by user", True, 10, 5,
        T0 + DAY, T0 + DAY + 90 * MINUTE,
        progress=progress(5, "Sending", extra=None), arguments=[3], message_ids=[14, 15, 16]),
    job(6, "cloudsync.sync", "SUCCESS", "Sync to S3", None, False, 2.0, 0, T0 + 2 * DAY,
        T0 + 2 * DAY + 1000,
        progress=progress(100, "Done"), arguments=["s3://bucket", 7], message_ids=[17]),
    job(7, "core.debug", "FAILED", "debug dump", "Timeout", None, None, 3, T0 + 3 * DAY,
        T0 + 3 * DAY + 2 * HOUR,
        progress=progress(99.5, "Dumping", extra=None), arguments=None, message_ids=[18]),
    job(8, "pool.scrub", "SUCCESS", "scrub POOL tank", None, True, 1.5, 0, T0 + 10 * DAY,
        T0 + 10 * DAY + MINUTE,
        progress=progress(100, "done", extra=None), arguments=["tank"], message_ids=[19]),
    job(9, "update.download", "RUNNING", "Download update", None, True, 0.5, None,
        T0 + 11 * DAY, None,
        progress=progress(12, "Downloading", extra=None), message_ids=[20]),
    job(10, "SMB.Configure", "SUCCESS", "Ümlaut Éé", None, False, 3, 0, T0 + 12 * DAY,
        T0 + 12 * DAY + 10,
        progress=progress(100, "Done", extra=None), arguments=["É"], message_ids=[21]),
]
# fmt: on

COLUMNS: dict[str, Column] = {
    "id": Column("id", "int"),
    "method": Column("method", "text"),
    "state": Column("state", "text"),
    "description": Column("description", "text"),
    "error": Column("error", "text"),
    "abortable": Column("abortable", "bool"),
    "score": Column("score", "float"),
    "retries": Column("retries", "int"),
    "time_started": Column("time_started", "date"),
    "time_finished": Column("time_finished", "date"),
}
SQL_TYPES = {
    "int": "INTEGER",
    "text": "TEXT",
    "date": "INTEGER",
    "bool": "INTEGER",
    "float": "REAL",
}

ALL = tuple(range(1, 11))


def but(*ids: int) -> tuple[int, ...]:
    return tuple(i for i in ALL if i not in ids)


# (filters, ids of the matching records, whether SQL does it all: residual is None)
CASES: list[tuple[list[Any], tuple[int, ...], bool]] = [
    ([], ALL, True),
    # = and !=, with nulls and type strictness
    ([["state", "=", "SUCCESS"]], (1, 6, 8, 10), True),
    ([["state", "=", "success"]], (), True),
    ([["state", "C=", "success"]], (1, 6, 8, 10), True),
    ([["state", "!=", "SUCCESS"]], (2, 3, 4, 5, 7, 9), True),
    ([["state", "C!=", "success"]], (2, 3, 4, 5, 7, 9), True),
    ([["description", "=", None]], (3,), True),
    ([["description", "!=", None]], but(3), True),
    ([["description", "!=", "Sync to S3"]], but(6), True),
    ([["error", "!=", "Timeout"]], but(7), True),
    ([["retries", "=", 0]], (1, 6, 8, 10), True),
    ([["retries", "C=", 0]], (1, 6, 8, 10), True),
    ([["retries", "=", 0.0]], (1, 6, 8, 10), True),
    ([["retries", "!=", 0]], (2, 3, 4, 5, 7, 9), True),
    ([["retries", "=", 2.5]], (), False),
    ([["score", "=", 1.5]], (1, 8), True),
    ([["score", "=", 2]], (6,), True),
    ([["abortable", "=", True]], (1, 3, 5, 8, 9), True),
    ([["abortable", "!=", False]], (1, 3, 5, 7, 8, 9), True),
    ([["abortable", "=", 1]], (), False),
    ([["retries", "=", False]], (), False),
    ([["retries", "=", "0"]], (), False),
    ([["retries", "!=", "0"]], ALL, False),
    ([["id", "=", {"$date": 1}]], (), False),
    ([["description", "C=", "ÜMLAUT Éé"]], (10,), True),
    ([["description", "C=", "ümlaut éé"]], (), True),  # case folding is ASCII-only
    # nested fields, list indexes, missing fields
    ([["progress.percent", "=", 100]], (1, 6, 8, 10), False),
    ([["progress.percent", "=", None]], (4,), False),
    ([["progress.extra.disk", "=", "sda"]], (3,), False),
    ([["progress.extra", "=", None]], but(3, 6), False),
    ([["progress.extra", "!=", None]], (3,), False),
    ([["progress.extra", "!=", 5]], but(6), False),
    ([["arguments.0", "=", "tank"]], (1, 8), False),
    ([["arguments.0", "!=", "tank"]], (2, 3, 5, 6, 10), False),
    ([["arguments.1.threshold", ">", 30]], (1,), False),
    ([["arguments", "=", ["tank"]]], (8,), False),
    ([["nonexistent", "=", None]], (), False),
    ([["nonexistent", "!=", 1]], (), False),
    ([["nonexistent", "nin", [1]]], (), False),
    # ordering comparisons
    ([["retries", ">", 1]], (2, 5, 7), True),
    ([["retries", ">=", 2]], (2, 5, 7), True),
    ([["retries", "<", 1]], (1, 6, 8, 10), True),
    ([["retries", "<=", 1]], (1, 4, 6, 8, 10), True),
    ([["retries", ">", 1.5]], (2, 5, 7), False),
    ([["score", "<", 0.5]], (3, 4), True),
    ([["score", ">=", 2]], (5, 6, 10), True),
    ([["state", ">", "RUNNING"]], (1, 4, 6, 8, 10), True),
    ([["state", "<", "b"]], ALL, True),
    ([["state", "C<", "b"]], (5,), True),
    ([["state", "C>", "RUNNING"]], (1, 4, 6, 8, 10), True),
    ([["state", "C>=", "success"]], (1, 4, 6, 8, 10), True),
    ([["state", "C<=", "FAILED"]], (2, 5, 7), True),
    ([["retries", "C>=", 3]], (5, 7), True),
    ([["description", "<", "E"]], (4, 9), True),
    ([["abortable", ">", False]], (1, 3, 5, 8, 9), True),
    ([["abortable", ">", 0]], (), False),
    ([["retries", ">", "1"]], (), False),
    ([["retries", ">", None]], (), False),
    ([["retries", "<=", None]], (), False),
    ([["progress.percent", ">", 50]], (1, 3, 6, 7, 8, 10), False),
    # ~ (anchored at the start, always in Python)
    ([["method", "~", r"pool\."]], (1, 2, 8), False),
    ([["method", "~", "scrub"]], (), False),
    ([["method", "~", ".*scrub$"]], (1, 8), False),
    ([["description", "~", ".*"]], but(3), False),
    ([["retries", "~", "0"]], (), False),
    # in, nin
    ([["state", "in", ["RUNNING", "WAITING"]]], (3, 4, 9), True),
    ([["state", "Cin", ["running", "Waiting"]]], (3, 4, 9), True),
    ([["state", "in", []]], (), True),
    ([["description", "in", [None, ""]]], (3, 4), True),
    ([["retries", "in", [None, 5]]], (3, 5, 9), True),
    ([["retries", "in", [0, True]]], (1, 6, 8, 10), False),
    ([["time_finished", "in", [None]]], (3, 4, 9), True),
    ([["state", "nin", ["SUCCESS", "FAILED"]]], (3, 4, 5, 9), True),
    ([["retries", "nin", [0, 1]]], (2, 5, 7), True),
    ([["retries", "nin", [None]]], but(3, 9), True),
    ([["retries", "nin", []]], but(3, 9), True),
    ([["method", "Cnin", ["DISK.WIPE", "pool.scrub"]]], (2, 5, 6, 7, 9, 10), True),
    ([["message_ids", "in", [[12], [19]]]], (2, 8), False),
    # rin, rnin: on lists and strings
    ([["message_ids", "rin", 15]], (5,), False),
    ([["message_ids", "rnin", 15]], but(5), False),
    ([["arguments", "rin", "tank"]], (1, 8), False),
    ([["arguments", "Crin", "TANK"]], (1, 8), False),
    ([["arguments", "rnin", "tank"]], (2, 3, 4, 5, 6, 10), False),
    ([["description", "rin", "pool"]], (1, 2), True),
    ([["description", "Crin", "POOL"]], (1, 2, 8), True),
    ([["description", "rnin", "pool"]], (4, 5, 6, 7, 8, 9, 10), True),
    ([["description", "Crnin", "pool"]], (4, 5, 6, 7, 9, 10), True),
    ([["description", "rin", ""]], but(3), True),
    ([["description", "rnin", ""]], (), True),
    ([["retries", "rin", 1]], (), False),
    ([["description", "rin", 1]], (), False),
    # ^ !^ $ !$
    ([["method", "^", "pool."]], (1, 2, 8), True),
    ([["method", "C^", "DISK."]], (3, 4), True),
    ([["method", "!^", "pool."]], (3, 4, 5, 6, 7, 9, 10), True),
    ([["method", "C!^", "POOL."]], (3, 4, 5, 6, 7, 9, 10), True),
    ([["description", "!^", "S"]], (2, 4, 5, 7, 8, 9, 10), True),
    ([["description", "^", ""]], but(3), True),
    ([["description", "^", "Scrub pool tank and more"]], (), True),
    ([["method", "$", ".scrub"]], (1, 8), True),
    ([["method", "C$", "WIPE"]], (3, 4), True),
    ([["method", "!$", "scrub"]], (2, 3, 4, 5, 6, 7, 9, 10), True),
    ([["method", "C!$", "SCRUB"]], (2, 3, 4, 5, 6, 7, 9, 10), True),
    ([["description", "$", "tank"]], (1, 8), True),
    ([["description", "$", "more than Scrub pool tank"]], (), True),
    ([["description", "$", ""]], but(3), True),
    ([["description", "!$", ""]], (), True),
    ([["description", "C$", "Éé"]], (10,), True),
    ([["arguments", "^", "tank"]], (), False),
    ([["retries", "^", "0"]], (), False),
    ([["progress.description", "C^", "do"]], (1, 6, 8, 9, 10), False),
    ([["progress.description", "!^", "D"]], (2, 5, 8), False),
    # dates: {"$date": ms}, ISO-8601 with and without a timezone, plain milliseconds
    ([["time_started", "=", {"$date": T0}]], (1,), True),
    ([["time_started", ">=", "2023-11-15T22:13:20Z"]], (5, 6, 7, 8, 9, 10), True),
    ([["time_started", "<", "2023-11-14T23:13:20"]], (1,), True),
    ([["time_started", "<=", "2023-11-15T00:13:20+01:00"]], (1, 2), True),
    ([["time_finished", ">", {"$date": T0 + DAY}]], (5, 6, 7, 8, 10), True),
    ([["time_finished", "=", None]], (3, 4, 9), True),
    ([["time_finished", "!=", "2023-11-14T22:14:20Z"]], but(1), True),
    ([["time_started", "in", ["2023-11-14T22:13:20Z", {"$date": T0 + HOUR}]]], (1, 2), True),
    ([["time_started", "nin", ["2023-11-14T22:13:20+00:00", None]]], but(1), True),
    ([["time_started", "<", T0 + 1]], (1,), True),
    ([["time_started", "=", "2023-11-14T22:13:20.000500Z"]], (), False),
    ([["time_started", ">", "2023-11-14T22:13:20.000500Z"]], but(1), False),
    ([["time_started", ">", "not a date"]], (), False),
    ([["time_started", "!=", "not a date"]], ALL, False),
    # OR, AND groups, nesting up to 3 levels
    ([["OR", [["id", "=", 4]]]], (4,), True),
    ([["OR", [["state", "=", "FAILED"], ["retries", "=", 5]]]], (2, 5, 7), True),
    (
        [["OR", [[["state", "=", "SUCCESS"], ["score", ">", 1.7]], ["state", "=", "WAITING"]]]],
        (4, 6, 10),
        True,
    ),
    (
        [["abortable", "=", True], ["OR", [["method", "^", "pool."], ["description", "=", None]]]],
        (1, 3, 8),
        True,
    ),
    ([["OR", [["progress.percent", "<", 50], ["state", "=", "ABORTED"]]]], (2, 5, 9), False),
    (
        [["state", "=", "RUNNING"], ["OR", [["progress.percent", ">", 50], ["error", "!=", None]]]],
        (3,),
        False,
    ),
    (
        [
            [
                "OR",
                [
                    ["OR", [["OR", [["id", "=", 1], ["id", "=", 2]]], ["id", "=", 3]]],
                    [["id", ">", 8], ["OR", [["state", "=", "SUCCESS"]]]],
                ],
            ]
        ],
        (1, 2, 3, 10),
        True,
    ),
    (
        [
            [
                "OR",
                [
                    [
                        [
                            "OR",
                            [
                                [
                                    ["OR", [["id", "<", 3], ["method", "~", "core"]]],
                                    ["score", "=", None],
                                ],
                                ["id", "=", 5],
                            ],
                        ],
                        ["retries", ">=", 2],
                    ]
                ],
            ]
        ],
        (2, 5, 7),
        False,
    ),
]


def _case_id(case: tuple[list[Any], tuple[int, ...], bool]) -> str:
    return json.dumps(case[0], ensure_ascii=False)


PARAMS = [pytest.param(*case, id=_case_id(case)) for case in CASES]


# --- SQL on a real SQLite database ------------------------------------------------------------


def _column_value(record: Mapping[str, Any], field: str, column: Column) -> Any:
    value = resolve(record, split_field(field) or ())
    if column.kind == "date" and value is not None:
        return value["$date"]
    return value


def make_db(records: list[dict[str, Any]]) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    names = [c.name for c in COLUMNS.values()]
    decls = ", ".join(f"{c.name} {SQL_TYPES[c.kind]}" for c in COLUMNS.values())
    conn.execute(f"CREATE TABLE jobs ({decls}, record TEXT NOT NULL)")
    marks = ", ".join("?" * (len(names) + 1))
    insert = f"INSERT INTO jobs ({', '.join(names)}, record) VALUES ({marks})"
    rows = [[*(_column_value(r, f, c) for f, c in COLUMNS.items()), json.dumps(r)] for r in records]
    conn.executemany(insert, rows)
    return conn


def sql_ids(conn: sqlite3.Connection, f: Filter) -> tuple[list[int], CompiledWhere]:
    """The ids SQL selects, with the residual applied in Python to its rows."""
    compiled = compile_where(f, COLUMNS, SQLITE)
    sql = f"SELECT record FROM jobs WHERE {compiled.sql} ORDER BY id"
    cursor = conn.execute(sql, compiled.params)
    rows = [json.loads(text) for (text,) in cursor]
    if compiled.residual is not None:
        rows = [row for row in rows if compiled.residual.matches(row)]
    return [row["id"] for row in rows], compiled


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    with closing(make_db(RECORDS)) as conn:
        yield conn


@pytest.mark.parametrize(("filters", "expected", "sql_only"), PARAMS)
def test_filter_in_python(filters: list[Any], expected: tuple[int, ...], sql_only: bool) -> None:
    f = parse_filters(filters)
    assert tuple(r["id"] for r in RECORDS if f.matches(r)) == expected


@pytest.mark.parametrize(("filters", "expected", "sql_only"), PARAMS)
def test_filter_in_sql(
    db: sqlite3.Connection, filters: list[Any], expected: tuple[int, ...], sql_only: bool
) -> None:
    ids, compiled = sql_ids(db, parse_filters(filters))
    assert tuple(ids) == expected
    assert (compiled.residual is None) == sql_only, compiled


def test_residual_keeps_only_what_sql_cannot_do() -> None:
    f = parse_filters(
        [
            ["state", "=", "RUNNING"],
            ["progress.percent", ">", 50],
            ["OR", [["id", "=", 1], ["method", "~", "x"]]],
            ["OR", [["id", "=", 1], ["id", "=", 2]]],
        ]
    )
    compiled = compile_where(f, COLUMNS, SQLITE)
    assert compiled.residual == Filter((f.conds[1], f.conds[2]))
    assert compiled.sql == '("state" = ?) AND ((("id" = ?) OR ("id" = ?)))'
    assert compiled.params == ["RUNNING", 1, 2]


def test_values_are_always_parameters() -> None:
    hostile = "x'; DROP TABLE jobs; --"
    f = parse_filters([["state", "C^", hostile], ["method", "in", [hostile, None]]])
    for dialect in (SQLITE, POSTGRES):
        compiled = compile_where(f, COLUMNS, dialect)
        assert compiled.residual is None
        assert "DROP" not in compiled.sql and "drop" not in compiled.sql
        assert hostile in compiled.params


def test_postgres_rendering() -> None:
    f = parse_filters([["state", "C>", "A"], ["description", "$", "pool"]])
    compiled = compile_where(f, COLUMNS, POSTGRES)
    assert compiled.sql == (
        '(LOWER("state" COLLATE "C") COLLATE "C" > CAST(%s AS text)) AND '
        '((length("description") >= CAST(%s AS integer) AND '
        'substr("description", length("description") - CAST(%s AS integer) + 1) '
        "= CAST(%s AS text)))"
    )
    assert compiled.params == ["a", 4, 4, "pool"]
    asyncpg = dataclasses.replace(POSTGRES, paramstyle="numeric")
    numeric = compile_where(f, COLUMNS, asyncpg)
    assert "$1" in numeric.sql and "$4" in numeric.sql and "%s" not in numeric.sql
    later = compile_where(f, COLUMNS, asyncpg, first_param=3)
    assert "$3" in later.sql and "$6" in later.sql and "$1" not in later.sql
    order = compile_order(parse_options({"order_by": ["-state", "id"]}).order_by, COLUMNS, POSTGRES)
    assert order == '"state" COLLATE "C" DESC NULLS LAST, "id" ASC NULLS FIRST'


def test_column_names_are_checked() -> None:
    with pytest.raises(ValueError, match="column name"):
        Column('x"; DROP TABLE jobs; --', "int")


def test_filter_tree_is_immutable() -> None:
    source: list[Any] = [["state", "in", ["A", "B"]], ["OR", [["id", "=", 1]]]]
    f = parse_filters(source)
    source[0][2].append("C")
    first = f.conds[0]
    assert isinstance(first, Cond) and first.value == ("A", "B")
    assert isinstance(f.conds[1], Or)
    with pytest.raises(AttributeError):
        first.op = "="  # type: ignore[misc]


# --- validation -------------------------------------------------------------------------------

DEEP_OR: list[Any] = ["OR", [["OR", [["OR", [["OR", [["id", "=", 1]]]]]]]]]

BAD_FILTERS: list[tuple[Any, str, str]] = [
    ("state", "filters", "must be a list"),
    ({"state": "RUNNING"}, "filters", "must be a list"),
    ([["state", "==", 1]], "filters.0", "unknown operator '=='"),
    ([["state", "C~", "x"]], "filters.0", "not allowed on ~"),
    ([["state", "Cfoo", "x"]], "filters.0", "unknown operator"),
    ([["state", 5, "x"]], "filters.0", "unknown operator"),
    ([["state", "=", 1], ["state"]], "filters.1", "malformed condition"),
    ([["state", "=", 1], "state"], "filters.1", "malformed condition"),
    ([["state", "=", 1, 2]], "filters.0", "malformed condition"),
    ([[1, "=", 1]], "filters.0", "invalid field name"),
    ([["a..b", "=", 1]], "filters.0", "invalid field name"),
    ([["", "=", 1]], "filters.0", "invalid field name"),
    ([["OR", []]], "filters.0", "non-empty list of branches"),
    ([["OR", "state"]], "filters.0", "non-empty list of branches"),
    ([["OR", [[]]]], "filters.0.1.0", "empty OR branch"),
    ([["OR", [["a", "=", 1], ["b", "?", 2]]]], "filters.0.1.1", "unknown operator '?'"),
    ([["OR", [[["a", "=", 1], ["b", "?", 2]]]]], "filters.0.1.0.1", "unknown operator '?'"),
    ([["id", "=", 1], DEEP_OR], "filters.1.1.0.1.0.1.0", "deeper than 3 levels"),
    ([["state", "in", "RUNNING"]], "filters.0", "expects a list"),
    ([["state", "nin", None]], "filters.0", "expects a list"),
    ([["state", "~", "("]], "filters.0", "invalid regular expression"),
    ([["state", "~", 5]], "filters.0", "expects a string"),
    ([["state", "^", 5]], "filters.0", "expects a string"),
    ([["state", "!$", None]], "filters.0", "expects a string"),
]


@pytest.mark.parametrize(("filters", "field", "message"), BAD_FILTERS)
def test_invalid_filters(filters: Any, field: str, message: str) -> None:
    with pytest.raises(ValidationErrors) as info:
        parse_filters(filters)
    assert [(f, e) for f, _, e in info.value.errors] == [(field, errno.EINVAL)]
    assert message in info.value.errors[0][1]


def test_all_filter_errors_are_reported() -> None:
    with pytest.raises(ValidationErrors) as info:
        parse_filters([["a", "?", 1], ["b", "=", 1], ["c", "in", 1]])
    assert [f for f, _, _ in info.value.errors] == ["filters.0", "filters.2"]


def test_or_nesting_of_three_levels_is_accepted() -> None:
    parse_filters([["OR", [["OR", [["OR", [["id", "=", 1]]]]]]]])


BAD_OPTIONS: list[tuple[Any, str, str]] = [
    ("x", "options", "must be an object"),
    ({"bogus": 1}, "options.bogus", "unknown option"),
    ({"limit": -1}, "options.limit", "non-negative integer"),
    ({"limit": "5"}, "options.limit", "non-negative integer"),
    ({"limit": True}, "options.limit", "non-negative integer"),
    ({"offset": 1.5}, "options.offset", "non-negative integer"),
    ({"count": 1}, "options.count", "boolean"),
    ({"get": "yes"}, "options.get", "boolean"),
    ({"count": True, "get": True}, "options.get", "cannot be combined"),
    ({"order_by": "id"}, "options.order_by", "list"),
    ({"order_by": ["id", 5]}, "options.order_by.1", "field name"),
    ({"order_by": [""]}, "options.order_by.0", "invalid field name"),
    ({"order_by": ["-"]}, "options.order_by.0", "invalid field name"),
    ({"order_by": ["nulls_first:"]}, "options.order_by.0", "invalid field name"),
    ({"order_by": ["-nulls_last:id"]}, "options.order_by.0", "before '-'"),
    ({"select": "id"}, "options.select", "list"),
    ({"select": [["id"]]}, "options.select.0", "[field, alias]"),
    ({"select": [5]}, "options.select.0", "[field, alias]"),
    ({"select": [["a..b", "x"]]}, "options.select.0", "invalid field name"),
    ({"extra": []}, "options.extra", "object"),
]


@pytest.mark.parametrize(("options", "field", "message"), BAD_OPTIONS)
def test_invalid_options(options: Any, field: str, message: str) -> None:
    with pytest.raises(ValidationErrors) as info:
        parse_options(options)
    assert [(f, e) for f, _, e in info.value.errors] == [(field, errno.EINVAL)]
    assert message in info.value.errors[0][1]


# --- options ----------------------------------------------------------------------------------


def test_parse_options() -> None:
    opts = parse_options(
        {
            "order_by": ["-id", "nulls_first:score", "nulls_last:-time_finished", "state"],
            "limit": 5,
            "offset": 2,
            "select": ["id", ["progress.percent", "pct"]],
            "extra": {"raw": True},
        }
    )
    assert opts.order_by == (
        OrderKey("id", True, None),
        OrderKey("score", False, True),
        OrderKey("time_finished", True, False),
        OrderKey("state", False, None),
    )
    assert (opts.limit, opts.offset, opts.count, opts.get) == (5, 2, False, False)
    assert opts.select == (SelectField("id"), SelectField("progress.percent", "pct"))
    assert opts.extra == {"raw": True}
    assert parse_options(None) == parse_options({})


def ids_of(result: Any) -> list[int]:
    return [r["id"] for r in result]


ORDERINGS: list[tuple[list[str], list[int]]] = [
    (["retries"], [3, 9, 1, 6, 8, 10, 4, 2, 7, 5]),
    (["-retries"], [5, 7, 2, 4, 1, 6, 8, 10, 3, 9]),
    (["nulls_last:retries"], [1, 6, 8, 10, 4, 2, 7, 5, 3, 9]),
    (["nulls_first:-retries"], [3, 9, 5, 7, 2, 4, 1, 6, 8, 10]),
    (["nulls_last:-retries"], [5, 7, 2, 4, 1, 6, 8, 10, 3, 9]),
    (["state", "-id"], [5, 7, 2, 9, 3, 10, 8, 6, 1, 4]),
    (["-abortable", "score"], [3, 9, 1, 8, 5, 2, 4, 6, 10, 7]),
    (["progress.percent"], [4, 5, 9, 2, 3, 7, 1, 6, 8, 10]),
    (["time_finished"], [3, 4, 9, 1, 2, 5, 6, 7, 8, 10]),
    (["-time_finished"], [10, 8, 7, 6, 5, 2, 1, 3, 4, 9]),
    (["arguments.0"], [4, 7, 9, 5, 2, 6, 3, 1, 8, 10]),
    (["description"], [3, 4, 9, 2, 5, 1, 6, 7, 8, 10]),
]


@pytest.mark.parametrize(("order_by", "expected"), ORDERINGS)
def test_order_by(order_by: list[str], expected: list[int]) -> None:
    assert ids_of(query(RECORDS, [], {"order_by": order_by})) == expected


def test_order_by_mixed_types_never_raises() -> None:
    records: list[dict[str, Any]] = [
        {"id": 1, "v": "b"}, {"id": 2, "v": [1]}, {"id": 3, "v": None}, {"id": 4, "v": 2.5},
        {"id": 5, "v": True}, {"id": 6}, {"id": 7, "v": {"a": 1}}, {"id": 8, "v": d(1)},
        {"id": 9, "v": "a"}, {"id": 10, "v": -1}, {"id": 11, "v": False},
    ]  # fmt: skip
    assert ids_of(query(records, [], {"order_by": ["v"]})) == [3, 6, 11, 5, 10, 8, 4, 9, 1, 2, 7]
    assert ids_of(query(records, [], {"order_by": ["-v"]})) == [7, 2, 1, 9, 4, 8, 10, 5, 11, 3, 6]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"order_by": ["id"], "offset": 2, "limit": 3}, [3, 4, 5]),
        ({"order_by": ["-id"], "limit": 2}, [10, 9]),
        ({"order_by": ["id"], "limit": 0}, list(ALL)),
        ({"order_by": ["id"], "offset": 9}, [10]),
        ({"order_by": ["id"], "offset": 20}, []),
    ],
)
def test_limit_and_offset(options: dict[str, Any], expected: list[int]) -> None:
    assert ids_of(query(RECORDS, [], options)) == expected


def test_count_ignores_limit_and_offset() -> None:
    assert query(RECORDS, [], {"count": True, "limit": 2, "offset": 1}) == 10
    assert query(RECORDS, [["state", "=", "SUCCESS"]], {"count": True}) == 4
    assert query(RECORDS, [["state", "=", "nope"]], {"count": True}) == 0


def test_get() -> None:
    assert query(RECORDS, [], {"get": True, "order_by": ["-id"]}) is RECORDS[9]
    assert query(RECORDS, [], {"get": True, "order_by": ["-id"], "offset": 1})["id"] == 9
    selected = query(RECORDS, [["id", "=", 3]], {"get": True, "select": ["state"]})
    assert selected == {"state": "RUNNING"}
    with pytest.raises(NotFound, match="no match") as info:
        query(RECORDS, [["state", "=", "nope"]], {"get": True})
    assert info.value.errno == errno.ENOENT


def test_select() -> None:
    options = {
        "order_by": ["id"],
        "limit": 1,
        "select": ["id", "progress.percent", ["progress.description", "desc"], "nope.x"],
    }
    assert query(RECORDS, [], options) == [{"id": 1, "progress": {"percent": 100}, "desc": "Done"}]
    rows = query(RECORDS, [["id", "in", [7, 9]]], {"select": ["id", "arguments.0"]})
    assert rows == [{"id": 7}, {"id": 9}]
    rows = query(RECORDS, [["id", "=", 1]], {"select": [["arguments.1.threshold", "t"], "id"]})
    assert rows == [{"t": 35, "id": 1}]


def test_select_whole_and_part_does_not_change_records() -> None:
    before = json.dumps(RECORDS)
    for fields in (["progress", "progress.percent"], ["progress.percent", "progress"]):
        rows = query(RECORDS, [["id", "=", 2]], {"select": fields})
        assert rows == [{"progress": RECORDS[1]["progress"]}]
    rows = query(RECORDS, [["id", "=", 2]], {"select": [["id", "progress"], "progress.percent"]})
    assert rows == [{"progress": 2}]
    assert json.dumps(RECORDS) == before


@pytest.mark.parametrize(
    "order_by",
    [
        ["id"],
        ["-id"],
        ["retries"],
        ["-retries"],
        ["nulls_first:retries"],
        ["nulls_last:retries"],
        ["nulls_first:-retries"],
        ["nulls_last:-retries"],
        ["-score", "state"],
        ["abortable", "-description"],
        ["nulls_last:time_finished", "-method"],
        ["nulls_first:-error", "time_started"],
    ],
)
def test_sql_order_equals_python_order(db: sqlite3.Connection, order_by: list[str]) -> None:
    keys = parse_options({"order_by": order_by}).order_by
    order = compile_order(keys, COLUMNS, SQLITE)
    assert order is not None
    sql_order = [i for (i,) in db.execute(f"SELECT id FROM jobs ORDER BY {order}, id")]
    assert sql_order == ids_of(query(RECORDS, [], {"order_by": order_by}))


def test_compile_order_needs_columns() -> None:
    assert compile_order((OrderKey("progress.percent"),), COLUMNS, SQLITE) is None
    assert compile_order((), COLUMNS, SQLITE) == ""


# --- properties -------------------------------------------------------------------------------

TEXT = st.text(alphabet="aAbé É\u212a", max_size=3)
MS = st.integers(T0 - 3, T0 + 3)
EXTRA_FIELDS = {"progress.percent": "float"}
FILTER_FIELDS = {**{f: c.kind for f, c in COLUMNS.items()}, **EXTRA_FIELDS}


def _iso(micros: int, offset_minutes: int | None, zulu: bool) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    if offset_minutes is None:
        return moment.replace(tzinfo=None).isoformat()
    text = moment.astimezone(timezone(timedelta(minutes=offset_minutes))).isoformat()
    return text.replace("+00:00", "Z") if zulu else text


ISO = st.builds(
    _iso,
    st.integers(T0 * 1000 - 3000, T0 * 1000 + 3000).map(lambda us: us - us % 500),
    st.none() | st.integers(-600, 600),
    st.booleans(),
)
RECORD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "int": st.integers(-3, 3) | st.integers(-(2**63), 2**63 - 1),
    "float": st.integers(-3, 3) | st.floats(-4, 4, allow_nan=False) | st.sampled_from([2.0**60]),
    "text": TEXT,
    "bool": st.booleans(),
    "date": MS.map(d),
}
ANY_VALUE: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**60 + 1, 2**53 + 1, 0.0, -0.0, 1.0, 2.5, 2.0**60]),
    st.floats(allow_nan=False, allow_infinity=False),
    TEXT,
    MS.map(d),
    ISO,
    st.lists(st.integers(-1, 1), max_size=1),
)
REGEX = st.sampled_from(["", "a", "A.", ".*b", "[aé]", "z|b", "(?i)a", r"\d"])


def _value_for(kind: str) -> st.SearchStrategy[Any]:
    native = RECORD_VALUES[kind]
    if kind == "date":
        native = native | ISO | MS
    # Mostly values of the field's kind, so that conditions compile and records match.
    return st.integers(0, 3).flatmap(lambda i: native if i else ANY_VALUE)


TEXT_OPS = {"rin", "rnin", "~", "^", "!^", "$", "!$"}
TEXT_FIELDS = sorted(f for f, kind in FILTER_FIELDS.items() if kind == "text")


@st.composite
def conditions(draw: st.DrawFn) -> list[Any]:
    base = draw(st.sampled_from(sorted(BASE_OPS)))
    op = ("C" if base != "~" and draw(st.booleans()) else "") + base
    text_field = base in TEXT_OPS and draw(st.integers(0, 3)) > 0
    field = draw(st.sampled_from(TEXT_FIELDS if text_field else sorted(FILTER_FIELDS)))
    values = _value_for(FILTER_FIELDS[field])
    value: Any
    if base in ("in", "nin"):
        value = draw(st.lists(values, max_size=3))
    elif base == "~":
        value = draw(REGEX)
    elif base in ("^", "!^", "$", "!$"):
        value = draw(TEXT)
    else:
        value = draw(values)
    return [field, op, value]


def _nodes(depth: int) -> st.SearchStrategy[list[Any]]:
    if depth == 0:
        return conditions()
    inner = _nodes(depth - 1)
    branch = inner | st.lists(inner, min_size=1, max_size=3)
    ors = st.lists(branch, min_size=1, max_size=3).map(lambda branches: ["OR", branches])
    return st.integers(0, 2).flatmap(lambda i: conditions() if i else ors)


FILTERS = st.lists(_nodes(3), max_size=3)
RECORD = st.fixed_dictionaries(
    {f: st.none() | RECORD_VALUES[c.kind] for f, c in COLUMNS.items() if f != "id"},
    optional={
        "progress": st.fixed_dictionaries(
            {}, optional={"percent": st.none() | RECORD_VALUES["float"]}
        )
    },
)


def _numbered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**record, "id": i} for i, record in enumerate(records)]


@settings(max_examples=400, deadline=None)
@given(records=st.lists(RECORD, min_size=1, max_size=8), filters=FILTERS)
def test_sql_agrees_with_python(records: list[dict[str, Any]], filters: list[Any]) -> None:
    rows = _numbered(records)
    f = parse_filters(filters)
    expected = [r["id"] for r in rows if f.matches(r)]
    with closing(make_db(rows)) as conn:
        ids, _ = sql_ids(conn, f)
    assert ids == expected


ORDER_KEYS = st.builds(
    lambda prefix, minus, field: f"{prefix}{minus}{field}",
    st.sampled_from(["", "nulls_first:", "nulls_last:"]),
    st.sampled_from(["", "-"]),
    st.sampled_from(sorted(COLUMNS)),
)


@settings(max_examples=200, deadline=None)
@given(records=st.lists(RECORD, max_size=8), order_by=st.lists(ORDER_KEYS, max_size=3))
def test_sql_order_agrees_with_python(records: list[dict[str, Any]], order_by: list[str]) -> None:
    rows = _numbered(records)
    keys = parse_options({"order_by": order_by}).order_by
    order = compile_order(keys, COLUMNS, SQLITE)
    assert order is not None
    with closing(make_db(rows)) as conn:
        suffix = f"{order}, id" if order else "id"
        sql_order = [i for (i,) in conn.execute(f"SELECT id FROM jobs ORDER BY {suffix}")]
    assert sql_order == ids_of(apply_options(rows, parse_options({"order_by": order_by})))
