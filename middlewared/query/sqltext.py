"""SQL fragments with their parameters, composed without ever putting a value in the text."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

# Internal placeholder; the SQL text holds no other "?" (identifiers are checked, templates fixed).
P: Final = "?"


@dataclass(frozen=True)
class Sql:
    """A fragment of SQL text with ``?`` placeholders and the values they stand for."""

    text: str
    params: tuple[Any, ...] = ()

    def __add__(self, other: Sql) -> Sql:
        return Sql(self.text + other.text, self.params + other.params)


TRUE: Final = Sql("TRUE")
FALSE: Final = Sql("FALSE")


def param(value: Any) -> Sql:
    return Sql(P, (value,))


def join(parts: Iterable[Sql], sep: str) -> Sql:
    items = list(parts)
    return Sql(sep.join(p.text for p in items), tuple(v for p in items for v in p.params))


def all_of(parts: Iterable[Sql]) -> Sql:
    """The conjunction; TRUE parts are dropped, one FALSE part makes it FALSE."""
    return _combine(parts, TRUE, FALSE, " AND ")


def any_of(parts: Iterable[Sql]) -> Sql:
    """The disjunction; FALSE parts are dropped, one TRUE part makes it TRUE."""
    return _combine(parts, FALSE, TRUE, " OR ")


def _combine(parts: Iterable[Sql], neutral: Sql, absorbing: Sql, sep: str) -> Sql:
    items = [p for p in parts if p != neutral]
    if absorbing in items:
        return absorbing
    if not items:
        return neutral
    return items[0] if len(items) == 1 else join((wrap(p) for p in items), sep)


def negate(part: Sql) -> Sql:
    """NOT of a two-valued predicate (never applied to one that can be NULL)."""
    if part == TRUE:
        return FALSE
    if part == FALSE:
        return TRUE
    return Sql(f"NOT {wrap(part).text}", part.params)


def wrap(part: Sql) -> Sql:
    return Sql(f"({part.text})", part.params)


def call(name: str, *args: Sql) -> Sql:
    return Sql(f"{name}(", ()) + join(args, ", ") + Sql(")")
