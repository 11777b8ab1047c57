"""Time-based trigger types parsed into schedules that say when they fire next: everything
is checked once, when the trigger is created, never when it fires.

Types (PROTOCOL.md section 9): ``@at`` (RFC 3339, once), ``@in`` (a duration after
``created``, once), ``@every`` (every duration from ``created``), ``@cron``, cozy's
``@hourly``/``@daily``/``@weekly``/``@monthly`` with clauses, and karajo's ``@schedule``
(``daily@08:00`` ...) and ``@interval`` (``@every`` with karajo's one-minute minimum). Times
are computed in ``options.timezone`` (default: the server's zone; for karajo's ``@schedule``
UTC, as karajo computes them) and returned as aware UTC datetimes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from middlewared.errors import ValidationErrors, validation_error
from middlewared.triggers import zones
from middlewared.triggers.cron import CronSchedule, parse_cron
from middlewared.triggers.durations import parse_duration
from middlewared.triggers.karajo import karajo_crons, parse_interval
from middlewared.triggers.periodic import KINDS as PERIODIC_KINDS
from middlewared.triggers.periodic import parse_periodic

FIELD = "arguments"
PERIODIC_TYPES = tuple(f"@{kind}" for kind in PERIODIC_KINDS)
TIME_TYPES = ("@at", "@in", "@every", "@cron", *PERIODIC_TYPES, "@schedule", "@interval")
# @every and @in count in whole seconds at the finest, as cozy's (robfig's @every rounds
# to the second).
MIN_EVERY = timedelta(seconds=1)

_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


class Schedule(Protocol):
    """When a time-based trigger fires."""

    # True for @at and @in: the trigger is done (deleted) after its one fire.
    once: bool

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire strictly after ``after`` (aware), as an aware UTC datetime; None
        when the schedule never fires again."""


class OnceSchedule:
    """@at and @in: one fire at ``at``."""

    once = True

    def __init__(self, at: datetime) -> None:
        self.at = at.astimezone(UTC)

    def __repr__(self) -> str:
        return f"OnceSchedule({self.at.isoformat()})"

    def next_after(self, after: datetime) -> datetime | None:
        return self.at if self.at > after else None


class EverySchedule:
    """@every and @interval: at ``start + k * period`` for k >= 1, so the times stay the
    same whatever instants the engine asks about (a restart does not shift them)."""

    once = False

    def __init__(self, start: datetime, period: timedelta) -> None:
        self.start = start.astimezone(UTC)
        self.period = period

    def __repr__(self) -> str:
        return f"EverySchedule({self.start.isoformat()}, {self.period})"

    def next_after(self, after: datetime) -> datetime | None:
        k = max(1, (after - self.start) // self.period + 1)
        try:
            return self.start + k * self.period
        except OverflowError:
            return None


class UnionSchedule:
    """The earliest next fire of several schedules (karajo's lists of times)."""

    once = False

    def __init__(self, members: list[CronSchedule]) -> None:
        self.members = members

    def __repr__(self) -> str:
        return f"UnionSchedule({self.members!r})"

    def next_after(self, after: datetime) -> datetime | None:
        times = [t for m in self.members if (t := m.next_after(after)) is not None]
        return min(times, default=None)


def parse_schedule(
    type: str, arguments: object, *, timezone: str | None, created: datetime, seed: int
) -> Schedule:
    """The schedule of a time-based trigger (``type`` in TIME_TYPES).

    ``created``: the aware instant the trigger counts from (@in, @every, @interval, and the
    check that @at is in the future); ``seed``: the trigger id, which spreads @hourly..
    @monthly. Raises ValidationErrors naming ``type``, ``arguments`` or
    ``options.timezone`` with the reason; every error found is reported at once.
    """
    if created.tzinfo is None or created.utcoffset() is None:
        raise ValueError("created must be an aware datetime")
    errors = ValidationErrors()
    zone = zones.UTC
    try:
        zone = zones.resolve_timezone(timezone, default=zones.UTC if type == "@schedule" else None)
    except ValidationErrors as e:
        errors.errors.extend(e.errors)
    try:
        schedule = _build(type, arguments, zone, created, seed)
    except ValidationErrors as e:
        errors.errors.extend(e.errors)
    if errors.errors:
        raise ValidationErrors(errors.errors)
    if not schedule.once and schedule.next_after(created) is None:
        raise validation_error(FIELD, f"{type} {arguments!r} never fires: no date matches it")
    return schedule


def _build(type: str, arguments: object, zone: ZoneInfo, created: datetime, seed: int) -> Schedule:
    if type == "@at":
        return _at(arguments, created)
    if type == "@in":
        return OnceSchedule(created.astimezone(UTC) + parse_duration(arguments, minimum=MIN_EVERY))
    if type == "@every":
        return EverySchedule(created, parse_duration(arguments, minimum=MIN_EVERY))
    if type == "@interval":
        return EverySchedule(created, parse_interval(arguments))
    if type == "@cron":
        return CronSchedule(parse_cron(arguments), zone)
    if type in PERIODIC_TYPES:
        cron = parse_periodic(type[1:], arguments).to_cron(seed)
        return CronSchedule(parse_cron(cron), zone)
    if type == "@schedule":
        return UnionSchedule([CronSchedule(parse_cron(c), zone) for c in karajo_crons(arguments)])
    raise validation_error("type", f"{type!r} is not a time-based trigger type: {TIME_TYPES}")


def parse_rfc3339(text: object, *, field: str = FIELD) -> datetime:
    """An RFC 3339 time with its offset (``2026-07-01T08:00:00Z``), as an aware datetime."""
    usage = "an RFC 3339 time such as 2026-07-01T08:00:00Z or 2026-07-01T10:00:00+02:00"
    if not isinstance(text, str):
        raise validation_error(field, f"expected {usage}")
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        raise validation_error(field, f"{text!r} is not {usage} (the offset is required)")
    date, clock, fraction, offset = m.groups()
    offset = "+00:00" if offset in "Zz" else offset
    fraction = f".{(fraction or '')[:6]:0<6}"
    try:
        return datetime.fromisoformat(f"{date}T{clock}{fraction}{offset}")
    except ValueError as e:
        raise validation_error(field, f"{text!r} is not a valid time: {e}") from None


def _at(arguments: object, created: datetime) -> OnceSchedule:
    at = parse_rfc3339(arguments)
    if at <= created:
        raise validation_error(
            FIELD,
            f"{arguments!r} is not in the future (the trigger is created at "
            f"{created.astimezone(UTC).isoformat()})",
        )
    return OnceSchedule(at)
