"""cozy-stack's @hourly, @daily, @weekly and @monthly with their clauses (``on mon,wed``,
``on the 1-5``, ``before 5am``, ``after 10pm``, ``between 8am and 6pm``), turned into a cron
string at a random but stable time inside what the clauses allow, as cozy spreads load.

Decisions a user sees:
- A window never crosses midnight: ``between 6pm and 8am`` (and ``after 10pm before 5am``) is
  refused, as cozy-stack refuses it ("invalid hours range"); ``before 12am`` means the end of
  the day.
- @hourly honours a window (``@hourly between 8am and 6pm`` fires once an hour from 8:xx to
  17:xx), where cozy-stack ignores it; days (``on ...``) are only for @weekly and @monthly.
- Without ``on the``, @monthly picks a day from 1 to 28 so it fires every month (cozy's
  rule); a day the user names that a month lacks (``on the 31``) skips that month.
- The spread: ``random.Random(seed)`` (seed = the trigger id, so the time is the same after
  every restart) draws the second, the minute, the hour inside the window, then the day, in
  that order.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from middlewared.errors import validation_error

FIELD = "arguments"
KINDS = ("hourly", "daily", "weekly", "monthly")
DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_DAYS = {name: i for i, name in enumerate(DAY_NAMES)} | {n[:3]: i for i, n in enumerate(DAY_NAMES)}
_HOUR = re.compile(r"(\d{1,2})(am|pm)", re.ASCII)
_SPREAD_DAYS = tuple(range(1, 29))
_USAGE = "on DAYS, on the N, before H, after H, between H and H (H like 5am or 10pm)"


@dataclass(frozen=True)
class PeriodicSpec:
    """What the clauses allow: days and an hour window [after_hour, before_hour)."""

    kind: str
    days_of_month: tuple[int, ...] = _SPREAD_DAYS
    days_of_week: tuple[int, ...] = tuple(range(7))
    after_hour: int = 0
    before_hour: int = 24

    def to_cron(self, seed: int) -> str:
        """A 6-field cron string (seconds first) inside the spec, the same for the same seed."""
        rng = random.Random(seed)
        second = rng.randrange(60)
        minute = rng.randrange(60)
        hour = self.after_hour + rng.randrange(self.before_hour - self.after_hour)
        if self.kind == "hourly":
            hours = "*" if self._whole_day else f"{self.after_hour}-{self.before_hour - 1}"
            return f"{second} {minute} {hours} * * *"
        if self.kind == "weekly":
            return f"{second} {minute} {hour} * * {rng.choice(self.days_of_week)}"
        if self.kind == "monthly":
            return f"{second} {minute} {hour} {rng.choice(self.days_of_month)} * *"
        return f"{second} {minute} {hour} * * *"

    @property
    def _whole_day(self) -> bool:
        return self.after_hour == 0 and self.before_hour == 24


class _Clauses:
    """The parser's state: what each clause set, and the words that set it (for messages)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.days: dict[str, tuple[int, ...]] = {}
        self.hours: dict[str, int] = {}
        self.words: list[str] = []

    def set_days(self, key: str, days: tuple[int, ...]) -> None:
        if self.days:
            raise _Bad("two 'on' clauses: give the days once, as a list (on mon,wed)")
        self.days[key] = days

    def set_hour(self, key: str, hour: int, words: str) -> None:
        if key in self.hours:
            end = "start" if key == "after" else "end"
            raise _Bad(f"the window's {end} is given twice: {' '.join([*self.words, words])}")
        self.hours[key] = hour
        self.words.append(words)


class _Bad(Exception):
    pass


def parse_periodic(kind: str, text: object) -> PeriodicSpec:
    """Parse the clauses of ``@<kind>`` (kind in KINDS). Raises ValidationErrors on
    ``arguments`` saying what is wrong, e.g. "window ends before it starts: between 6pm and
    8am"."""
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise validation_error(FIELD, f"@{kind} takes clauses as a string ({_USAGE})")
    try:
        return _parse(kind, text.lower().split())
    except _Bad as e:
        raise validation_error(FIELD, f"@{kind}: {e}") from None


