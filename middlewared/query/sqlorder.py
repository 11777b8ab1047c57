"""ORDER BY for any field, and keyset conditions ("the rows after this one") over it.

A key on a column sorts in SQL exactly as Python sorts. A key on a field of the JSON record
sorts by components (null group, type rank, number, text, holds-a-NUL) that agree with
Python's total order except inside *runs*: rows tied in SQL that Python orders further (lists
and objects, which Python orders by their JSON text; strings holding a NUL, which SQL reads
up to it; numbers past 64 bits, which SQL reads as doubles). A run is contiguous in SQL order,
so the reader of a stream sorts each run in Python (``run_key`` says where runs begin).

``components`` gives, for a row's values, the same components in Python: the cursor's
position in SQL, and the key that groups a stream into runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from middlewared.query.filters import MISSING, date_object_ms, is_number, resolve
from middlewared.query.options import OrderKey
from middlewared.query.sql import Column, Fields
from middlewared.query.sqltext import FALSE, TRUE, Sql, all_of, any_of, join

# Numbers from here on are doubles in SQL (stored integers past 64 bits): they sort in runs.
_DOUBLE_ZONE: Final = 2.0**63


@dataclass(frozen=True)
class Component:
    expr: Sql
    descending: bool
    collation: str = ""
    # Never NULL (a NOT NULL column): a keyset on it may add a range its index serves.
    indexed: bool = False


@dataclass(frozen=True)
class SqlKey:
    key: OrderKey
    column: Column | None  # None: a field of the JSON record
    components: tuple[Component, ...]


@dataclass(frozen=True)
class SqlOrder:
    """A compiled ``order_by`` (the id last): ORDER BY, keysets, and whether runs can occur."""

    keys: tuple[SqlKey, ...]

    @property
    def exact(self) -> bool:
        """Whether SQL's order is Python's for every row (no key reads the JSON record)."""
        return all(k.column is not None for k in self.keys)

    def order_by(self) -> Sql:
        parts = [
            Sql(f"{c.expr.text}{c.collation} {'DESC' if c.descending else 'ASC'}", c.expr.params)
            for k in self.keys
            for c in k.components
        ]
        return join(parts, ", ")

    def after(self, values: Sequence[Any]) -> tuple[Sql, bool]:
        """``(condition, exact)``: the rows after a row whose order values are ``values``.

        Inexact when that row sits in a run: the condition then keeps the whole run (from its
        start), and the caller drops the rows at or before the position in Python.
        """
        comps: list[tuple[Component, Any]] = []
        for key, value in zip(self.keys, values, strict=True):
            row, truncated = components(key.key, key.column, value)
            comps.extend(zip(key.components, row, strict=False))
            if truncated:
                return _lexicographic(comps, strict=False), False
        return _lexicographic(comps, strict=True), True


def _column_components(key: OrderKey, column: Column, fields: Fields) -> tuple[Component, ...]:
    collation = fields.dialect.text_collation if column.kind == "text" else ""
    if not column.nullable:
        return (Component(Sql(column.quoted), key.descending, collation, indexed=True),)
    group = _null_group(key)
    is_null = Sql(f"(CASE WHEN {column.quoted} IS NULL THEN {group} ELSE 1 END)")
    return (
        Component(is_null, key.descending),
        Component(Sql(column.quoted), key.descending, collation),
    )


def _json_components(key: OrderKey, fields: Fields) -> tuple[Component, ...] | None:
    """(kind, number, text, holds-a-NUL); each reads the JSON type once (a simple CASE)."""
    node = fields.json_node(key.path)
    if node is None:
        return None
    nulls = 10 * _null_group(key)
    date = Sql("CASE WHEN ") + node.is_date

    def case(*parts: Sql | str) -> Sql:
        out = Sql("(CASE ") + node.type
        for part in parts:
            out += part if isinstance(part, Sql) else Sql(part)
        return out + Sql(" END)")

    kind = case(
        f" WHEN 'missing' THEN {nulls} WHEN 'null' THEN {nulls} WHEN 'true' THEN 11",
        " WHEN 'false' THEN 11 WHEN 'integer' THEN 12 WHEN 'real' THEN 12 WHEN 'text' THEN 13",
        " WHEN 'object' THEN (", date, " THEN 12 ELSE 14 END) ELSE 14",
    )  # fmt: skip
    number = case(
        " WHEN 'true' THEN 1 WHEN 'integer' THEN ", node.value, " WHEN 'real' THEN ", node.value,
        " WHEN 'object' THEN (", date, " THEN ", node.date_ms, " ELSE 0 END) ELSE 0",
    )  # fmt: skip
    text = case(" WHEN 'text' THEN ", node.value, " ELSE ''")
    nul = case(" WHEN 'text' THEN (CASE WHEN ", node.has_nul, " THEN 1 ELSE 0 END) ELSE 0")
    d = key.descending
    return (
        Component(kind, d),
        Component(number, d),
        Component(text, d, fields.dialect.text_collation),
        Component(nul, d),
    )


def _null_group(key: OrderKey) -> int:
    """Where nulls sort before the direction applies (as ``options.sort_records`` has it)."""
    return 0 if key.nulls_come_first != key.descending else 2


def compile_sql_order(order: tuple[OrderKey, ...], fields: Fields) -> SqlOrder | None:
    """The order in SQL, or None when a key can be read by no SQL (then Python sorts)."""
    keys: list[SqlKey] = []
    for key in order:
        column = fields.columns.get(key.field)
        if column is not None:
            keys.append(SqlKey(key, column, _column_components(key, column, fields)))
            continue
        comps = _json_components(key, fields)
        if comps is None:
            return None
        keys.append(SqlKey(key, None, comps))
    return SqlOrder(tuple(keys))


def components(key: OrderKey, column: Column | None, value: Any) -> tuple[list[Any], bool]:
    """The SQL components of a row whose value for ``key`` is ``value`` (MISSING or None
    when it has none), and whether the row sits in a run (SQL cannot order it further)."""
    group = _null_group(key)
    if column is not None:
        if value is None or value is MISSING:
            return ([group] if column.nullable else [None]), False
        stored = _column_value(column, value)
        return ([1, stored] if column.nullable else [stored]), False
    if value is None or value is MISSING:
        return [10 * group, 0, "", 0], False
    if isinstance(value, bool):
        return [11, int(value), "", 0], False
    ms = date_object_ms(value)
    number = value if is_number(value) else ms
    if number is not None:
        if abs(number) >= _DOUBLE_ZONE:
            return [12, float(number), "", 0], True
        return [12, number, "", 0], False
    if isinstance(value, str):
        head, nul, _ = value.partition("\0")
        return [13, 0, head, 1 if nul else 0], bool(nul)
    return [14, 0, "", 0], True


def _column_value(column: Column, value: Any) -> Any:
    if column.kind == "date":
        return date_object_ms(value)
    if column.kind == "bool":
        return int(value)
    return value


def run_key(order: SqlOrder, record: Mapping[str, Any]) -> tuple[Any, ...]:
    """Equal for the rows of one run, and only for them (rows outside runs are unique)."""
    out: list[Any] = []
    for key in order.keys:
        row, truncated = components(key.key, key.column, resolve(record, key.key.path))
        out.extend(row)
        if truncated:
            break
    return tuple(out)


def _lexicographic(comps: list[tuple[Component, Any]], strict: bool) -> Sql:
    """Rows whose components come after ``comps``' values (or equal to them, unless strict).

    Components are never NULL where they are compared (a nullable column's value is compared
    only among rows of its non-null group), so the condition is two-valued.
    """
    result = FALSE if strict else TRUE
    for comp, value in reversed(comps):
        if value is None:  # a nullable column's value among its nulls: all equal
            continue
        op = "<" if comp.descending else ">"
        expr = Sql(f"{comp.expr.text}{comp.collation}", comp.expr.params)
        beyond = expr + Sql(f" {op} ?", (value,))
        result = any_of([beyond, all_of([expr + Sql(" = ?", (value,)), result])])
    first, value = comps[0]
    if first.indexed and value is not None:
        # The same condition, led by a range the column's index can serve.
        expr = Sql(f"{first.expr.text}{first.collation}", first.expr.params)
        result = all_of([expr + Sql(f" {'<=' if first.descending else '>='} ?", (value,)), result])
    return result
