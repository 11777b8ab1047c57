"""Query options: validated once, then applied in Python to the records a filter matched."""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from middlewared.errors import NotFound, ValidationErrors
from middlewared.query.filters import (
    MISSING,
    date_object_ms,
    is_number,
    resolve,
    split_field,
)

NULLS_FIRST: Final = "nulls_first:"
# Larger limits and offsets would overflow a database's 64-bit integers.
MAX_COUNT: Final = 2**62
NULLS_LAST: Final = "nulls_last:"
# Longest cursor accepted (it holds the last row's order values).
MAX_CURSOR: Final = 64 * 1024


@dataclass(frozen=True)
class OrderKey:
    """One ``order_by`` entry; ``nulls_first=None`` means nulls sort as the smallest value."""

    field: str
    descending: bool = False
    nulls_first: bool | None = None

    @property
    def path(self) -> tuple[str, ...]:
        return split_field(self.field) or (self.field,)

    @property
    def nulls_come_first(self) -> bool:
        """Where nulls end up in the result, the default applied."""
        return not self.descending if self.nulls_first is None else self.nulls_first


@dataclass(frozen=True)
class SelectField:
    """One ``select`` entry: a dotted field kept nested, or ``[field, alias]`` kept flat."""

    field: str
    alias: str | None = None

    @property
    def path(self) -> tuple[str, ...]:
        return split_field(self.field) or (self.field,)


@dataclass(frozen=True)
class QueryOptions:
    order_by: tuple[OrderKey, ...] = ()
    limit: int = 0
    offset: int = 0
    count: bool = False
    get: bool = False
    select: tuple[SelectField, ...] = ()
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    # Keyset paging: True starts a walk, a string (a ``next_cursor``) continues one. The
    # answer is then ``{"results": [...], "next_cursor": str | None}``.
    cursor: bool | str = False


# --- parsing --------------------------------------------------------------------------------


def _error(where: str, message: str) -> ValidationErrors:
    return ValidationErrors([(where, message, errno.EINVAL)])


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple)


def _parse_count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(where, "must be a non-negative integer")
    if value > MAX_COUNT:
        raise _error(where, f"must be at most {MAX_COUNT}")
    return value


def _parse_flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise _error(where, "must be a boolean")
    return value