def _parse(kind: str, words: list[str]) -> PeriodicSpec:
    c = _Clauses(kind)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "on":
            i = _on(c, words, i + 1)
        elif word in ("before", "after"):
            hour = _hour(_next(words, i + 1, word), end=word == "before")
            c.set_hour(word, hour, f"{word} {words[i + 1]}")
            i += 2
        elif word == "between":
            start = _hour(_next(words, i + 1, word), end=False)
            if _next(words, i + 2, f"between {words[i + 1]}") != "and":
                raise _Bad(f"'between {words[i + 1]}' needs 'and H': between 8am and 6pm")
            end = _hour(_next(words, i + 3, "and"), end=True)
            c.set_hour("after", start, f"between {words[i + 1]}")
            c.set_hour("before", end, f"and {words[i + 3]}")
            i += 4
        else:
            raise _Bad(f"unknown word {word!r}: the clauses are {_USAGE}")
    return _spec(c)


def _spec(c: _Clauses) -> PeriodicSpec:
    after, before = c.hours.get("after", 0), c.hours.get("before", 24)
    window = " ".join(c.words)
    if before < after:
        raise _Bad(
            f"window ends before it starts: {window} (a window cannot cross midnight; "
            "use two triggers, or @cron)"
        )
    if before == after:
        raise _Bad(f"window is empty: {window}")
    return PeriodicSpec(
        c.kind,
        days_of_month=c.days.get("month", _SPREAD_DAYS),
        days_of_week=c.days.get("week", tuple(range(7))),
        after_hour=after,
        before_hour=before,
    )


def _next(words: list[str], i: int, after: str) -> str:
    if i >= len(words):
        raise _Bad(f"expecting more after {after!r}: the clauses are {_USAGE}")
    return words[i]


def _on(c: _Clauses, words: list[str], i: int) -> int:
    word = _next(words, i, "on")
    if word == "the":
        if c.kind != "monthly":
            raise _Bad("'on the N' (a day of the month) is only for @monthly")
        c.set_days("month", _days_of_month(_next(words, i + 1, "on the")))
        return i + 2
    if c.kind != "weekly":
        raise _Bad(f"'on {word}' (days of the week) is only for @weekly")
    c.set_days("week", _days_of_week(word))
    return i + 1


def _hour(word: str, *, end: bool) -> int:
    """5am -> 5, 12am -> 0 (24 as the end of a window), 12pm -> 12, 10pm -> 22."""
    m = _HOUR.fullmatch(word)
    if m is None or not 1 <= int(m.group(1)) <= 12:
        raise _Bad(f"{word!r} is not an hour: write 1am to 12am, or 1pm to 12pm")
    hour = int(m.group(1)) % 12 + (12 if m.group(2) == "pm" else 0)
    return 24 if end and hour == 0 else hour


def _days_of_month(word: str) -> tuple[int, ...]:
    days: set[int] = set()
    for item in word.split(","):
        first, dash, last = item.partition("-")
        low = _day_of_month(first, word)
        high = _day_of_month(last, word) if dash else low
        if high < low:
            raise _Bad(f"range of days ends before it starts: {item}")
        days.update(range(low, high + 1))
    return tuple(sorted(days))


def _day_of_month(text: str, word: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 31:
        raise _Bad(f"{text!r} in 'on the {word}' is not a day of the month (1 to 31)")
    return int(text)


def _days_of_week(word: str) -> tuple[int, ...]:
    days: set[int] = set()
    for item in word.split(","):
        if item == "weekday":
            days.update(range(1, 6))
        elif item == "weekend":
            days.update((0, 6))
        elif "-" in item:
            first, _, last = item.partition("-")
            low, high = _day_of_week(first), _day_of_week(last)
            if low == high:
                raise _Bad(f"range {item!r} starts and ends on one day: write the day alone")
            # Ranges wrap around the week (fri-mon), as in cozy-stack.
            days.update(d % 7 for d in range(low, high + (7 if high < low else 0) + 1))
        else:
            days.add(_day_of_week(item))
    return tuple(sorted(days))


def _day_of_week(text: str) -> int:
    day = _DAYS.get(text)
    if day is None:
        raise _Bad(f"unknown day {text!r}: write mon to sun, monday to sunday, weekday or weekend")
    return day
