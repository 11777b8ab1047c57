"""Compile parsed filters and orderings to portable SQL with exactly the Python semantics.

Fields stored in columns compile as columns; with a JSON document column (the whole record)
and a dialect that reads JSON, every other field compiles to the JSON functions
(``jsonsql``). What SQL cannot decide exactly stays a residual for Python, behind a superset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from middlewared import jsonc
from middlewared.query.filters import Cond, Filter, Node, Or, is_number
from middlewared.query.jsonpath import SQLITE_JSON, JsonNode, JsonSyntax
from middlewared.query.jsonsql import compile_json_cond
from middlewared.query.options import OrderKey
from middlewared.query.sqltext import FALSE, TRUE, Sql

Kind = Literal["int", "text", "date", "bool", "float"]
KINDS: Final = frozenset({"int", "text", "date", "bool", "float"})
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT64: Final = range(-(2**63), 2**63)
_EXACT_FLOAT_INT: Final = 2**53
_P: Final = "?"


@dataclass(frozen=True)
class Column:
    """A queryable field stored in a column.

    The contract: the record's field is always present and holds a value of this kind or null,
    stored as is: ``int`` (64-bit), ``float`` (ints within 2**53), ``text`` (no NUL), ``bool``
    (stored as the integers 0 and 1, as the portable schema does), ``date`` (a
    ``{"$date": ms}`` object, stored as the integer milliseconds).
    """

    name: str
    kind: Kind
    # False when the schema says NOT NULL: keyset conditions on it can then use its index.
    nullable: bool = True

    def __post_init__(self) -> None:
        if not _IDENTIFIER.fullmatch(self.name):
            raise ValueError(f"invalid SQL column name {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown column kind {self.kind!r}")

    @property
    def quoted(self) -> str:
        return f'"{self.name}"'


@dataclass(frozen=True)
class Dialect:
    """What differs between SQL engines, placeholders included."""

    name: str
    paramstyle: Literal["qmark", "format", "numeric"]  # ? | %s | $1, $2, ...
    contains_function: str  # position of a substring, 0 when absent, 1 for ''
    lower_template: str  # ASCII-only lowering of a text expression
    text_collation: str  # appended to text in ordering comparisons and ORDER BY
    typed_params: bool  # wrap parameters in CAST(... AS type)
    # Text as bytes, for engines whose text functions stop at a NUL ('' when text cannot
    # hold one): prefixes and suffixes compare bytes then, the same as characters in UTF-8.
    bytes_template: str = ""
    # A column the planner must not pick an index for (a test nearly every row passes).
    unindexed_template: str = "{}"
    # How the engine reads fields of a JSON document column; None: such fields stay in Python.
    json: JsonSyntax | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        texts = (
            self.contains_function,
            self.lower_template,
            self.text_collation,
            self.bytes_template,
            self.unindexed_template,
        )
        if any(_P in text or "%" in text for text in texts):
            raise ValueError("dialect SQL fragments must not contain '?' or '%'")

    def render(self, sql: str, start: int = 1) -> str:
        """Turn internal placeholders into this dialect's; ``$n`` numbering begins at start."""
        if self.paramstyle == "qmark":
            return sql
        parts = sql.split(_P)
        if self.paramstyle == "format":
            return "%s".join(parts)
        numbered = (f"${start + i}{part}" for i, part in enumerate(parts[1:]))
        return parts[0] + "".join(numbered)


# SQLite's LOWER() folds ASCII only, and text compares by code point (BINARY collation).
SQLITE: Final = Dialect(
    "sqlite",
    "qmark",
    "instr",
    "LOWER({})",
    "",
    typed_params=False,
    bytes_template="CAST({} AS BLOB)",
    unindexed_template="+{}",
    json=SQLITE_JSON,
)
# PostgreSQL under the "C" collation: code point order, ASCII-only LOWER(). For asyncpg use
# dataclasses.replace(POSTGRES, paramstyle="numeric").
POSTGRES: Final = Dialect(
    "postgres", "format", "strpos", 'LOWER({} COLLATE "C")', ' COLLATE "C"', typed_params=True
)


@dataclass(frozen=True)
class CompiledWhere:
    """``sql`` (TRUE when nothing compiled) and its ``params``; ``residual`` must still be
    evaluated in Python on the rows the SQL returns (None when SQL did everything: then
    ``sql`` is exact, else it may keep rows the residual drops, never the other way)."""

    sql: str
    params: list[Any]
    residual: Filter | None


class _Unfit:
    """A value SQL cannot compare with a column exactly as Python does."""


_UNFIT: Final = _Unfit()
_PG_TYPES: Final[Mapping[str, str]] = {
    "int": "bigint",
    "date": "bigint",
    "float": "double precision",
    "text": "text",
    "bool": "integer",
}


