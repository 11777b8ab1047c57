"""Query filters: the grammar parsed once into an immutable tree, evaluated in Python."""

from __future__ import annotations

import dataclasses
import errno
import operator
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeVar

from middlewared.errors import ValidationErrors
from middlewared.query.bounded_regex import BUDGET_SECONDS, BoundedRegex, RegexBudget
from middlewared.query.bounded_regex import Error as RegexError

MAX_OR_DEPTH: Final = 3
# Conditions (inside ORs too) one filter may hold: each costs SQL to run and, for ``~``,
# a share of the regex budget (middlewared --max-query-conditions).
MAX_CONDITIONS: Final = 64
BASE_OPS: Final = frozenset(
    {"=", "!=", ">", ">=", "<", "<=", "~", "in", "nin", "rin", "rnin", "^", "!^", "$", "!$"}
)
STRING_OPS: Final = frozenset({"~", "^", "!^", "$", "!$"})

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ASCII_LOWER: Final = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

R = TypeVar("R", bound=Mapping[str, Any])


class _Missing:
    """The value of a field path that is not present in a record."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


# --- values -------------------------------------------------------------------------------


def split_field(name: Any) -> tuple[str, ...] | None:
    """The segments of a dotted field path, or None when it is not a valid field name."""
    if not isinstance(name, str) or not name:
        return None
    parts = tuple(name.split("."))
    return None if "" in parts else parts


def resolve(record: Any, path: tuple[str, ...]) -> Any:
    """The value at a field path; a numeric segment indexes a list. MISSING when absent."""
    current = record
    for segment in path:
        if isinstance(current, Mapping):
            if segment not in current:
                return MISSING
            current = current[segment]
        elif _is_seq(current) and segment.isascii() and segment.isdigit():
            index = int(segment)
            if index >= len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def is_number(value: Any) -> bool:
    """An int or float; booleans are not numbers."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def date_object_ms(value: Any) -> int | float | None:
    """The milliseconds of a ``{"$date": ms}`` object, else None."""
    if isinstance(value, Mapping) and len(value) == 1 and is_number(value.get("$date")):
        ms: int | float = value["$date"]
        return ms
    return None


