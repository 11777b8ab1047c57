"""Query cases shared by the unit and acceptance tests: every kind of value a field may hold,
every kind of operand, every operator (the oracle is ``middlewared.query.filters``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from middlewared.query.filters import BASE_OPS

KINDS_OF_VALUE: list[Any] = [
    *[None, True, False, 0, 1, -1, 2, 0.5, -0.0, 2.5, 2**53 + 1, 2**63 - 1, -(2**63)],
    *[2**63, 2**63 + 1, 2**64 - 1, 2.0**63, 1e300, 2**70],
    *["", "a", "A", "ab", "aB", "b", "\0", "a\0", "a\0b", "ab\0", "é", "É", "1", "x a b"],
    *[{"$date": 0}, {"$date": 1}, {"$date": 1.5}, {"$date": True}, {"$date": 1, "x": 2}],
    *[[], [1], ["a"], ["A", 1], [None], ["a\0b"], [[1]], [{"$date": 1}], {}, {"c": 1}],
]
OPERANDS: list[Any] = [
    *[None, True, False, 0, 1, 2, 0.5, 2.5, -0.0, 2**63 - 1, 2**63, 2.0**63, 2**70],
    *["", "a", "A", "ab", "b", "\0", "a\0", "a\0b", "é", "1", "1970-01-01T00:00:00.001Z"],
    *[{"$date": 1}, {"$date": 1.5}, [1], ["a"], {"c": 1}],
]
LISTS: list[Any] = [[], [None], ["a", 1], ["A", True], [1, {"$date": 1}], ["a\0b", 2.5], [[1]]]


def _operands(base: str) -> list[Any]:
    if base in ("in", "nin"):
        return LISTS
    if base in ("^", "!^", "$", "!$", "~"):
        return [v for v in OPERANDS if isinstance(v, str) and (base != "~" or "\0" not in v)]
    return OPERANDS


def cases() -> Iterator[tuple[str, Any]]:
    """``(op, operand)`` for every operator, its C form, and every operand it takes."""
    for base in sorted(BASE_OPS):
        for op in (base, f"C{base}") if base != "~" else (base,):
            for operand in _operands(base):
                yield op, operand
