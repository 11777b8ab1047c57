"""Cron schedules: the one place a cron string is parsed (with precise messages) and its next
times computed (by croniter), in a trigger's time zone with one rule for DST changes.

DST rule (vixie cron's, which users of cron expect): a schedule naming particular hours keeps
its wall-clock times, so a time the spring-forward gap skips fires at the end of the gap
(02:30 -> 03:00) and a time the fall-back hour repeats fires once, at its first occurrence;
a schedule whose hour field is every hour follows real time, so nothing is moved to the end
of the gap and the repeated hour fires again (every real hour has its fires). Both are
checked on the DST days of Europe/Paris and America/New_York in tests/unit/test_cron.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter

from middlewared.errors import validation_error

FIELD = "arguments"
MAX_TEXT = 200
_SHAPE = "a cron schedule has 5 fields, or 6 with seconds first"

_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}

# robfig/cron's descriptors, which cozy's @cron accepts too.
DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class _Field:
    label: str
    low: int
    high: int
    names: dict[str, int]
    # croniter's day extras: L (last day) and NW (nearest weekday) in the day of month,
    # D#N (the Nth such weekday) in the day of week; ? means * in either.
    day: str = ""


_SECOND = _Field("second", 0, 59, {})
_MINUTE = _Field("minute", 0, 59, {})
_HOUR = _Field("hour", 0, 23, {})
_DOM = _Field("day of month", 1, 31, {}, day="dom")
_MONTH = _Field("month", 1, 12, _MONTHS)
_DOW = _Field("day of week", 0, 7, _DAYS, day="dow")
_FIVE = (_MINUTE, _HOUR, _DOM, _MONTH, _DOW)
_SIX = (_SECOND, *_FIVE)

_NEAREST = re.compile(r"(\d+)W", re.ASCII | re.IGNORECASE)
_NTH = re.compile(r"(\w+)#(\d+)", re.ASCII)


class _Problem(Exception):
    """A message about one field, turned into a ValidationErrors with its position."""


@dataclass(frozen=True)
class CronExpression:
    """A checked cron string: as written (``text``), as handed to croniter (``spec``: every
    field spelled out as a list, so croniter's own parsing of ranges and steps is never
    relied on), and what the DST rule needs to know."""

    text: str
    spec: str
    seconds_first: bool
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]

    @property
    def every_hour(self) -> bool:
        return len(self.hours) == 24


@dataclass(frozen=True)
class _Parsed:
    values: frozenset[int]
    extras: tuple[str, ...] = ()  # croniter's day extras, normalised (L, 15W, 1#2)
    star: bool = False  # written * or ?: cron's rule for days (both restricted: either)

    def spec(self) -> str:
        if self.star:
            return "*"
        return ",".join([*(str(v) for v in sorted(self.values)), *self.extras])


def parse_cron(text: object, *, field: str = FIELD) -> CronExpression:
    """Check a cron string: 5 fields, or 6 with seconds first (cozy's form), or one of
    robfig's descriptors (@daily ...). Raises ValidationErrors naming ``field``, e.g.
    "cron field 3 (day of month) out of range: 32"."""
    if not isinstance(text, str):
        raise validation_error(field, f"{_SHAPE}; got {type(text).__name__}")
    if len(text) > MAX_TEXT:
        raise validation_error(field, f"cron schedule longer than {MAX_TEXT} characters")
    raw = text.strip()
    raw = DESCRIPTORS.get(raw.lower(), raw)
    parts = raw.split()
    if len(parts) not in (5, 6):
        if len(parts) == 1 and raw.startswith("@"):
            names = ", ".join(DESCRIPTORS)
            raise validation_error(field, f"unknown descriptor {raw!r}: {names}; or {_SHAPE}")
        raise validation_error(field, f"{len(parts)} fields: {_SHAPE}")
    specs = _SIX if len(parts) == 6 else _FIVE
    parsed: list[_Parsed] = []
    for pos, (spec, part) in enumerate(zip(specs, parts, strict=True), 1):
        try:
            parsed.append(_check_field(spec, part))
        except _Problem as e:
            raise validation_error(field, f"cron field {pos} ({spec.label}) {e}") from None
    seconds_first = len(parts) == 6
    offset = 1 if seconds_first else 0
    dom, dow = parsed[offset + 2], parsed[offset + 4]
    special = any(x.endswith("W") for x in dom.extras) or bool(dow.extras)
    if special and not (dom.star or dow.star):
        # croniter would intersect the two fields there, where cron's rule is either.
        raise validation_error(
            field, "W (nearest weekday) and # (nth weekday) need the other day field to be *"
        )
    expression = " ".join(p.spec() for p in parsed)
    try:
        # What we accept croniter must take too; its reason is shown if it does not.
        croniter(expression, 0.0, second_at_beginning=seconds_first)
    except CroniterError as e:
        raise validation_error(field, f"cron schedule {raw!r} refused: {e}") from None
    return CronExpression(
        " ".join(parts),
        expression,
        seconds_first,
        parsed[0].values if seconds_first else frozenset({0}),
        parsed[offset].values,
        parsed[offset + 1].values,
    )


def _check_field(spec: _Field, text: str) -> _Parsed:
    if text == "*" or (text == "?" and spec.day):
        return _Parsed(frozenset(range(spec.low, spec.high + 1)), star=True)
    values: set[int] = set()
    extras: list[str] = []
    for item in text.split(","):
        if not item:
            raise _Problem(f"has an empty item: {text!r}")
        extra = _day_extra(spec, item) if spec.day else None
        if extra is not None:
            extras.append(extra)
            continue
        base, slash, step_text = item.partition("/")
        step = _step(spec, step_text) if slash else 1
        low, high = _range(spec, base, stepped=bool(slash))
        values.update(range(low, high + 1, step))
    if spec.day == "dow":
        values = {v % 7 for v in values}  # 7 is Sunday too
    if any(x.endswith("W") for x in extras) and len(extras) + len(values) > 1:
        raise _Problem(f"W (nearest weekday) stands alone in its field: {text!r}")
    if spec.day == "dow" and extras and values:
        raise _Problem(f"# (nth weekday) cannot be mixed with plain days: {text!r}")
    return _Parsed(frozenset(values), tuple(extras))


def _step(spec: _Field, text: str) -> int:
    span = spec.high - spec.low + 1
    if not (text.isascii() and text.isdigit()):
        raise _Problem(f"step is not a number: {text!r}")
    step = int(text)
    if not 1 <= step <= span:
        raise _Problem(f"step out of range 1-{span}: {step}")
    return step


def _range(spec: _Field, base: str, *, stepped: bool) -> tuple[int, int]:
    if base == "*" or (base == "?" and spec.day):
        return spec.low, spec.high
    first, dash, last = base.partition("-")
    low = _value(spec, first)
    if not dash:
        # "5/15" is 5-59/15, as in robfig/cron and croniter.
        return (low, spec.high) if stepped else (low, low)
    high = _value(spec, last)
    if high < low:
        raise _Problem(f"range ends before it starts: {base}")
    return low, high


def _value(spec: _Field, text: str) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
        if not spec.low <= value <= spec.high:
            raise _Problem(f"out of range: {value} (allowed {spec.low}-{spec.high})")
        return value
    named = spec.names.get(text.lower())
    if named is None:
        allowed = f"{spec.low}-{spec.high}"
        if spec.names:
            allowed += " or " + ", ".join(spec.names)
        raise _Problem(f"is not a value: {text!r} (allowed {allowed})")
    return named


def _day_extra(spec: _Field, item: str) -> str | None:
    """croniter's day extras (L, NW, D#N), checked and normalised; None when ``item`` is
    not one."""
    if spec.day == "dom":
        if item.upper() == "L":
            return "L"
        m = _NEAREST.fullmatch(item)
        return None if m is None else f"{_value(spec, m.group(1))}W"
    m = _NTH.fullmatch(item)
    if m is None:
        return None
    day = _value(spec, m.group(1)) % 7
    nth = int(m.group(2))
    if not 1 <= nth <= 5:
        raise _Problem(f"out of range: #{nth} (allowed #1-#5)")
    return f"{day}#{nth}"


class CronSchedule:
    """Fires at the times of a cron expression in ``zone``; DST by the module's rule."""

    once = False

    def __init__(self, expression: CronExpression, zone: ZoneInfo) -> None:
        self.expression = expression
        self.zone = zone

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression.text!r}, {self.zone.key!r})"

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after`` (aware), in UTC; None when none is left
        (past year 9999, or a date croniter cannot find within its 50-year search)."""
        start = _aware(after).astimezone(self.zone)
        # Each pass either returns or moves past one gap or one repeated hour; a couple suffice.
        for _ in range(8):
            try:
                found = croniter(
                    self.expression.spec,
                    start,
                    second_at_beginning=self.expression.seconds_first,
                ).get_next(datetime)
            except (CroniterBadDateError, OverflowError, ValueError):
                return None
            verdict = self._dst_verdict(found)
            if verdict is None:
                return found.astimezone(UTC)
            start = verdict
        return found.astimezone(UTC)

    def _dst_verdict(self, found: datetime) -> datetime | None:
        """None to fire at ``found``; else where to search from instead."""
        expr = self.expression
        if not (
            found.second in expr.seconds
            and found.minute in expr.minutes
            and found.hour in expr.hours
        ):
            # croniter moved a time the spring-forward gap skipped to the gap's end.
            return found if expr.every_hour else None
        if found.fold == 1 and found.replace(fold=0).utcoffset() != found.utcoffset():
            # The repeated hour's second pass: particular hours already fired in the first.
            return None if expr.every_hour else _repeat_end(found)
        return None


def _repeat_end(found: datetime) -> datetime:
    """Just before the end of the repeated hour's second pass that ``found`` lies in."""
    after_offset = found.utcoffset()
    before_offset = found.replace(fold=0).utcoffset()
    assert after_offset is not None and before_offset is not None
    size = before_offset - after_offset
    # The clock went back at an instant in (found - size, found]: a whole second in tzdata.
    instant = found.astimezone(UTC)
    low = int((instant - size).timestamp())
    high = int(instant.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, found.tzinfo).utcoffset() == after_offset:
            high = middle
        else:
            low = middle
    end = datetime.fromtimestamp(high, UTC) + size
    return (end - timedelta(microseconds=1)).astimezone(found.tzinfo)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment!r}: schedules take aware datetimes")
    return moment
