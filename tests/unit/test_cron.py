"""Cron schedules: the forms accepted, the precise refusals, the next times in a time zone,
and the DST rule on the spring-forward and fall-back days of Paris and New York."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from middlewared.errors import ValidationErrors
from middlewared.triggers.cron import CronSchedule, parse_cron

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
AFTER = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)  # a Wednesday


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


def fires(expr: str, zone: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    schedule = CronSchedule(parse_cron(expr), zone)
    out: list[datetime] = []
    for _ in range(count):
        nxt = schedule.next_after(after)
        assert nxt is not None
        out.append(nxt)
        after = nxt
    return out


def local(times: list[datetime], zone: ZoneInfo) -> list[str]:
    return [t.astimezone(zone).isoformat() for t in times]


@pytest.mark.parametrize(
    ("expr", "first", "second"),
    [
        ("0 * * * *", utc(2024, 5, 1, 13), utc(2024, 5, 1, 14)),
        ("*/15 * * * *", utc(2024, 5, 1, 12, 15), utc(2024, 5, 1, 12, 30)),
        ("5/20 * * * *", utc(2024, 5, 1, 12, 5), utc(2024, 5, 1, 12, 25)),
        ("0 9-17/4 * * *", utc(2024, 5, 1, 13), utc(2024, 5, 1, 17)),
        ("30 8 * * mon-fri", utc(2024, 5, 2, 8, 30), utc(2024, 5, 3, 8, 30)),
        ("0 0 1 jan *", utc(2025, 1, 1), utc(2026, 1, 1)),
        ("0 0 1 JAN,jul *", utc(2024, 7, 1), utc(2025, 1, 1)),
        ("0 0 * * 7", utc(2024, 5, 5), utc(2024, 5, 12)),  # 7 is Sunday, as 0
        ("0 0 ? * SUN", utc(2024, 5, 5), utc(2024, 5, 12)),
        ("0 0 13 * fri", utc(2024, 5, 3), utc(2024, 5, 10)),  # day of month OR day of week
        ("0 0 L * *", utc(2024, 5, 31), utc(2024, 6, 30)),
        ("0 0 15W * *", utc(2024, 5, 15), utc(2024, 6, 14)),  # June 15 2024 is a Saturday
        ("0 0 * * mon#1", utc(2024, 5, 6), utc(2024, 6, 3)),
        ("0 0 31 * *", utc(2024, 5, 31), utc(2024, 7, 31)),  # June has no 31st
        ("0 0 29 2 *", utc(2028, 2, 29), utc(2032, 2, 29)),
        # Six fields: seconds first, as cozy-stack writes them.
        ("30 0 12 * * *", utc(2024, 5, 1, 12, 0, 30), utc(2024, 5, 2, 12, 0, 30)),
        ("*/20 * * * * *", utc(2024, 5, 1, 12, 0, 20), utc(2024, 5, 1, 12, 0, 40)),
        ("0 0 0 1 1 *", utc(2025, 1, 1), utc(2026, 1, 1)),
        # robfig/cron's descriptors, accepted by cozy's @cron.
        ("@hourly", utc(2024, 5, 1, 13), utc(2024, 5, 1, 14)),
        ("@daily", utc(2024, 5, 2), utc(2024, 5, 3)),
        ("@midnight", utc(2024, 5, 2), utc(2024, 5, 3)),
        ("@weekly", utc(2024, 5, 5), utc(2024, 5, 12)),
        ("@monthly", utc(2024, 6, 1), utc(2024, 7, 1)),
        ("@yearly", utc(2025, 1, 1), utc(2026, 1, 1)),
        ("@ANNUALLY", utc(2025, 1, 1), utc(2026, 1, 1)),
        ("  0   12  *  *  *  ", utc(2024, 5, 2, 12), utc(2024, 5, 3, 12)),
    ],
)
def test_next_times_utc(expr: str, first: datetime, second: datetime) -> None:
    assert fires(expr, ZoneInfo("UTC"), AFTER, 2) == [first, second]


def test_strictly_after_a_fire_and_microseconds() -> None:
    schedule = CronSchedule(parse_cron("0 12 * * *"), ZoneInfo("UTC"))
    assert schedule.next_after(AFTER) == utc(2024, 5, 2, 12)
    assert schedule.next_after(AFTER - timedelta(microseconds=1)) == AFTER
    seconds = CronSchedule(parse_cron("* * * * * *"), ZoneInfo("UTC"))
    assert seconds.next_after(AFTER + timedelta(microseconds=999_999)) == AFTER + timedelta(
        seconds=1
    )


def test_zone_and_result_in_utc() -> None:
    [nxt] = fires("0 9 * * *", PARIS, AFTER, 1)
    assert nxt == utc(2024, 5, 2, 7)  # 09:00 CEST
    assert nxt.tzinfo is UTC


def test_after_in_any_zone() -> None:
    schedule = CronSchedule(parse_cron("0 9 * * *"), PARIS)
    assert schedule.next_after(AFTER.astimezone(NEW_YORK)) == utc(2024, 5, 2, 7)


def test_naive_after_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="naive"):
        CronSchedule(parse_cron("* * * * *"), PARIS).next_after(datetime(2024, 1, 1))


def test_past_year_9999_is_none() -> None:
    schedule = CronSchedule(parse_cron("0 0 1 1 *"), ZoneInfo("UTC"))
    assert schedule.next_after(datetime(9999, 6, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 0 32 * *", "cron field 3 (day of month) out of range: 32 (allowed 1-31)"),
        ("0 0 0 32 * *", "cron field 4 (day of month) out of range: 32 (allowed 1-31)"),
        ("60 * * * *", "cron field 1 (minute) out of range: 60 (allowed 0-59)"),
        ("0 24 * * *", "cron field 2 (hour) out of range: 24 (allowed 0-23)"),
        ("0 0 0 * * *".replace("0 0 0", "61 0 0"), "cron field 1 (second) out of range: 61"),
        ("0 0 * 13 *", "cron field 4 (month) out of range: 13 (allowed 1-12)"),
        ("0 0 0 * *", "cron field 3 (day of month) out of range: 0 (allowed 1-31)"),
        ("0 0 * * 8", "cron field 5 (day of week) out of range: 8 (allowed 0-7)"),
        ("0 0 * * funday", "cron field 5 (day of week) is not a value: 'funday'"),
        ("0 0 * foo *", "cron field 4 (month) is not a value: 'foo' (allowed 1-12 or jan, feb"),
        ("0 0 5-1 * *", "cron field 3 (day of month) range ends before it starts: 5-1"),
        ("0 0 * * fri-mon", "cron field 5 (day of week) range ends before it starts: fri-mon"),
        ("*/0 * * * *", "cron field 1 (minute) step out of range 1-60: 0"),
        ("*/61 * * * *", "cron field 1 (minute) step out of range 1-60: 61"),
        ("*/x * * * *", "cron field 1 (minute) step is not a number: 'x'"),
        ("1,,2 * * * *", "cron field 1 (minute) has an empty item: '1,,2'"),
        ("? * * * *", "cron field 1 (minute) is not a value: '?'"),
        ("L * * * *", "cron field 1 (minute) is not a value: 'L'"),
        ("0 0 * * mon#6", "cron field 5 (day of week) out of range: #6 (allowed #1-#5)"),
        ("0 0 32W * *", "cron field 3 (day of month) out of range: 32"),
        ("0 0 H * *", "cron field 3 (day of month) is not a value: 'H'"),
        ("0 0 R * *", "cron field 3 (day of month) is not a value: 'R'"),
        ("\u0661 * * * *", "cron field 1 (minute) is not a value"),  # not an ASCII digit
        ("0 0 * * * * *", "7 fields: a cron schedule has 5 fields, or 6 with seconds first"),
        ("0 0 * *", "4 fields: a cron schedule has 5 fields, or 6 with seconds first"),
        ("", "0 fields: a cron schedule has 5 fields"),
        ("@every 1h", "2 fields: a cron schedule has 5 fields"),
        ("@sometimes", "unknown descriptor '@sometimes': @yearly, @annually"),
        ("0 " * 101, "cron schedule longer than 200 characters"),
    ],
)
def test_refused(expr: str, message: str) -> None:
    with pytest.raises(ValidationErrors) as e:
        parse_cron(expr)
    [(field, reason, errno)] = e.value.errors
    assert (field, errno) == ("arguments", 22)
    assert reason.startswith(message), reason


def test_refused_not_a_string_and_field_name() -> None:
    with pytest.raises(ValidationErrors) as e:
        parse_cron(["0", "0"], field="schedule")
    assert e.value.errors[0][0] == "schedule"


# --- DST: Paris springs forward 2024-03-31 02:00 -> 03:00 and falls back 2024-10-27
# 03:00 -> 02:00; New York 2024-03-10 02:00 -> 03:00 and 2024-11-03 02:00 -> 01:00.


def test_daily_0230_paris_spring_forward_fires_at_the_end_of_the_gap() -> None:
    got = fires("30 2 * * *", PARIS, utc(2024, 3, 29), 4)
    assert local(got, PARIS) == [
        "2024-03-29T02:30:00+01:00",
        "2024-03-30T02:30:00+01:00",
        "2024-03-31T03:00:00+02:00",  # 02:30 does not exist that day: not lost
        "2024-04-01T02:30:00+02:00",
    ]


def test_daily_0230_paris_fall_back_fires_once() -> None:
    got = fires("30 2 * * *", PARIS, utc(2024, 10, 25), 4)
    assert local(got, PARIS) == [
        "2024-10-25T02:30:00+02:00",
        "2024-10-26T02:30:00+02:00",
        "2024-10-27T02:30:00+02:00",  # the first 02:30; the second one is not a new day
        "2024-10-28T02:30:00+01:00",
    ]


def test_daily_0230_new_york_spring_forward() -> None:
    got = fires("30 2 * * *", NEW_YORK, utc(2024, 3, 9), 3)
    assert local(got, NEW_YORK) == [
        "2024-03-09T02:30:00-05:00",
        "2024-03-10T03:00:00-04:00",
        "2024-03-11T02:30:00-04:00",
    ]


def test_daily_0130_new_york_fall_back_fires_once() -> None:
    got = fires("30 1 * * *", NEW_YORK, utc(2024, 11, 2), 3)
    assert local(got, NEW_YORK) == [
        "2024-11-02T01:30:00-04:00",
        "2024-11-03T01:30:00-04:00",
        "2024-11-04T01:30:00-05:00",
    ]


def test_asked_inside_the_repeated_hour_fixed_time_waits_for_the_next_day() -> None:
    schedule = CronSchedule(parse_cron("30 2 * * *"), PARIS)
    # 02:10 CET, the second pass, after 02:30 CEST fired.
    assert schedule.next_after(utc(2024, 10, 27, 1, 10)) == utc(2024, 10, 28, 1, 30)
    # 02:40 CEST, the first pass, after its fire: not the 02:30 CET that follows.
    assert schedule.next_after(utc(2024, 10, 27, 0, 40)) == utc(2024, 10, 28, 1, 30)


def test_fixed_time_just_after_the_repeated_hour_is_not_skipped() -> None:
    got = fires("0 2,3 * * *", PARIS, utc(2024, 10, 26, 23), 3)
    assert local(got, PARIS) == [
        "2024-10-27T02:00:00+02:00",
        "2024-10-27T03:00:00+01:00",
        "2024-10-28T02:00:00+01:00",
    ]


def test_per_second_in_a_particular_hour_across_the_fall_back() -> None:
    schedule = CronSchedule(parse_cron("* * 2 * * *"), PARIS)
    # The last second of the first pass, then straight to the next day: the second pass
    # of 02:xx is not run again.
    assert schedule.next_after(utc(2024, 10, 27, 0, 59, 58)) == utc(2024, 10, 27, 0, 59, 59)
    assert schedule.next_after(utc(2024, 10, 27, 0, 59, 59)) == utc(2024, 10, 28, 1)


def test_hourly_paris_fall_back_fires_every_real_hour() -> None:
    got = fires("0 * * * *", PARIS, utc(2024, 10, 26, 22), 5)
    assert got == [utc(2024, 10, 26, 23) + timedelta(hours=h) for h in range(5)]
    assert local(got, PARIS)[1:3] == ["2024-10-27T02:00:00+02:00", "2024-10-27T02:00:00+01:00"]


def test_hourly_paris_spring_forward_has_no_extra_fire() -> None:
    got = fires("0 * * * *", PARIS, utc(2024, 3, 30, 23), 3)
    assert got == [utc(2024, 3, 31, 0), utc(2024, 3, 31, 1), utc(2024, 3, 31, 2)]
    assert local(got, PARIS)[:2] == ["2024-03-31T01:00:00+01:00", "2024-03-31T03:00:00+02:00"]


def test_half_past_every_hour_new_york_spring_forward_skips_the_missing_hour() -> None:
    got = fires("30 * * * *", NEW_YORK, utc(2024, 3, 10, 5), 4)
    # One fire an hour in real time: nothing is moved to 03:00.
    assert got == [utc(2024, 3, 10, 5, 30) + timedelta(hours=h) for h in range(4)]


def test_every_20_minutes_new_york_fall_back_runs_through_both_passes() -> None:
    got = fires("*/20 * * * *", NEW_YORK, utc(2024, 11, 3, 5), 8)
    assert got == [utc(2024, 11, 3, 5, 20) + timedelta(minutes=20 * i) for i in range(8)]


def test_daily_count_over_a_year_in_both_zones() -> None:
    for zone in (PARIS, NEW_YORK):
        got = fires("30 2 * * *", zone, utc(2024, 1, 1, 12), 366)
        days = [t.astimezone(zone).date() for t in got]
        assert len(set(days)) == 366  # 2024 has 366 days: one fire on each
        assert days[-1].isoformat() == "2025-01-01"


# --- properties -------------------------------------------------------------------------

ZONES = [ZoneInfo(z) for z in ("UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe")]
# Instants near the 2024 DST changes of those zones, and anywhere.
CHANGES = [
    utc(2024, 3, 31, 1),
    utc(2024, 10, 27, 1),
    utc(2024, 3, 10, 7),
    utc(2024, 11, 3, 6),
    utc(2024, 4, 6, 15),  # Lord Howe: back 30 minutes
    utc(2024, 10, 5, 15, 30),  # Lord Howe: forward 30 minutes
]


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        value.map(str),
        st.tuples(value, value).map(lambda t: f"{min(t)}-{max(t)}"),
        st.integers(1, high - low + 1).map(lambda s: f"*/{s}"),
        st.lists(value, min_size=1, max_size=4).map(lambda v: ",".join(map(str, v))),
    )


crons = st.tuples(
    st.one_of(st.none(), _field(0, 59)),
    _field(0, 59),
    _field(0, 23),
    _field(1, 31),
    _field(1, 12),
    _field(0, 6),
).map(lambda f: " ".join(x for x in f if x is not None))

instants = st.one_of(
    st.tuples(st.sampled_from(CHANGES), st.integers(-4 * 3600, 4 * 3600)).map(
        lambda t: t[0] + timedelta(seconds=t[1])
    ),
    st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC)),
)


@settings(max_examples=300, deadline=None)
@given(crons, st.sampled_from(ZONES), instants, st.integers(0, 4 * 3600))
def test_next_after_is_after_monotone_and_consistent(
    expr: str, zone: ZoneInfo, after: datetime, later: int
) -> None:
    schedule = CronSchedule(parse_cron(expr), zone)
    nxt = schedule.next_after(after)
    assume(nxt is not None)
    assert nxt is not None
    assert nxt > after
    # Monotone: asking later never gives an earlier time.
    b = after + timedelta(seconds=later)
    nb = schedule.next_after(b)
    assert nb is None or nb >= nxt
    # Consistent: nothing fires between ``after`` and ``nxt``, whatever instant one asks from.
    if b < nxt:
        assert nb == nxt
    # ``nxt`` is a fire: asked just before it, it comes back.
    assert schedule.next_after(nxt - timedelta(microseconds=1)) == nxt


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 0 15W,1 * *", "cron field 3 (day of month) W (nearest weekday) stands alone"),
        ("0 0 * * mon#1,wed", "cron field 5 (day of week) # (nth weekday) cannot be mixed"),
        ("0 0 1 * mon#1", "W (nearest weekday) and # (nth weekday) need the other day field"),
        ("0 0 15W * mon", "W (nearest weekday) and # (nth weekday) need the other day field"),
    ],
)
def test_day_extras_refused_where_croniter_would_change_their_meaning(
    expr: str, message: str
) -> None:
    with pytest.raises(ValidationErrors) as e:
        parse_cron(expr)
    assert e.value.errors[0][1].startswith(message)


@pytest.mark.parametrize(
    ("expr", "spec"),
    [
        ("0-0 * * * *", "0 * * * *"),  # croniter 7.0 reads N-N as *
        ("5-5 2-2 * * *", "5 2 * * *"),
        ("*/20 9-10 ? jan-mar 7", "0,20,40 9,10 * 1,2,3 0"),
        ("0 0 L,15 * *", "0 0 15,L * *"),
        ("0 0 * * mon#2,fri#1", "0 0 * * 1#2,5#1"),
        ("0 30 0 29-31 2 *", "0 30 0 29,30,31 2 *"),
    ],
)
def test_croniter_gets_spelled_out_fields(expr: str, spec: str) -> None:
    assert parse_cron(expr).spec == spec


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 59),
    st.integers(0, 23),
    st.sampled_from(ZONES[1:]),
    st.sampled_from(CHANGES),
    st.integers(-3, 0),
)
def test_a_daily_time_fires_once_every_local_day_across_dst(
    minute: int, hour: int, zone: ZoneInfo, change: datetime, days: int
) -> None:
    got = fires(f"{minute} {hour} * * *", zone, change + timedelta(days=days), 6)
    dates = [t.astimezone(zone).date() for t in got]
    assert [(d - dates[0]).days for d in dates] == list(range(6))