@dataclass(frozen=True)
class _Target:
    """The column a condition tests and how to write it."""

    column: Column
    expr: str  # the column, lowered for a case-insensitive test of text
    dialect: Dialect

    def param(self, sql_type: str | None = None) -> str:
        if not self.dialect.typed_params:
            return _P
        return f"CAST({_P} AS {sql_type or _PG_TYPES[self.column.kind]})"

    def coerce(self, value: Any) -> Any:
        """A non-null value as the column's own type, or _UNFIT when SQL could not compare it
        exactly (engines compare mixed integers and floats as floats, Python exactly)."""
        kind = self.column.kind
        if kind == "text":
            return value if isinstance(value, str) else _UNFIT
        if kind == "bool":
            return int(value) if isinstance(value, bool) else _UNFIT
        if not is_number(value):
            return _UNFIT
        if kind == "float":
            return _as_float(value)
        return _as_int(value)


def _as_int(value: int | float) -> int | _Unfit:
    if isinstance(value, float):
        if not value.is_integer():
            return _UNFIT
        value = int(value)
    return value if value in _INT64 else _UNFIT


def _as_float(value: int | float) -> float | _Unfit:
    if isinstance(value, int):
        return float(value) if abs(value) <= _EXACT_FLOAT_INT else _UNFIT
    return value if value == value and abs(value) != float("inf") else _UNFIT


# --- conditions -----------------------------------------------------------------------------

_Compiler = Callable[[_Target, Any, str], Sql | None]


def _equal(t: _Target, v: Any, op: str) -> Sql | None:
    col = t.column.quoted
    if v is None:
        return Sql(f"{col} IS NULL" if op == "=" else f"{col} IS NOT NULL")
    v = t.coerce(v)
    if v is _UNFIT:
        return None
    if op == "=":
        return Sql(f"{t.expr} = {t.param()}", (v,))
    return Sql(f"({col} IS NULL OR {t.expr} <> {t.param()})", (v,))


def _ordering(t: _Target, v: Any, op: str) -> Sql | None:
    v = _UNFIT if v is None else t.coerce(v)
    if v is _UNFIT:
        return None
    collation = t.dialect.text_collation if t.column.kind == "text" else ""
    return Sql(f"{t.expr}{collation} {op} {t.param()}", (v,))


def _membership(t: _Target, values: tuple[Any, ...], op: str) -> Sql | None:
    present = tuple(t.coerce(v) for v in values if v is not None)
    if _UNFIT in present:
        return None
    col = t.column.quoted
    listed = f"({', '.join(t.param() for _ in present)})"
    if op == "nin":
        text = f"{col} IS NOT NULL AND {t.expr} NOT IN {listed}" if present else ""
        return Sql(text or f"{col} IS NOT NULL", present)
    tests = [f"{t.expr} IN {listed}"] if present else []
    if len(present) < len(values):
        tests.append(f"{col} IS NULL")
    return Sql(" OR ".join(tests) or "FALSE", present)


def _containment(t: _Target, v: Any, op: str) -> Sql | None:
    if t.column.kind != "text" or not isinstance(v, str):
        return None
    if not v:  # '' is in every string
        return Sql(f"{t.column.quoted} IS NOT NULL" if op == "rin" else "FALSE")
    test = "> 0" if op == "rin" else "= 0"
    return Sql(f"{t.dialect.contains_function}({t.expr}, {t.param()}) {test}", (v,))


def _affix(t: _Target, v: Any, op: str) -> Sql | None:
    """``^ !^ $ !$`` by comparing a substr() of the length of the value (LIKE folds case).

    The length is tested first: SQLite's substr() of an empty blob is NULL, not empty.
    """
    if t.column.kind != "text" or not isinstance(v, str):
        return None
    negated = op.startswith("!")
    if not v:  # every text starts and ends with ''
        return Sql("FALSE" if negated else f"{t.column.quoted} IS NOT NULL")
    as_bytes = t.dialect.bytes_template
    if as_bytes:
        text, value, size = as_bytes.format(t.expr), as_bytes.format(t.param()), len(v.encode())
    else:
        text, value, size = t.expr, t.param(), len(v)
    n = t.param("integer")
    if op.endswith("^"):
        part = f"substr({text}, 1, {n})"
    else:
        part = f"substr({text}, length({text}) - {n} + 1)"
    if negated:
        return Sql(f"(length({text}) < {n} OR {part} <> {value})", (size, size, v))
    return Sql(f"(length({text}) >= {n} AND {part} = {value})", (size, size, v))


_COMPILERS: Final[Mapping[str, _Compiler]] = {
    "=": _equal,
    "!=": _equal,
    ">": _ordering,
    ">=": _ordering,
    "<": _ordering,
    "<=": _ordering,
    "in": _membership,
    "nin": _membership,
    "rin": _containment,
    "rnin": _containment,
    "^": _affix,
    "!^": _affix,
    "$": _affix,
    "!$": _affix,
}


