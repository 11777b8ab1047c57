"""Values inside a JSON document column, as SQL: what one engine's JSON functions give.

A filter or an order on a field that is not a column reads it from the record the row
stores. The compiler (``jsonsql``) needs, for a field path, a handful of expressions: the
JSON type (never NULL: ``'missing'`` when the path is absent), the scalar value, whether a
string holds a NUL, whether an object is a ``{"$date": ms}`` date and its milliseconds, and
a test over the elements of an array. ``SqliteJson`` writes them with SQLite's JSON1
functions (3.38 or later, for ``->``); a PostgreSQL ``jsonb`` version gives the same ones.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from middlewared.query.sqltext import Sql, call, param

# JSON types as the compiler names them (SQLite's json_type names, plus 'missing').
NUMBER_TYPES: Final = ("integer", "real")
# Longest run of list indexes in one path SQLite is asked to resolve: each one doubles the
# path expression (a segment is an index of a list or a key of an object, decided per row).
MAX_INDEXES: Final = 3


@dataclass(frozen=True)
class JsonNode:
    """The value at one path of a document, as SQL expressions (all two-valued)."""

    type: Sql  # one of NUMBER_TYPES, 'text', 'true', 'false', 'null', 'array', 'object', 'missing'
    value: Sql  # the number or text (meaningful for those types)
    has_nul: Sql  # the text holds a NUL, which ``value`` cuts off (meaningful for 'text')
    is_date: Sql  # an object of exactly one key "$date" holding a number
    date_ms: Sql  # that number (meaningful when is_date)
    any_element: Callable[[Callable[[JsonNode], Sql]], Sql]  # an element of the array holds


class JsonSyntax(abc.ABC):
    """One engine's way of reading JSON; None from ``node`` leaves the field to Python."""

    @abc.abstractmethod
    def node(self, doc: Sql, path: tuple[str, ...]) -> JsonNode | None:
        """The value at ``path`` of the document ``doc``, or None when it cannot be read."""


def _label_ok(segment: str) -> bool:
    """Whether SQLite can name this object key in a path: quoted labels cannot escape."""
    return not any(c in '"\\' or c < " " for c in segment)


class SqliteJson(JsonSyntax):
    """SQLite's JSON1 (3.38+). Text comes out of ``json_extract`` cut at a NUL, so a NUL is
    found in the JSON text of the value (``->``): an escape ``\\u0000`` once escaped
    backslashes are taken out, left to right as they pair."""

    def node(self, doc: Sql, path: tuple[str, ...]) -> JsonNode | None:
        expr = _path(doc, path)
        return None if expr is None else _node(doc, expr)


def _path(doc: Sql, path: tuple[str, ...]) -> Sql | None:
    """A JSON path expression. A numeric segment indexes a list and names a key of an
    object, as Python's ``resolve`` does: which one is chosen per row by the JSON type."""
    static = "$"
    dynamic: Sql | None = None
    indexes = 0
    for segment in path:
        if not _label_ok(segment):
            return None
        if not (segment.isascii() and segment.isdigit()):
            static += f'."{segment}"'
            continue
        indexes += 1
        if indexes > MAX_INDEXES:
            return None
        prefix = _joined(dynamic, static)
        # An index past any real list: SQLite then finds nothing, as Python does.
        index = min(int(segment), 2**31 - 1)
        choose = (
            Sql("CASE ")
            + call("json_type", doc, prefix)
            + Sql(" WHEN 'array' THEN ? ELSE ? END", (f"[{index}]", f'."{segment}"'))
        )
        dynamic = Sql("(") + prefix + Sql(" || ") + choose + Sql(")")
        static = ""
    return _joined(dynamic, static)


def _joined(dynamic: Sql | None, static: str) -> Sql:
    if dynamic is None:
        return param(static)
    if not static:
        return dynamic
    return Sql("(") + dynamic + Sql(" || ?)", (static,))


def _suffixed(path: Sql, suffix: str) -> Sql:
    return Sql("(") + path + Sql(" || ?)", (suffix,))


def _node(doc: Sql, path: Sql) -> JsonNode:
    kind = Sql("COALESCE(") + call("json_type", doc, path) + Sql(", 'missing')")
    raw = Sql("(") + doc + Sql(" -> ") + path + Sql(")")
    date_path = _suffixed(path, '."$date"')
    is_date = (
        kind
        + Sql(" = 'object' AND COALESCE(")
        + call("json_type", doc, date_path)
        + Sql(", '') IN ('integer', 'real') AND json_remove(")
        + raw
        + Sql(", '$.\"$date\"') = '{}'")
    )

    def any_element(test: Callable[[JsonNode], Sql]) -> Sql:
        element = Sql("(") + path + Sql(" || '[' || e.key || ']')")
        return (
            Sql("EXISTS (SELECT 1 FROM ")
            + call("json_each", doc, path)
            + Sql(" AS e WHERE ")
            + test(_node(doc, element))
            + Sql(")")
        )

    return JsonNode(
        type=kind,
        value=call("json_extract", doc, path),
        has_nul=Sql("instr(replace(") + raw + Sql(", '\\\\', '**'), '\\u0000') > 0"),
        is_date=Sql("(") + is_date + Sql(")"),
        date_ms=call("json_extract", doc, date_path),
        any_element=any_element,
    )


SQLITE_JSON: Final = SqliteJson()