def iso_ms(text: str) -> int | float | None:
    """Milliseconds since the epoch of an ISO-8601 string (naive means UTC), else None."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros // 1000 if micros % 1000 == 0 else micros / 1000


def date_value_ms(value: Any) -> int | float | None:
    """A condition value as a date: ``{"$date": ms}`` or an ISO-8601 string, else None."""
    if isinstance(value, str):
        return iso_ms(value)
    return date_object_ms(value)


def fold(value: Any) -> Any:
    """Case folding for the C operators: ASCII letters only, exactly as SQL LOWER() does."""
    if isinstance(value, str):
        return value.translate(_ASCII_LOWER)
    if _is_seq(value):
        return tuple(fold(item) for item in value)
    return value


def values_equal(a: Any, b: Any) -> bool:
    """Equality where booleans, numbers, strings and null never equal one another."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        return bool(a == b)
    if _is_seq(a) and _is_seq(b):
        return len(a) == len(b) and all(map(values_equal, a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


def comparable(a: Any, b: Any) -> bool:
    """Whether an ordering comparison is defined: number-number, string-string, bool-bool."""
    if is_number(a):
        return is_number(b)
    if isinstance(a, str):
        return isinstance(b, str)
    return isinstance(a, bool) and isinstance(b, bool)


def freeze(value: Any) -> Any:
    """A deep immutable copy of a JSON-like value (lists become tuples)."""
    if _is_seq(value):
        return tuple(freeze(item) for item in value)
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    return value


def _is_seq(value: Any) -> bool:
    return isinstance(value, list | tuple)


# --- operators ------------------------------------------------------------------------------


def _contains(haystack: Any, needle: Any) -> bool | None:
    """``needle in haystack`` for a string or list haystack; None where it is undefined."""
    if isinstance(haystack, str):
        return needle in haystack if isinstance(needle, str) else None
    if _is_seq(haystack):
        return any(values_equal(item, needle) for item in haystack)
    return None


def _ordered(compare: Callable[[Any, Any], Any]) -> Callable[[Any, Any], bool]:
    def test(x: Any, v: Any) -> bool:
        return comparable(x, v) and bool(compare(x, v))

    return test


def _op_ne(x: Any, v: Any) -> bool:
    return not values_equal(x, v)


def _op_regex(x: Any, pattern: BoundedRegex) -> bool:
    return isinstance(x, str) and pattern.match(x)


def _op_in(x: Any, values: tuple[Any, ...]) -> bool:
    return any(values_equal(x, v) for v in values)


def _op_nin(x: Any, values: tuple[Any, ...]) -> bool:
    return x is not None and not _op_in(x, values)


def _op_rin(x: Any, v: Any) -> bool:
    return _contains(x, v) is True


def _op_rnin(x: Any, v: Any) -> bool:
    return _contains(x, v) is False


def _op_starts(x: Any, v: str) -> bool:
    return isinstance(x, str) and x.startswith(v)


def _op_not_starts(x: Any, v: str) -> bool:
    return isinstance(x, str) and not x.startswith(v)


def _op_ends(x: Any, v: str) -> bool:
    return isinstance(x, str) and x.endswith(v)


def _op_not_ends(x: Any, v: str) -> bool:
    return isinstance(x, str) and not x.endswith(v)


_OPS: Final[Mapping[str, Callable[[Any, Any], bool]]] = {
    "=": values_equal,
    "!=": _op_ne,
    ">": _ordered(operator.gt),
    ">=": _ordered(operator.ge),
    "<": _ordered(operator.lt),
    "<=": _ordered(operator.le),
    "~": _op_regex,
    "in": _op_in,
    "nin": _op_nin,
    "rin": _op_rin,
    "rnin": _op_rnin,
    "^": _op_starts,
    "!^": _op_not_starts,
    "$": _op_ends,
    "!$": _op_not_ends,
}


def split_op(op: Any) -> tuple[str, bool] | None:
    """``(base operator, case-insensitive)`` of an operator, or None when it is unknown."""
    if not isinstance(op, str):
        return None
    if op in BASE_OPS:
        return op, False
    if op.startswith("C") and op[1:] in BASE_OPS and op != "C~":
        return op[1:], True
    return None


def check_cond(name: Any, op: Any, value: Any) -> str | None:
    """Why ``[name, op, value]`` is not a valid condition, or None when it is."""
    if split_field(name) is None:
        return f"invalid field name {name!r}: expected a non-empty dotted path"
    if op == "C~":
        return "the C (case-insensitive) prefix is not allowed on ~"
    parts = split_op(op)
    if parts is None:
        return f"unknown operator {op!r}"
    base = parts[0]
    if base in ("in", "nin") and not _is_seq(value):
        return f"operator {op!r} expects a list value"
    if base in STRING_OPS and not isinstance(value, str):
        return f"operator {op!r} expects a string value"
    if base == "~":
        try:
            BoundedRegex(value)
        except (RegexError, OverflowError, RecursionError, ValueError) as exc:
            return f"invalid regular expression {value!r}: {exc}"
    return None


def _operands(base: str, ci: bool, value: Any) -> tuple[Any, Any]:
    """The value as compared with a plain field, and as compared with a date field."""
    if base == "~":
        pattern = BoundedRegex(value)
        return pattern, pattern
    if base in ("in", "nin"):
        plain = tuple(fold(v) if ci else v for v in value)
        return plain, tuple(_date_operand(v, p) for v, p in zip(value, plain, strict=True))
    plain = fold(value) if ci else value
    return plain, _date_operand(value, plain)


def _date_operand(raw: Any, plain: Any) -> Any:
    ms = date_value_ms(raw)
    return plain if ms is None else ms


# --- the tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cond:
    """One ``[field, op, value]`` condition."""

    field: str
    op: str
    value: Any
    path: tuple[str, ...] = dataclasses.field(init=False, repr=False, compare=False)
    base_op: str = dataclasses.field(init=False, repr=False, compare=False)
    ci: bool = dataclasses.field(init=False, repr=False, compare=False)
    operand: Any = dataclasses.field(init=False, repr=False, compare=False)
    date_operand: Any = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        problem = check_cond(self.field, self.op, self.value)
        if problem is not None:
            raise ValueError(problem)
        base, ci = split_op(self.op) or (self.op, False)
        value = freeze(self.value)
        operand, date_operand = _operands(base, ci, value)
        derived = {
            "value": value,
            "path": split_field(self.field),
            "base_op": base,
            "ci": ci,
            "operand": operand,
            "date_operand": date_operand,
        }
        for name, item in derived.items():
            object.__setattr__(self, name, item)

    def matches(self, record: Mapping[str, Any]) -> bool:
        x = resolve(record, self.path)
        if x is MISSING:
            return False
        ms = date_object_ms(x)
        if ms is not None:
            return _OPS[self.base_op](ms, self.date_operand)
        if self.ci:
            x = fold(x)
        return _OPS[self.base_op](x, self.operand)


@dataclass(frozen=True)
class Or:
    """``["OR", [branch, ...]]``: at least one branch holds."""

    branches: tuple[Node, ...]

    def matches(self, record: Mapping[str, Any]) -> bool:
        return any(branch.matches(record) for branch in self.branches)


@dataclass(frozen=True)
class Filter:
    """A list of conditions that must all hold: the whole filter, or an AND group."""

    conds: tuple[Node, ...] = ()

    def matches(self, record: Mapping[str, Any]) -> bool:
        return all(cond.matches(record) for cond in self.conds)

    def filter(self, records: Iterable[R]) -> Iterator[R]:
        """The records that match, in their order."""
        return (record for record in records if self.matches(record))


Node: TypeAlias = Cond | Or | Filter


# --- parsing --------------------------------------------------------------------------------


@dataclass
class _Parsing:
    """One parse: the errors found, the conditions left, the ``~`` budget they share."""

    errors: ValidationErrors
    max_conditions: int
    budget: RegexBudget
    conditions: int = 0


def parse_filters(
    filters: Any,
    *,
    max_conditions: int = MAX_CONDITIONS,
    regex_seconds: float = BUDGET_SECONDS,
) -> Filter:
    """Validate a filter list and build its tree; every problem is reported at once.

    The tree is one query's: its ``~`` conditions share one matching budget.
    """
    if not _is_seq(filters):
        raise ValidationErrors([("filters", "must be a list of conditions", errno.EINVAL)])
    ctx = _Parsing(ValidationErrors(), max_conditions, RegexBudget(regex_seconds))
    try:
        conds = _parse_conds(filters, "filters", 0, ctx)
    except RecursionError:
        raise ValidationErrors([("filters", "nested too deeply", errno.EINVAL)]) from None
    if ctx.errors:
        raise ctx.errors
    return Filter(conds)


def _too_many(limit: int) -> ValidationErrors:
    return ValidationErrors(
        [
            (
                "filters",
                f"more than {limit} conditions (counting those inside OR): split the query "
                "or raise middlewared --max-query-conditions",
                errno.EINVAL,
            )
        ]
    )


def _parse_conds(items: Iterable[Any], where: str, depth: int, ctx: _Parsing) -> tuple[Node, ...]:
    nodes = [_parse_cond(item, f"{where}.{i}", depth, ctx) for i, item in enumerate(items)]
    return tuple(node for node in nodes if node is not None)


def _parse_cond(item: Any, where: str, depth: int, ctx: _Parsing) -> Node | None:
    if _is_seq(item) and len(item) == 2 and item[0] == "OR":
        return _parse_or(item[1], where, depth + 1, ctx)
    if not _is_seq(item) or len(item) != 3:
        ctx.errors.add(where, 'malformed condition: expected [field, op, value] or ["OR", [...]]')
        return None
    ctx.conditions += 1
    if ctx.conditions > ctx.max_conditions:
        # Stop before compiling more patterns: the count alone refuses the query.
        raise _too_many(ctx.max_conditions)
    problem = check_cond(*item)
    if problem is not None:
        ctx.errors.add(where, problem)
        return None
    cond = Cond(*item)
    if cond.base_op == "~":
        cond.operand.budget = ctx.budget
    return cond


def _parse_or(branches: Any, where: str, depth: int, ctx: _Parsing) -> Node | None:
    if depth > MAX_OR_DEPTH:
        ctx.errors.add(where, f"OR nested deeper than {MAX_OR_DEPTH} levels")
        return None
    if not _is_seq(branches) or not branches:
        ctx.errors.add(where, "OR needs a non-empty list of branches")
        return None
    count = len(ctx.errors.errors)
    nodes = [_parse_branch(b, f"{where}.1.{i}", depth, ctx) for i, b in enumerate(branches)]
    if len(ctx.errors.errors) > count:
        return None
    return Or(tuple(node for node in nodes if node is not None))


def _parse_branch(branch: Any, where: str, depth: int, ctx: _Parsing) -> Node | None:
    """A branch is a condition, or a non-empty list of conditions (an AND group)."""
    if _is_seq(branch) and branch and _is_seq(branch[0]):
        return Filter(_parse_conds(branch, where, depth, ctx))
    if _is_seq(branch) and not branch:
        ctx.errors.add(where, "empty OR branch")
        return None
    return _parse_cond(branch, where, depth, ctx)