@dataclass(frozen=True)
class Fields:
    """Where a query's fields live: columns, and (optionally) a column holding the whole
    record as JSON, read through the dialect's JSON functions."""

    columns: Mapping[str, Column]
    dialect: Dialect
    document: str | None = None
    # Top-level keys of the record the caller sees otherwise than stored (a user sees no
    # ``exception``): read from this object instead of the document.
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.document is not None and not _IDENTIFIER.fullmatch(self.document):
            raise ValueError(f"invalid SQL column name {self.document!r}")

    def json_node(self, path: tuple[str, ...]) -> JsonNode | None:
        """The value at ``path`` of the document, or None when SQL cannot read it."""
        syntax = self.dialect.json
        if syntax is None or self.document is None:
            return None
        if path[0] in self.overrides:
            doc = Sql(_P, (jsonc.dumps({path[0]: self.overrides[path[0]]}),))
        else:
            doc = Sql(f'"{self.document}"')
        return syntax.node(doc, path)


def _compile_column(cond: Cond, column: Column, dialect: Dialect) -> Sql | None:
    """A condition on a column, or None to leave it to Python (``~`` always: the regular
    expression syntax of SQL engines is not Python's)."""
    compiler = _COMPILERS.get(cond.base_op)
    if compiler is None:
        return None
    lowered = cond.ci and column.kind == "text"
    expr = dialect.lower_template.format(column.quoted) if lowered else column.quoted
    operand = cond.date_operand if column.kind == "date" else cond.operand
    return compiler(_Target(column, expr, dialect), operand, cond.base_op)


def _compile_cond(cond: Cond, fields: Fields) -> tuple[Sql, bool]:
    """``(predicate, exact)``; an inexact predicate keeps every row the condition may hold
    for (TRUE when SQL can say nothing)."""
    column = fields.columns.get(cond.field)
    if column is not None:
        part = _compile_column(cond, column, fields.dialect)
        return (TRUE, False) if part is None else (part, True)
    node = fields.json_node(cond.path)
    if node is None:
        return TRUE, False
    return compile_json_cond(node, cond, fields.dialect)


def _compile_node(node: Node, fields: Fields) -> tuple[Sql, bool]:
    if isinstance(node, Cond):
        return _compile_cond(node, fields)
    children = node.branches if isinstance(node, Or) else node.conds
    parts = [_compile_node(child, fields) for child in children]
    exact = all(ok for _, ok in parts)
    if isinstance(node, Or) and any(part == TRUE for part, _ in parts):
        return TRUE, exact
    # An AND group keeps what it can narrow by; an OR with a FALSE branch keeps the others.
    dropped = FALSE if isinstance(node, Or) else TRUE
    compiled = [part for part, _ in parts if part != dropped] or [parts[0][0]]
    if len(compiled) == 1 and compiled[0] in (TRUE, FALSE):
        return compiled[0], exact
    joiner = " OR " if isinstance(node, Or) else " AND "
    text = joiner.join(f"({part.text})" for part in compiled)
    return Sql(f"({text})", tuple(p for part in compiled for p in part.params)), exact


def compile_filter(f: Filter, fields: Fields) -> tuple[Sql, Filter | None]:
    """``(where, residual)`` with ``?`` placeholders: the residual (what SQL cannot decide
    exactly) is to be evaluated in Python on the rows ``where`` keeps.

    Top-level conditions compile one by one; an OR (or AND group) is exact only whole.
    """
    compiled: list[Sql] = []
    residual: list[Node] = []
    for node in f.conds:
        part, exact = _compile_node(node, fields)
        if part != TRUE:
            compiled.append(part)
        if not exact:
            residual.append(node)
    text = " AND ".join(f"({part.text})" for part in compiled) or "TRUE"
    params = tuple(p for part in compiled for p in part.params)
    return Sql(text, params), Filter(tuple(residual)) if residual else None


def compile_where(
    f: Filter,
    columns: Mapping[str, Column],
    dialect: Dialect,
    *,
    first_param: int = 1,
    document: str | None = None,
) -> CompiledWhere:
    """The SQL for what of ``f`` SQL can express; the rest as a residual.

    Without ``document`` only columns compile; with it, the other fields are read from that
    column's JSON. ``first_param`` numbers ``$n`` placeholders when other parameters come
    before.
    """
    where, rest = compile_filter(f, Fields(columns, dialect, document))
    return CompiledWhere(dialect.render(where.text, first_param), list(where.params), rest)


def compile_order(
    order_by: tuple[OrderKey, ...], columns: Mapping[str, Column], dialect: Dialect
) -> str | None:
    """The ORDER BY list ("" for no keys), or None when a key is not a column.

    Nulls are placed explicitly so every engine agrees with Python; callers append their
    primary key to match Python's stable sort on rows given in that order.
    """
    keys: list[str] = []
    for key in order_by:
        column = columns.get(key.field)
        if column is None:
            return None
        collation = dialect.text_collation if column.kind == "text" else ""
        direction = "DESC" if key.descending else "ASC"
        nulls = "NULLS FIRST" if key.nulls_come_first else "NULLS LAST"
        keys.append(f"{column.quoted}{collation} {direction} {nulls}")
    return ", ".join(keys)
