"""karajo's schedule strings (``minutely``, ``hourly@0,30``, ``daily@08:00,18:00``,
``weekly@Mon,Fri@09:00``, ``monthly@1,15@18:00``) as cron strings, and its ``interval``.

As karajo (pakakeh.go lib/time Scheduler): case does not matter, day names are full or
three-letter, an omitted list takes its default (minute 0, 00:00, Sunday, day 1), a day a
month lacks is skipped (``monthly@31`` does not fire in April). Where karajo silently drops
an invalid item (``hourly@0,75``, ``weekly@Sun_day``, ``daily@25:00``) or ignores a trailing
``@`` part, the whole schedule is refused with the reason; so is an empty schedule, which
karajo reads as minutely.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from middlewared.errors import validation_error
from middlewared.triggers.durations import parse_duration
from middlewared.triggers.periodic import DAY_NAMES

FIELD = "arguments"
# karajo's JobBase.Interval: "the minimum value is one minute".
MIN_INTERVAL = timedelta(minutes=1)
KINDS = ("minutely", "hourly", "daily", "weekly", "monthly")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})", re.ASCII)
_DAYS = {name: i for i, name in enumerate(DAY_NAMES)} | {n[:3]: i for i, n in enumerate(DAY_NAMES)}
_MAX_TEXT = 2000
_T = TypeVar("_T", int, tuple[int, int])


class _Bad(Exception):
    pass


def parse_interval(text: object, *, field: str = FIELD) -> timedelta:
    """karajo's ``interval``: a duration of at least one minute."""
    return parse_duration(text, field=field, minimum=MIN_INTERVAL)


def karajo_crons(text: object, *, field: str = FIELD) -> list[str]:
    """The 5-field cron strings whose union is the karajo schedule ``text`` (at most 24)."""
    if not isinstance(text, str) or not text.strip():
        raise validation_error(
            field, f"a karajo schedule is one of {', '.join(KINDS)}, with its '@' lists"
        )
    if len(text) > _MAX_TEXT:
        raise validation_error(field, f"schedule longer than {_MAX_TEXT} characters")
    raw = text.strip().lower()
    try:
        return _crons(raw)
    except _Bad as e:
        raise validation_error(field, f"{e} in schedule {text.strip()!r}") from None


def _crons(raw: str) -> list[str]:
    kind, *lists = raw.split("@")
    kind = kind.strip()
    if kind == "minutely":
        _at_most(kind, lists, [])
        return ["* * * * *"]
    if kind == "hourly":
        _at_most(kind, lists, ["MINUTES"])
        minutes = _items(lists, 0, _minute, [0])
        return [f"{_join(minutes)} * * * *"]
    if kind == "daily":
        _at_most(kind, lists, ["HH:MM"])
        return _by_time(_items(lists, 0, _clock, [(0, 0)]), "*", "*")
    if kind == "weekly":
        _at_most(kind, lists, ["DAYS", "HH:MM"])
        days = _items(lists, 0, _weekday, [0])
        return _by_time(_items(lists, 1, _clock, [(0, 0)]), "*", _join(days))
    if kind == "monthly":
        _at_most(kind, lists, ["DAYS", "HH:MM"])
        days = _items(lists, 0, _day_of_month, [1])
        return _by_time(_items(lists, 1, _clock, [(0, 0)]), _join(days), "*")
    raise _Bad(f"unknown kind {kind!r}: use {', '.join(KINDS)}")


def _at_most(kind: str, lists: list[str], names: list[str]) -> None:
    if len(lists) > len(names):
        form = kind + "".join(f"[@{n},...]" for n in names)
        raise _Bad(f"too many '@' parts: {kind} is written {form}")


def _items(lists: list[str], index: int, parse: Callable[[str], _T], default: list[_T]) -> list[_T]:
    """The parsed items of the ``index``-th list, sorted, or ``default`` when it is absent or
    empty (karajo's grammar allows ``weekly@@10:00``)."""
    text = lists[index].strip() if index < len(lists) else ""
    if not text:
        return default
    values = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise _Bad(f"empty item in list {text!r}")
        values.append(parse(item))
    return sorted(set(values))


def _join(values: list[int]) -> str:
    return ",".join(str(v) for v in values)


def _by_time(clocks: list[tuple[int, int]], dom: str, dow: str) -> list[str]:
    """One cron string per set of hours that share their minutes (at most 24)."""
    minutes_of: dict[int, list[int]] = {}
    for hour, minute in clocks:
        minutes_of.setdefault(hour, []).append(minute)
    hours_of: dict[str, list[int]] = {}
    for hour, minutes in sorted(minutes_of.items()):
        hours_of.setdefault(_join(minutes), []).append(hour)
    return [f"{minutes} {_join(hours)} {dom} * {dow}" for minutes, hours in hours_of.items()]


def _number(text: str, low: int, high: int, what: str) -> int:
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise _Bad(f"{text!r} is not a {what} ({low} to {high})")
    return int(text)


def _minute(text: str) -> int:
    return _number(text, 0, 59, "minute")


def _day_of_month(text: str) -> int:
    return _number(text, 1, 31, "day of the month")


def _clock(text: str) -> tuple[int, int]:
    m = _CLOCK.fullmatch(text)
    if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise _Bad(f"{text!r} is not a time of day (HH:MM, 00:00 to 23:59)")
    return int(m.group(1)), int(m.group(2))


def _weekday(text: str) -> int:
    day = _DAYS.get(text)
    if day is None:
        raise _Bad(f"unknown day {text!r}: write Sunday to Saturday, or Sun to Sat")
    return day
