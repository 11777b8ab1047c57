"""Durations as cozy-stack writes them (``10s``, ``3m``, ``1h30m``, ``1.5h``, ``2d``): for
``@in``, ``@every``, ``debounce`` and karajo's ``interval``."""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction

from middlewared.errors import validation_error

# Go's time.ParseDuration, which cozy uses, restricted to the units cozy documents (s, m, h)
# plus days; ms/us/ns are refused: nothing a trigger does is finer than a second.
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([a-zA-Zµ]*)")

# Long enough for any real schedule, short enough that any date of this century plus it is
# still a date (a datetime overflows past year 9999).
MAX_DURATION = timedelta(days=36500)
# A duration is a few characters; a megabyte of digits is refused before any arithmetic.
MAX_TEXT = 64

_FORMS = "a number and a unit (s, m, h or d), e.g. 10s, 3m, 1h30m, 1.5h, 2d"


def parse_duration(
    text: object, *, field: str = "arguments", minimum: timedelta = timedelta(0)
) -> timedelta:
    """A positive duration, at least ``minimum`` (a zero minimum still refuses 0).

    Raises ValidationErrors naming ``field`` with what is wrong: empty, a sign, an unknown
    or missing unit, zero, below the minimum, or over MAX_DURATION. Rounded to microseconds.
    """
    if not isinstance(text, str):
        raise validation_error(field, f"a duration is a string ({_FORMS}), not {_kind(text)}")
    raw = text.strip()
    if not raw:
        raise validation_error(field, f"empty duration: write {_FORMS}")
    if len(raw) > MAX_TEXT:
        raise validation_error(field, f"duration longer than {MAX_TEXT} characters")
    if raw[0] in "+-":
        raise validation_error(field, f"{raw!r}: a duration has no sign; it is always positive")
    seconds = _seconds(raw, field)
    if seconds > Fraction(int(MAX_DURATION.total_seconds())):
        raise validation_error(field, f"{raw!r} is too long: at most {show_duration(MAX_DURATION)}")
    value = timedelta(microseconds=round(seconds * 1_000_000))
    if value <= timedelta(0):
        raise validation_error(field, f"{raw!r}: a duration must be more than zero")
    if value < minimum:
        raise validation_error(field, f"{raw!r} is too short: at least {show_duration(minimum)}")
    return value


def parse_debounce(value: object) -> timedelta | None:
    """A trigger's ``debounce``: None or "" for none, else a duration of at least a second."""
    if value is None or value == "":
        return None
    return parse_duration(value, field="debounce", minimum=timedelta(seconds=1))


def _seconds(raw: str, field: str) -> Fraction:
    total = Fraction(0)
    pos = 0
    while pos < len(raw):
        m = _TERM.match(raw, pos)
        if m is None:
            raise validation_error(field, f"{raw!r} is not a duration: write {_FORMS}")
        number, unit = m.groups()
        if not unit:
            raise validation_error(field, f"{raw!r}: missing unit after {number}: write {_FORMS}")
        if unit not in UNITS:
            raise validation_error(
                field, f"{raw!r}: unknown unit {unit!r}: the units are s, m, h and d"
            )
        total += Fraction(number) * UNITS[unit]
        pos = m.end()
    return total


def show_duration(d: timedelta) -> str:
    """``d`` in the form parse_duration reads, whole seconds (90s -> 1m30s)."""
    seconds = int(d.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
