"""Conditions on fields of a JSON document column, compiled to SQL with Python's semantics.

Each condition compiles to a predicate and a flag: exact (SQL decides, the row needs no other
look) or not (a superset: the rows it keeps are checked in Python as well). A value SQL cannot
compare exactly (a string holding a NUL, an integer past 64 bits, a list or an object) leaves
the condition to Python behind a cheap superset; so do ``~`` (the engines' regular
expressions are not Python's) and, on strings holding a NUL, ``$ !$ rin rnin`` (SQL sees such
a string only up to the NUL). Every predicate is two-valued: the JSON type is never NULL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from middlewared.query.bounded_regex import literal_prefix
from middlewared.query.filters import Cond, is_number
from middlewared.query.jsonpath import JsonNode
from middlewared.query.sqltext import FALSE, Sql, all_of, any_of, negate

if TYPE_CHECKING:
    from middlewared.query.sql import Dialect

# Numbers SQL compares exactly with every stored number (stored integers past 64 bits are
# read as doubles, which compare with these as Python compares the integers).
_INT64: Final = range(-(2**63), 2**63)
_FLOAT_BOUND: Final = 2.0**63

Compiled = tuple[Sql, bool]  # (predicate, exact)


class _Unfit(Exception):
    """The value cannot be compared in SQL exactly as Python compares it."""


@dataclass(frozen=True)
class _Field:
    node: JsonNode
    dialect: Dialect

    def typed(self, *types: str) -> Sql:
        """The value is of one of these JSON types (names are ours, never the caller's)."""
        names = ", ".join(f"'{t}'" for t in types)
        return self.node.type + Sql(f" IN ({names})" if len(types) > 1 else f" = {names}")

    def text(self, ci: bool) -> Sql:
        value = self.node.value
        return Sql(self.dialect.lower_template.format(value.text), value.params) if ci else value

    def element(self, node: JsonNode) -> _Field:
        return _Field(node, self.dialect)


def _number(value: Any) -> Any:
    """A number as a parameter SQL compares exactly with stored numbers, else _Unfit."""
    if isinstance(value, int) and value in _INT64:
        return value
    if isinstance(value, float) and abs(value) < _FLOAT_BOUND:
        return value
    raise _Unfit


def _plain_text(value: str) -> str:
    if "\0" in value:
        raise _Unfit
    return value


def _is_date_object(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and is_number(value.get("$date"))


def _equal(f: _Field, value: Any, ci: bool) -> Sql:
    """``values_equal(x, value)`` for an x that is not a date."""
    if value is None:
        return f.typed("null")
    if isinstance(value, bool):
        return f.typed("true" if value else "false")
    # The value's test comes first: most rows fail it, and SQLite stops there (then the type
    # test, which every row that passes it needs, makes the whole two-valued).
    if is_number(value):
        return all_of([f.node.value + Sql(" = ?", (_number(value),)), f.typed("integer", "real")])
    if isinstance(value, str):
        equal = f.text(ci) + Sql(" = ?", (_plain_text(value),))
        return all_of([equal, f.typed("text"), negate(f.node.has_nul)])
    if _is_date_object(value):
        return FALSE  # an x equal to a date object would itself be a date
    raise _Unfit  # lists and objects: compared whole in Python


def _date_test(f: _Field, date_value: Any, op: str) -> Sql:
    """How a date x (its milliseconds) compares with the operand read as a date."""
    if not is_number(date_value):
        return FALSE
    return all_of([f.node.is_date, f.node.date_ms + Sql(f" {op} ?", (_number(date_value),))])


def _eq(f: _Field, cond: Cond) -> Sql:
    return any_of([_equal(f, cond.operand, cond.ci), _date_test(f, cond.date_operand, "=")])


def _ne(f: _Field, cond: Cond) -> Sql:
    return all_of([negate(f.typed("missing")), negate(_eq(f, cond))])


def _order_text(f: _Field, value: str, op: str, ci: bool) -> Sql:
    """A string cut at its NUL (p) compares with a value holding none as the whole string
    does, except that the whole string is the longer: "p\\0..." > "p"."""
    text = f.text(ci)
    v = _plain_text(value)
    if op in ("<", ">="):
        return text + Sql(f" {op} ?", (v,))
    nul = f.node.has_nul if op == ">" else negate(f.node.has_nul)
    return any_of([text + Sql(f" {op[0]} ?", (v,)), all_of([text + Sql(" = ?", (v,)), nul])])


def _ordering(f: _Field, cond: Cond) -> Sql:
    op, value = cond.base_op, cond.operand
    if is_number(value):
        compared = f.node.value + Sql(f" {op} ?", (_number(value),))
        plain = all_of([compared, f.typed("integer", "real")])
    elif isinstance(value, str):
        plain = all_of([_order_text(f, value, op, cond.ci), f.typed("text")])
    elif isinstance(value, bool):
        truth = Sql("(CASE WHEN ") + f.node.type + Sql(" = 'true' THEN 1 ELSE 0 END)")
        plain = all_of([f.typed("true", "false"), truth + Sql(f" {op} ?", (int(value),))])
    else:
        plain = FALSE  # null, lists and objects order against nothing
    return any_of([plain, _date_test(f, cond.date_operand, op)])


def _in(f: _Field, cond: Cond) -> Sql:
    tests = [_equal(f, v, cond.ci) for v in cond.operand]
    tests += [_date_test(f, v, "=") for v in cond.date_operand]
    return any_of(tests)


def _nin(f: _Field, cond: Cond) -> Sql:
    return all_of([negate(f.typed("missing", "null")), negate(_in(f, cond))])


def _member(f: _Field, value: Any, ci: bool) -> Sql:
    """An item of the list equals ``value`` (``values_equal``, items folded when ci)."""
    if value is not None and not isinstance(value, bool | str) and not is_number(value):
        raise _Unfit  # a list or an object inside a list: Python compares them
    return f.node.any_element(lambda item: _equal(f.element(item), value, ci))


def _contains(f: _Field, cond: Cond, negated: bool) -> Compiled:
    """``rin``/``rnin``: the value in a list (exact) or in a string (cut at a NUL: the rows
    whose string holds one are kept for Python)."""
    value = cond.operand
    member = _member(f, value, cond.ci)
    in_list = all_of([f.typed("array"), negate(member) if negated else member])
    if not isinstance(value, str):
        return in_list, True
    if not value:  # '' is in every string, NUL or not
        return (in_list if negated else any_of([in_list, f.typed("text")])), True
    position = Sql(f"{f.dialect.contains_function}(") + f.text(cond.ci)
    found = position + Sql(f", ?) {'=' if negated else '>'} 0", (_plain_text(value),))
    in_text = all_of([f.typed("text"), any_of([f.node.has_nul, found])])
    return any_of([in_list, in_text]), False


def _affix_test(f: _Field, value: str, start: bool, ci: bool) -> Sql:
    """Whether the text starts (or ends) with ``value``. A string cut at a NUL starts with
    a value holding none exactly when the whole string does; its end is unknown. (No length
    test: SQL text here holds no NUL, and a part of a shorter text is shorter than value.)"""
    size = len(_plain_text(value))
    text = f.text(ci)
    if start:
        part = Sql("substr(") + text + Sql(", 1, ?)", (size,))
    else:
        part = Sql("substr(") + text + Sql(", length(") + text + Sql(") - ? + 1)", (size,))
    return part + Sql(" = ?", (value,))


def _affix(f: _Field, cond: Cond) -> Compiled:
    op, value = cond.base_op, cond.operand
    negated = op.startswith("!")
    text = f.typed("text")
    if not value:  # every string starts and ends with ''
        return (FALSE if negated else text), True
    start = op.endswith("^")
    test = _affix_test(f, value, start, cond.ci)
    test = negate(test) if negated else test
    if start:
        return all_of([test, text]), True
    # Where the string holds a NUL its end is unknown to SQL: Python decides those rows.
    return all_of([any_of([test, f.node.has_nul]), text]), False


def _exact(compile_: Callable[[_Field, Cond], Sql]) -> Callable[[_Field, Cond], Compiled]:
    return lambda f, cond: (compile_(f, cond), True)


_COMPILERS: Final[Mapping[str, Callable[[_Field, Cond], Compiled]]] = {
    "=": _exact(_eq),
    "!=": _exact(_ne),
    ">": _exact(_ordering),
    ">=": _exact(_ordering),
    "<": _exact(_ordering),
    "<=": _exact(_ordering),
    "in": _exact(_in),
    "nin": _exact(_nin),
    "rin": lambda f, cond: _contains(f, cond, negated=False),
    "rnin": lambda f, cond: _contains(f, cond, negated=True),
    "^": _affix,
    "!^": _affix,
    "$": _affix,
    "!$": _affix,
    "~": lambda f, cond: (_regex_superset(f, cond), False),
}


def _regex_superset(f: _Field, cond: Cond) -> Sql:
    """The strings a ``~`` may match: those that start with the pattern's literal head."""
    prefix = literal_prefix(cond.value)
    text = f.typed("text")
    return all_of([_affix_test(f, prefix, True, False), text]) if prefix else text


def compile_json_cond(node: JsonNode, cond: Cond, dialect: Dialect) -> Compiled:
    """The condition on the value at ``node``: exactly, or as a superset for Python to finish.

    A missing field makes every condition false, so "present" is the superset of last resort.
    """
    field = _Field(node, dialect)
    try:
        return _COMPILERS[cond.base_op](field, cond)
    except _Unfit:
        return negate(field.typed("missing")), False
