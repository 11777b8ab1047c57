"""Every time-based trigger type parsed into a schedule: its fires from a fixed ``created``,
cozy's clauses and their spread, karajo's schedule strings, time zones, and a precise
refusal, naming the field, of each kind of bad input."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from middlewared.errors import ValidationErrors
from middlewared.triggers import zones
from middlewared.triggers.cron import CronSchedule
from middlewared.triggers.periodic import parse_periodic
from middlewared.triggers.schedule import (
    TIME_TYPES,
    EverySchedule,
    OnceSchedule,
    Schedule,
    UnionSchedule,
    parse_rfc3339,
    parse_schedule,
)

CREATED = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)  # a Wednesday
PARIS = ZoneInfo("Europe/Paris")


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def parse(type: str, arguments: object, timezone: str | None = "UTC", seed: int = 7) -> Schedule:
    return parse_schedule(type, arguments, timezone=timezone, created=CREATED, seed=seed)


def fires(schedule: Schedule, count: int, after: datetime = CREATED) -> list[datetime]:
    out: list[datetime] = []
    for _ in range(count):
        nxt = schedule.next_after(after)
        if nxt is None:
            break
        out.append(nxt)
        after = nxt
    return out


def refusal(type: str, arguments: object, timezone: str | None = "UTC") -> list[tuple[str, str]]:
    with pytest.raises(ValidationErrors) as e:
        parse(type, arguments, timezone)
    return [(field, message) for field, message, _ in e.value.errors]


# --- @at, @in, @every ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-02T08:00:00Z", utc(2024, 5, 2, 8)),
        ("2024-05-02t08:00:00z", utc(2024, 5, 2, 8)),
        ("2024-05-02 10:00:00+02:00", utc(2024, 5, 2, 8)),
        ("2024-05-02T03:00:00-05:00", utc(2024, 5, 2, 8)),
        ("2018-12-12T15:36:25.507Z", utc(2018, 12, 12, 15, 36, 25, 507000)),
        ("2024-05-02T08:00:00.123456789Z", utc(2024, 5, 2, 8, 0, 0, 123456)),
    ],
)
def test_rfc3339(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2024-05-02T08:00:00", "is not an RFC 3339 time"),
        ("2024-05-02", "is not an RFC 3339 time"),
        ("20240502T080000Z", "is not an RFC 3339 time"),
        ("tomorrow", "is not an RFC 3339 time"),
        ("2024-02-30T08:00:00Z", "is not a valid time: day is out of range for month"),
        ("2024-05-02T24:00:00Z", "is not a valid time"),
        ("2024-05-02T08:00:00+24:00", "is not a valid time"),
        (1714636800, "expected an RFC 3339 time"),
    ],
)
def test_rfc3339_refused(text: object, message: str) -> None:
    [(field, reason)] = refusal("@at", text)
    assert field == "arguments"
    assert message in reason


def test_at_fires_once() -> None:
    schedule = parse("@at", "2024-05-02T08:00:00Z")
    assert isinstance(schedule, OnceSchedule) and schedule.once
    assert fires(schedule, 3) == [utc(2024, 5, 2, 8)]
    assert schedule.next_after(utc(2024, 5, 2, 8)) is None


def test_at_must_be_after_created() -> None:
    [(field, reason)] = refusal("@at", "2024-05-01T12:00:00Z")
    assert field == "arguments"
    assert reason == (
        "'2024-05-01T12:00:00Z' is not in the future (the trigger is created at "
        "2024-05-01T12:00:00+00:00)"
    )


def test_in_fires_once_after_created() -> None:
    schedule = parse("@in", "1h30m")
    assert schedule.once
    assert fires(schedule, 3) == [utc(2024, 5, 1, 13, 30)]


def test_in_is_counted_in_real_time_whatever_zone_created_is_in() -> None:
    # 2024-03-31 in Paris has 23 hours: "24h" after midnight is 01:00 the next day.
    created = datetime(2024, 3, 31, tzinfo=PARIS)
    schedule = parse_schedule("@in", "24h", timezone=None, created=created, seed=1)
    assert schedule.next_after(created) == created.astimezone(UTC) + timedelta(hours=24)


def test_every_counts_from_created() -> None:
    schedule = parse("@every", "1h30m")
    assert isinstance(schedule, EverySchedule) and not schedule.once
    assert fires(schedule, 3) == [
        utc(2024, 5, 1, 13, 30),
        utc(2024, 5, 1, 15),
        utc(2024, 5, 1, 16, 30),
    ]
    # Asked from anywhere (a restart), the times stay on the same grid.
    assert schedule.next_after(utc(2024, 5, 3, 0, 0, 1)) == utc(2024, 5, 3, 1, 30)
    assert schedule.next_after(utc(2024, 5, 1, 15)) == utc(2024, 5, 1, 16, 30)
    assert schedule.next_after(utc(2020, 1, 1)) == utc(2024, 5, 1, 13, 30)


def test_every_near_the_end_of_time_is_none() -> None:
    schedule = parse("@every", "36500d")
    assert schedule.next_after(datetime(9990, 1, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    ("type", "arguments", "message"),
    [
        ("@every", "0.5s", "'0.5s' is too short: at least 1s"),
        ("@every", "0s", "must be more than zero"),
        ("@every", "-1m", "a duration has no sign"),
        ("@every", "", "empty duration"),
        ("@every", None, "a duration is a string"),
        ("@in", "10 minutes", "missing unit after 10"),
        ("@in", "soon", "is not a duration"),
        ("@in", "10ms", "unknown unit 'ms'"),
        ("@interval", "30s", "'30s' is too short: at least 1m"),
    ],
)
def test_durations_refused(type: str, arguments: object, message: str) -> None:
    [(field, reason)] = refusal(type, arguments)
    assert field == "arguments"
    assert message in reason


def test_interval_is_every_with_a_minimum() -> None:
    assert fires(parse("@interval", "5m"), 2) == [utc(2024, 5, 1, 12, 5), utc(2024, 5, 1, 12, 10)]


@settings(deadline=None)
@given(
    st.integers(1, 10**7),
    st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.integers(0, 10**8),
)
def test_every_is_after_monotone_and_on_the_grid(seconds: int, after: datetime, later: int) -> None:
    schedule = EverySchedule(CREATED, timedelta(seconds=seconds))
    nxt = schedule.next_after(after)
    assert nxt is not None and nxt > after and nxt > CREATED
    assert (nxt - CREATED) % timedelta(seconds=seconds) == timedelta(0)
    assert nxt - max(after, CREATED) <= timedelta(seconds=seconds)
    nb = schedule.next_after(after + timedelta(seconds=later))
    assert nb is not None and nb >= nxt


# --- @cron ------------------------------------------------------------------------------


def test_cron_in_the_trigger_timezone() -> None:
    schedule = parse("@cron", "0 9 * * mon-fri", timezone="Europe/Paris")
    assert isinstance(schedule, CronSchedule) and not schedule.once
    assert fires(schedule, 3) == [utc(2024, 5, 2, 7), utc(2024, 5, 3, 7), utc(2024, 5, 6, 7)]


def test_cron_six_fields_seconds_first() -> None:
    assert fires(parse("@cron", "15 0 0 * * *"), 1) == [utc(2024, 5, 2, 0, 0, 15)]


def test_cron_that_never_fires_is_refused() -> None:
    assert refusal("@cron", "0 0 30 2 *") == [
        ("arguments", "@cron '0 0 30 2 *' never fires: no date matches it")
    ]


def test_cron_field_out_of_range_names_the_field() -> None:
    assert refusal("@cron", "0 0 32 * *") == [
        ("arguments", "cron field 3 (day of month) out of range: 32 (allowed 1-31)")
    ]


def test_timezone_default_is_the_server_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zones, "local_zone", lambda: ZoneInfo("America/New_York"))
    schedule = parse("@cron", "0 9 * * *", timezone=None)
    assert fires(schedule, 1) == [utc(2024, 5, 1, 13)]


def test_local_zone_is_a_zone() -> None:
    assert isinstance(zones.local_zone(), ZoneInfo)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Mars/Olympus", "unknown timezone 'Mars/Olympus'"),
        ("Europe", "unknown timezone 'Europe'"),
        ("../etc/passwd", "unknown timezone '../etc/passwd'"),
        ("/etc/localtime", "unknown timezone '/etc/localtime'"),
        ("", "unknown timezone ''"),
        ("utc", "unknown timezone 'utc'"),
        ("Europe/Paris\x00", "unknown timezone"),
        ("x" * 500, "unknown timezone"),
        (5, "a timezone is an IANA name such as 'Europe/Paris', not int"),
    ],
)
def test_unknown_timezone(name: object, message: str) -> None:
    [(field, reason)] = refusal("@cron", "0 9 * * *", timezone=name)  # type: ignore[arg-type]
    assert field == "options.timezone"
    assert reason.startswith(message)


def test_every_error_is_reported_at_once() -> None:
    assert refusal("@daily", "between 6pm and 8am", timezone="Mars/Olympus") == [
        (
            "options.timezone",
            "unknown timezone 'Mars/Olympus': use an IANA name such as 'Europe/Paris' or 'UTC'",
        ),
        (
            "arguments",
            "@daily: window ends before it starts: between 6pm and 8am (a window "
            "cannot cross midnight; use two triggers, or @cron)",
        ),
    ]


@pytest.mark.parametrize("type", ["@event", "@webhook", "@client", "@yearly", "daily", ""])
def test_not_a_time_type(type: str) -> None:
    [(field, reason)] = refusal(type, "x")
    assert field == "type"
    assert "is not a time-based trigger type" in reason


def test_created_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_schedule("@every", "1m", timezone=None, created=datetime(2024, 1, 1), seed=1)


def test_time_types() -> None:
    assert set(TIME_TYPES) == {
        "@at", "@in", "@every", "@cron", "@hourly", "@daily", "@weekly", "@monthly",
        "@schedule", "@interval",
    }  # fmt: skip


# --- cozy's @hourly, @daily, @weekly, @monthly ------------------------------------------


def _cron(kind: str, clauses: str, seed: int = 7) -> str:
    return parse_periodic(kind, clauses).to_cron(seed)


def _cron_fields(kind: str, clauses: str, seed: int) -> list[str]:
    return _cron(kind, clauses, seed).split()


@pytest.mark.parametrize(
    ("kind", "clauses", "hours", "doms", "dows"),
    [
        ("daily", "", range(24), None, None),
        ("daily", "before 5am", range(5), None, None),
        ("daily", "after 10pm", range(22, 24), None, None),
        ("daily", "between 8am and 6pm", range(8, 18), None, None),
        ("daily", "after 8am before 6pm", range(8, 18), None, None),
        ("daily", "before 6pm after 8am", range(8, 18), None, None),
        ("daily", "between 12am and 12pm", range(12), None, None),
        ("daily", "before 12am", range(24), None, None),
        ("daily", "after 12pm", range(12, 24), None, None),
        ("daily", "BETWEEN 8AM AND 9AM", range(8, 9), None, None),
        ("weekly", "", range(24), None, range(7)),
        ("weekly", "on monday", range(24), None, [1]),
        ("weekly", "on mon,wed,fri", range(24), None, [1, 3, 5]),
        ("weekly", "on wed-fri", range(24), None, [3, 4, 5]),
        ("weekly", "on fri-mon", range(24), None, [5, 6, 0, 1]),
        ("weekly", "on weekday", range(24), None, [1, 2, 3, 4, 5]),
        ("weekly", "on weekend", range(24), None, [0, 6]),
        ("weekly", "on sunday,weekday", range(24), None, range(6)),
        ("weekly", "on monday before 9am", range(9), None, [1]),
        ("weekly", "between 8am and 6pm on tue", range(8, 18), None, [2]),
        ("monthly", "", range(24), range(1, 29), None),
        ("monthly", "on the 1", range(24), [1], None),
        ("monthly", "on the 1-5", range(24), range(1, 6), None),
        ("monthly", "on the 1,15,31", range(24), [1, 15, 31], None),
        ("monthly", "on the 1 before 9am", range(9), [1], None),
    ],
)
def test_clauses_keep_the_random_time_inside(
    kind: str, clauses: str, hours: range, doms: list[int] | None, dows: list[int] | None
) -> None:
    seen_hours, seen_days = set(), set()
    for seed in range(300):
        second, minute, hour, dom, month, dow = _cron_fields(kind, clauses, seed)
        assert 0 <= int(second) < 60 and 0 <= int(minute) < 60 and month == "*"
        assert int(hour) in hours
        seen_hours.add(int(hour))
        if doms is None:
            assert dom == "*"
        else:
            assert int(dom) in doms
            seen_days.add(int(dom))
        if dows is None:
            assert dow == "*"
        else:
            assert int(dow) in dows
            seen_days.add(int(dow))
    # Spread: over many triggers every allowed hour and day comes up.
    assert seen_hours == set(hours)
    assert seen_days == set(doms or dows or ())


def test_spread_is_stable_for_a_seed_and_differs_between_seeds() -> None:
    assert _cron("daily", "", 42) == _cron("daily", "", 42)
    assert len({_cron("daily", "", seed) for seed in range(50)}) > 45
    # Pinned: a trigger's time must not move between versions (random.Random(int) is stable).
    assert _cron("weekly", "on weekday", 1) == "8 36 2 * * 3"


def test_hourly_honours_a_window() -> None:
    assert _cron("hourly", "", 3) == "15 37 * * * *"
    assert _cron("hourly", "between 8am and 6pm", 3) == "15 37 8-17 * * *"
    schedule = parse("@hourly", "between 8am and 6pm", timezone="Europe/Paris", seed=3)
    got = fires(schedule, 11, after=utc(2024, 5, 1, 22))
    assert [t.astimezone(PARIS).hour for t in got] == [*range(8, 18), 8]
    assert {(t.minute, t.second) for t in got} == {(37, 15)}


def test_daily_fires_once_a_day_at_a_stable_time_in_its_zone() -> None:
    schedule = parse("@daily", "between 8am and 6pm", timezone="Europe/Paris", seed=11)
    got = fires(schedule, 4)
    assert len({t.astimezone(PARIS).time() for t in got}) == 1
    assert 8 <= got[0].astimezone(PARIS).hour < 18
    assert [(b - a) for a, b in itertools.pairwise(got)] == [timedelta(days=1)] * 3


def test_weekly_and_monthly_fire_on_their_days() -> None:
    weekly = fires(parse("@weekly", "on weekend", seed=5), 4)
    assert {t.weekday() for t in weekly} <= {5, 6} and len({t.weekday() for t in weekly}) == 1
    monthly = fires(parse("@monthly", "on the 31", seed=5), 3)
    assert [(t.month, t.day) for t in monthly] == [(5, 31), (7, 31), (8, 31)]


@pytest.mark.parametrize(
    ("type", "clauses", "message"),
    [
        ("@daily", "between 6pm and 8am", "window ends before it starts: between 6pm and 8am"),
        ("@daily", "after 10pm before 5am", "window ends before it starts: after 10pm before 5am"),
        ("@daily", "between 8am and 8am", "window is empty: between 8am and 8am"),
        ("@daily", "after 12am before 12am", None),  # the whole day: accepted
        (
            "@daily",
            "before 5am before 6am",
            "the window's end is given twice: before 5am before 6am",
        ),
        ("@daily", "after 1am between 2am and 3am", "the window's start is given twice"),
        ("@daily", "before", "expecting more after 'before'"),
        ("@daily", "between 8am", "expecting more after 'between 8am'"),
        ("@daily", "between 8am to 6pm", "'between 8am' needs 'and H'"),
        ("@daily", "before 13am", "'13am' is not an hour: write 1am to 12am, or 1pm to 12pm"),
        ("@daily", "before 0am", "'0am' is not an hour"),
        ("@daily", "before 17", "'17' is not an hour"),
        ("@daily", "before 5 am", "'5' is not an hour"),
        ("@daily", "at 5am", "unknown word 'at'"),
        ("@daily", "on monday", "'on monday' (days of the week) is only for @weekly"),
        ("@hourly", "on the 1", "'on the N' (a day of the month) is only for @monthly"),
        ("@weekly", "on the 1", "'on the N' (a day of the month) is only for @monthly"),
        ("@monthly", "on monday", "'on monday' (days of the week) is only for @weekly"),
        ("@weekly", "on funday", "unknown day 'funday': write mon to sun"),
        ("@weekly", "on", "expecting more after 'on'"),
        ("@weekly", "on mon,,fri", "unknown day ''"),
        ("@weekly", "on mon-mon", "range 'mon-mon' starts and ends on one day"),
        ("@weekly", "on mon on fri", "two 'on' clauses"),
        ("@monthly", "on the", "expecting more after 'on the'"),
        ("@monthly", "on the 32", "'32' in 'on the 32' is not a day of the month (1 to 31)"),
        ("@monthly", "on the 0", "'0' in 'on the 0' is not a day of the month"),
        ("@monthly", "on the 5-1", "range of days ends before it starts: 5-1"),
        ("@monthly", "on the first", "'first' in 'on the first' is not a day of the month"),
        ("@monthly", 5, "@monthly takes clauses as a string"),
    ],
)
def test_clauses_refused(type: str, clauses: object, message: str | None) -> None:
    if message is None:
        parse(type, clauses)
        return
    [(field, reason)] = refusal(type, clauses)
    assert field == "arguments"
    assert reason.startswith(f"{type}: {message}") or reason.startswith(message), reason


def test_no_clauses_may_be_null() -> None:
    assert fires(parse("@hourly", None, seed=3), 1) == [utc(2024, 5, 1, 12, 37, 15)]


# --- karajo's schedules (@schedule), in UTC unless a timezone is given --------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("minutely", [utc(2024, 5, 1, 12, 1), utc(2024, 5, 1, 12, 2), utc(2024, 5, 1, 12, 3)]),
        ("hourly", [utc(2024, 5, 1, 13), utc(2024, 5, 1, 14), utc(2024, 5, 1, 15)]),
        (
            "hourly@0,15,30,45",
            [utc(2024, 5, 1, 12, 15), utc(2024, 5, 1, 12, 30), utc(2024, 5, 1, 12, 45)],
        ),
        ("hourly@45,5", [utc(2024, 5, 1, 12, 5), utc(2024, 5, 1, 12, 45), utc(2024, 5, 1, 13, 5)]),
        ("daily", [utc(2024, 5, 2), utc(2024, 5, 3), utc(2024, 5, 4)]),
        (
            "daily@00:00,06:00,12:00,18:00",
            [utc(2024, 5, 1, 18), utc(2024, 5, 2), utc(2024, 5, 2, 6)],
        ),
        (
            "daily@18:15,6:05,12:00",
            [utc(2024, 5, 1, 18, 15), utc(2024, 5, 2, 6, 5), utc(2024, 5, 2, 12)],
        ),
        ("weekly", [utc(2024, 5, 5), utc(2024, 5, 12), utc(2024, 5, 19)]),
        (
            "Weekly@Sunday,Tuesday,Friday@15:00",
            [utc(2024, 5, 3, 15), utc(2024, 5, 5, 15), utc(2024, 5, 7, 15)],
        ),
        (
            "weekly@mon,fri@09:00,17:30",
            [utc(2024, 5, 3, 9), utc(2024, 5, 3, 17, 30), utc(2024, 5, 6, 9)],
        ),
        ("weekly@@10:00", [utc(2024, 5, 5, 10), utc(2024, 5, 12, 10), utc(2024, 5, 19, 10)]),
        ("weekly@wed", [utc(2024, 5, 8), utc(2024, 5, 15), utc(2024, 5, 22)]),
        ("monthly", [utc(2024, 6, 1), utc(2024, 7, 1), utc(2024, 8, 1)]),
        ("monthly@1,15@18:00", [utc(2024, 5, 1, 18), utc(2024, 5, 15, 18), utc(2024, 6, 1, 18)]),
        ("monthly@31", [utc(2024, 5, 31), utc(2024, 7, 31), utc(2024, 8, 31)]),
        (" daily @ 08:00 , 20:00 ", [utc(2024, 5, 1, 20), utc(2024, 5, 2, 8), utc(2024, 5, 2, 20)]),
    ],
)
def test_karajo_schedules(text: str, expected: list[datetime]) -> None:
    schedule = parse("@schedule", text, timezone=None)
    assert isinstance(schedule, UnionSchedule)
    assert fires(schedule, 3) == expected


def test_karajo_many_times_are_few_crons() -> None:
    times = ",".join(f"{h:02}:{m:02}" for h in range(24) for m in (0, 20, 40))
    schedule = parse("@schedule", f"daily@{times}", timezone=None)
    assert isinstance(schedule, UnionSchedule) and len(schedule.members) == 1
    assert len(fires(schedule, 72)) == 72


def test_karajo_with_an_explicit_timezone() -> None:
    schedule = parse("@schedule", "daily@09:00", timezone="Europe/Paris")
    assert fires(schedule, 1) == [utc(2024, 5, 2, 7)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a karajo schedule is one of minutely, hourly, daily, weekly, monthly"),
        (None, "a karajo schedule is one of"),
        ("yearly", "unknown kind 'yearly': use minutely, hourly, daily, weekly, monthly"),
        ("@daily", "unknown kind '': use minutely"),
        ("minutely@5", "too many '@' parts: minutely is written minutely"),
        ("hourly@0@5", "too many '@' parts: hourly is written hourly[@MINUTES,...]"),
        ("daily@08:00@x", "too many '@' parts: daily is written daily[@HH:MM,...]"),
        (
            "weekly@mon@08:00@x",
            "too many '@' parts: weekly is written weekly[@DAYS,...][@HH:MM,...]",
        ),
        ("hourly@0,75", "'75' is not a minute (0 to 59) in schedule 'hourly@0,75'"),
        ("hourly@x", "'x' is not a minute (0 to 59)"),
        ("hourly@-5", "'-5' is not a minute"),
        ("hourly@0,,30", "empty item in list '0,,30'"),
        ("daily@25:00", "'25:00' is not a time of day (HH:MM, 00:00 to 23:59)"),
        ("daily@08:60", "'08:60' is not a time of day"),
        ("daily@8", "'8' is not a time of day"),
        ("daily@08:00:30", "'08:00:30' is not a time of day"),
        ("weekly@Sun_day", "unknown day 'sun_day': write Sunday to Saturday, or Sun to Sat"),
        ("weekly@weekday", "unknown day 'weekday'"),
        ("monthly@0", "'0' is not a day of the month (1 to 31)"),
        ("monthly@32", "'32' is not a day of the month (1 to 31)"),
        ("monthly@1@7:5", "'7:5' is not a time of day"),
        ("daily@" + "08:00," * 400, "schedule longer than 2000 characters"),
    ],
)
def test_karajo_refused(text: object, message: str) -> None:
    [(field, reason)] = refusal("@schedule", text, timezone=None)
    assert field == "arguments"
    assert reason.startswith(message), reason


# --- properties over every type ---------------------------------------------------------

periodic = st.one_of(
    st.tuples(
        st.sampled_from(["@hourly", "@daily"]),
        st.sampled_from(["", "before 5am", "between 8am and 6pm"]),
    ),
    st.tuples(st.just("@weekly"), st.sampled_from(["", "on weekday", "on fri-mon after 9pm"])),
    st.tuples(st.just("@monthly"), st.sampled_from(["", "on the 29-31", "on the 1 before 3am"])),
    st.tuples(
        st.just("@schedule"),
        st.sampled_from(["minutely", "hourly@7,59", "weekly@sat@23:59,00:01", "monthly@31@12:00"]),
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    periodic,
    st.sampled_from(["UTC", "Europe/Paris", "America/New_York"]),
    st.integers(0, 2**32),
    st.datetimes(datetime(2024, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
)
def test_periodic_next_after_is_strictly_after_and_consistent(
    typed: tuple[str, str], zone: str, seed: int, after: datetime
) -> None:
    type, arguments = typed
    schedule = parse(type, arguments, timezone=zone, seed=seed)
    nxt = schedule.next_after(after)
    assert nxt is not None and nxt > after
    assert schedule.next_after(nxt - timedelta(microseconds=1)) == nxt
    assert schedule.next_after(after + (nxt - after) / 2) == nxt


def test_messages_name_no_python_types_on_user_input() -> None:
    for field, reason in refusal("@every", "3 fortnights"):
        assert field == "arguments" and not re.search(r"<class|Error\b", reason)