def _parse_extra(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _error(where, "must be an object")
    return dict(value)


def _parse_cursor(value: Any, where: str) -> bool | str:
    if isinstance(value, bool):
        return value
    if not isinstance(value, str) or not value:
        raise _error(where, "must be true (to start) or a next_cursor (to continue)")
    if len(value) > MAX_CURSOR:
        raise _error(where, "is not a cursor this server gave")
    return value


def _parse_order_by(value: Any, where: str) -> tuple[OrderKey, ...]:
    if not _is_list(value):
        raise _error(where, "must be a list of field names")
    return tuple(_parse_order_key(item, f"{where}.{i}") for i, item in enumerate(value))


def _parse_order_key(item: Any, where: str) -> OrderKey:
    if not isinstance(item, str):
        raise _error(where, "must be a field name")
    nulls_first: bool | None = None
    for prefix, first in ((NULLS_FIRST, True), (NULLS_LAST, False)):
        if item.startswith(prefix):
            item, nulls_first = item[len(prefix) :], first
            break
    descending = item.startswith("-")
    name = item[1:] if descending else item
    if name.startswith((NULLS_FIRST, NULLS_LAST)):
        raise _error(where, "nulls_first:/nulls_last: must come before '-'")
    if split_field(name) is None:
        raise _error(where, f"invalid field name {name!r}")
    return OrderKey(name, descending, nulls_first)


def _parse_select(value: Any, where: str) -> tuple[SelectField, ...]:
    if not _is_list(value):
        raise _error(where, "must be a list of fields or [field, alias] pairs")
    return tuple(_parse_select_item(item, f"{where}.{i}") for i, item in enumerate(value))


def _parse_select_item(item: Any, where: str) -> SelectField:
    if isinstance(item, str):
        name, alias = item, None
    elif _is_list(item) and len(item) == 2 and isinstance(item[1], str) and item[1]:
        name, alias = item
    else:
        raise _error(where, "expected a field name or [field, alias]")
    if split_field(name) is None:
        raise _error(where, f"invalid field name {name!r}")
    return SelectField(name, alias)


_PARSERS: Final[Mapping[str, Callable[[Any, str], Any]]] = {
    "order_by": _parse_order_by,
    "limit": _parse_count,
    "offset": _parse_count,
    "count": _parse_flag,
    "get": _parse_flag,
    "select": _parse_select,
    "extra": _parse_extra,
    "cursor": _parse_cursor,
}


def _check_combinations(values: Mapping[str, Any], errors: ValidationErrors) -> None:
    if values.get("count") and values.get("get"):
        errors.add("options.get", "cannot be combined with count")
    if values.get("cursor") in (None, False):
        return
    for name in ("count", "get"):
        if values.get(name):
            errors.add("options.cursor", f"cannot be combined with {name}")
    if values.get("offset"):
        errors.add("options.cursor", "cannot be combined with offset (the cursor is the offset)")


def parse_options(options: Any) -> QueryOptions:
    """Validate query options (None means all defaults); every problem is reported at once."""
    if options is None:
        return QueryOptions()
    if not isinstance(options, Mapping):
        raise _error("options", "must be an object")
    errors = ValidationErrors()
    values: dict[str, Any] = {}
    for key, raw in options.items():
        parser = _PARSERS.get(key)
        if parser is None:
            errors.add(f"options.{key}", "unknown option")
            continue
        try:
            values[key] = parser(raw, f"options.{key}")
        except ValidationErrors as exc:
            for where, message, code in exc.errors:
                errors.add(where, message, code)
    _check_combinations(values, errors)
    if errors:
        raise errors
    return QueryOptions(**values)


# --- applying -------------------------------------------------------------------------------


def total_order(value: Any) -> tuple[int, Any]:
    """A sort key defined for every value: null, booleans, numbers and dates, strings, others."""
    if value is None or value is MISSING:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if is_number(value):
        return (2, value)
    ms = date_object_ms(value)
    if ms is not None:
        return (2, ms)
    if isinstance(value, str):
        return (3, value)
    try:
        text = json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return (4, text)


def _value_key(key: OrderKey) -> Callable[[Any], tuple[Any, ...]]:
    # The group of nulls before the sort direction is applied.
    null_group = 0 if key.nulls_come_first != key.descending else 2

    def value_key(value: Any) -> tuple[Any, ...]:
        if value is None or value is MISSING:
            return (null_group, 0, 0)
        return (1, *total_order(value))

    return value_key


def _sort_key(key: OrderKey) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    path = key.path
    value_key = _value_key(key)
    return lambda record: value_key(resolve(record, path))


@functools.total_ordering
class _Descending:
    """A sort key component compared the other way round."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Descending) and bool(self.value == other.value)

    def __lt__(self, other: _Descending) -> bool:
        return bool(other.value < self.value)

    __hash__ = None  # type: ignore[assignment]


def position_of(order_by: tuple[OrderKey, ...], values: Iterable[Any]) -> tuple[Any, ...]:
    """The position of a row whose values for the order keys are ``values``: positions
    compare as ``sort_records`` orders (when the keys end in a unique field)."""
    out = []
    for key, value in zip(order_by, values, strict=True):
        part = _value_key(key)(value)
        out.append(_Descending(part) if key.descending else part)
    return tuple(out)


def position_key(order_by: tuple[OrderKey, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A record's position (``position_of`` its values)."""
    paths = [key.path for key in order_by]
    return lambda record: position_of(order_by, (resolve(record, p) for p in paths))


def sort_records(
    records: Iterable[Mapping[str, Any]], order_by: tuple[OrderKey, ...]
) -> list[Mapping[str, Any]]:
    """A stable multi-key sort; a missing field sorts as null."""
    rows = list(records)
    for key in reversed(order_by):
        rows.sort(key=_sort_key(key), reverse=key.descending)
    return rows


def with_id_last(order_by: tuple[OrderKey, ...]) -> tuple[OrderKey, ...]:
    """The order with the id as the last tie-breaker (by id when none is given): a total
    order over records with unique ids, so pages and cursors never tie."""
    if any(k.field == "id" for k in order_by):
        return order_by
    return (*order_by, OrderKey("id"))


def select_fields(record: Mapping[str, Any], fields: tuple[SelectField, ...]) -> dict[str, Any]:
    """The selected fields of a record; missing fields are left out; the record is not changed."""
    out: dict[str, Any] = {}
    whole: set[tuple[str, ...]] = set()
    for sel in fields:
        path = sel.path
        value = resolve(record, path)
        if sel.alias is not None or value is MISSING:
            continue
        if any(path[:i] in whole for i in range(1, len(path) + 1)):
            continue
        whole.add(path)
        _put(out, path, value)
    for sel in fields:
        value = resolve(record, sel.path)
        if sel.alias is not None and value is not MISSING:
            out[sel.alias] = value
    return out


def _put(out: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = out
    for segment in path[:-1]:
        child = node.get(segment)
        if not isinstance(child, dict):
            child = node[segment] = {}
        node = child
    node[path[-1]] = value


def apply_options(records: Iterable[Mapping[str, Any]], opts: QueryOptions) -> Any:
    """Order, offset, limit and select matching records; or count them; or get the first."""
    if opts.count:
        return sum(1 for _ in records)
    rows = sort_records(records, opts.order_by)[opts.offset :]
    if opts.get:
        if not rows:
            raise NotFound("query: no match for the given filters")
        return select_fields(rows[0], opts.select) if opts.select else rows[0]
    if opts.limit:
        rows = rows[: opts.limit]
    if opts.select:
        return [select_fields(row, opts.select) for row in rows]
    return rows
