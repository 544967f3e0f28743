"""alerts/calendar.py: schedules as pure functions of time, to the second, across DST."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tripline.alerts import calendar

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(text: str, tz: ZoneInfo = BERLIN) -> float:
    """Unix time of a wall time written 'YYYY-MM-DD HH:MM[:SS]' in `tz` (first pass)."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def utc(text: str) -> float:
    return at(text, ZoneInfo("UTC"))


# 2024-03-04 is a Monday; in Berlin clocks go 02:00 -> 03:00 on Sunday 2024-03-31 and
# 03:00 -> 02:00 on Sunday 2024-10-27.
WEEKLY_CASES = [
    # schedule, wall time in Berlin, active?
    ("Mon-Fri 18:00-08:00", "2024-03-04 17:59:59", False),
    ("Mon-Fri 18:00-08:00", "2024-03-04 18:00:00", True),
    ("Mon-Fri 18:00-08:00", "2024-03-05 00:00:00", True),  # across midnight
    ("Mon-Fri 18:00-08:00", "2024-03-05 07:59:59", True),
    ("Mon-Fri 18:00-08:00", "2024-03-05 08:00:00", False),  # the end is not inside
    ("Mon-Fri 18:00-08:00", "2024-03-09 07:00:00", True),  # Friday's night runs into Saturday
    ("Mon-Fri 18:00-08:00", "2024-03-09 20:00:00", False),  # no Saturday evening
    ("Mon-Fri 18:00-08:00", "2024-03-04 07:00:00", False),  # Sunday had no evening
    ("Fri 18:00-Mon 06:00", "2024-03-08 17:59:00", False),
    ("Fri 18:00-Mon 06:00", "2024-03-09 12:00:00", True),
    ("Fri 18:00-Mon 06:00", "2024-03-11 05:59:59", True),
    ("Fri 18:00-Mon 06:00", "2024-03-11 06:00:00", False),
    ("Sat-Sun", "2024-03-09 00:00:00", True),
    ("Sat-Sun", "2024-03-10 23:59:59", True),
    ("Sat-Sun", "2024-03-11 00:00:00", False),
    ("Fri-Mon 12:00-13:00", "2024-03-10 12:30:00", True),  # a day range over the weekend
    ("Fri-Mon 12:00-13:00", "2024-03-06 12:30:00", False),
    ("mon,wed 12:00-13:00; sun 02:00-03:00", "2024-03-06 12:00:00", True),
    ("mon,wed 12:00-13:00; sun 02:00-03:00", "2024-03-05 12:00:00", False),
    ("Mon-Fri 08:00-12:00,13:00-17:00", "2024-03-04 12:30:00", False),  # lunch
    ("Mon-Fri 08:00-12:00,13:00-17:00", "2024-03-04 13:00:00", True),
    ("daily 02:00-03:00", "2024-03-09 02:30:00", True),
    ("Monday 00:00-24:00", "2024-03-04 23:59:59", True),
    ("Mon - Fri   08:00 - 17:00", "2024-03-04 08:00:00", True),  # spacing is free
]


@pytest.mark.parametrize(("text", "wall", "expected"), WEEKLY_CASES)
def test_weekly_active(text: str, wall: str, expected: bool) -> None:
    schedule = calendar.parse_weekly(text, "Europe/Berlin")
    assert calendar.active(schedule, at(wall)) is expected
    assert (calendar.period(schedule, at(wall)) is not None) is expected


@pytest.mark.parametrize(
    ("night", "hours"),
    [
        ("2024-03-30", 5.0),  # clocks go forward: one wall hour never happens
        ("2024-10-26", 7.0),  # clocks go back: one wall hour happens twice
        ("2024-03-23", 6.0),  # an ordinary Saturday night
    ],
)
def test_weekly_window_over_a_dst_night_keeps_its_wall_times(night: str, hours: float) -> None:
    schedule = calendar.parse_weekly("Sat 22:00-Sun 04:00", "Europe/Berlin")
    found = calendar.period(schedule, at(f"{night} 23:00"))
    assert found is not None
    start, end = found
    assert start == at(f"{night} 22:00")
    assert datetime.fromtimestamp(end, BERLIN).strftime("%H:%M") == "04:00"
    assert (end - start) / 3600 == hours


def test_spring_forward_night_in_real_time() -> None:
    schedule = calendar.parse_weekly("Sat 22:00-Sun 04:00", "Europe/Berlin")
    # 04:00 summer time on 2024-03-31 is 02:00 UTC
    assert calendar.active(schedule, utc("2024-03-31 01:59:59"))
    assert not calendar.active(schedule, utc("2024-03-31 02:00:00"))
    assert calendar.active(schedule, utc("2024-03-30 21:00:00"))  # 22:00 winter time
    assert not calendar.active(schedule, utc("2024-03-30 20:59:59"))


def test_a_skipped_wall_time_falls_one_hour_later() -> None:
    schedule = calendar.parse_cron("30 2 * * *", 3600, "Europe/Berlin")
    # 02:30 does not exist on 2024-03-31: it is read as 03:30 summer time (01:30 UTC)
    assert calendar.next_start(schedule, utc("2024-03-30 12:00")) == utc("2024-03-31 01:30")
    assert calendar.next_start(schedule, utc("2024-03-31 12:00")) == at("2024-04-01 02:30")


def test_a_repeated_wall_time_means_its_first_pass() -> None:
    schedule = calendar.parse_cron("30 2 * * *", 1800, "Europe/Berlin")
    # 02:30 happens twice on 2024-10-27: summer time (00:30 UTC), then winter (01:30 UTC)
    assert calendar.active(schedule, utc("2024-10-27 00:45"))
    assert not calendar.active(schedule, utc("2024-10-27 01:45"))


CRON_CASES = [
    # expression, duration, UTC instant, active?
    ("0 2 * * Sun", 7200, "2024-03-10 02:00", True),
    ("0 2 * * Sun", 7200, "2024-03-10 03:59:59", True),
    ("0 2 * * Sun", 7200, "2024-03-10 04:00", False),
    ("0 2 * * Sun", 7200, "2024-03-11 02:30", False),  # Monday
    ("0 2 * * 0", 7200, "2024-03-10 03:00", True),
    ("0 2 * * 7", 7200, "2024-03-10 03:00", True),  # 7 is Sunday too
    ("0 23 * * Sat", 4 * 3600, "2024-03-10 02:00", True),  # across midnight
    ("*/15 9-17 * * mon-fri", 300, "2024-03-04 09:36", False),
    ("*/15 9-17 * * mon-fri", 300, "2024-03-04 09:46", True),
    ("0 0 1 * *", 86400, "2024-04-01 12:00", True),
    ("0 0 1 * *", 86400, "2024-04-02 12:00", False),
    # day of month and day of week both set: either matches (crontab(5))
    ("0 12 13 * fri", 3600, "2024-03-13 12:30", True),
    ("0 12 13 * fri", 3600, "2024-03-15 12:30", True),
    ("0 12 13 * fri", 3600, "2024-03-14 12:30", False),
    ("0 6 * jun-aug *", 3600, "2024-07-01 06:30", True),
    ("0 6 * jun-aug *", 3600, "2024-05-01 06:30", False),
    ("@daily", 600, "2024-05-01 00:05", True),
    ("@weekly", 600, "2024-03-10 00:05", True),
    ("@weekly", 600, "2024-03-11 00:05", False),
]


@pytest.mark.parametrize(("text", "duration", "instant", "expected"), CRON_CASES)
def test_cron_active(text: str, duration: float, instant: str, expected: bool) -> None:
    schedule = calendar.parse_cron(text, duration, "UTC")
    assert calendar.active(schedule, utc(instant)) is expected


def test_cron_wall_times_are_in_its_zone() -> None:
    schedule = calendar.parse_cron("0 18 * * *", 3600, "America/New_York")
    assert calendar.active(schedule, at("2024-03-04 18:30", NEW_YORK))
    assert not calendar.active(schedule, utc("2024-03-04 18:30"))


def test_one_time() -> None:
    schedule = calendar.one_time(1000.0, 2000.0)
    assert not calendar.active(schedule, 999.999)
    assert calendar.active(schedule, 1000.0)
    assert calendar.active(schedule, 1999.999)
    assert not calendar.active(schedule, 2000.0)
    assert calendar.period(schedule, 1500.0) == (1000.0, 2000.0)
    assert calendar.next_start(schedule, 500.0) == 1000.0
    assert calendar.next_start(schedule, 1500.0) is None


def test_period_merges_back_to_back_ranges() -> None:
    hours = calendar.parse_weekly("Mon-Fri 08:00-12:00,12:00-18:00", "Europe/Berlin")
    assert calendar.period(hours, at("2024-03-04 15:00")) == (
        at("2024-03-04 08:00"),
        at("2024-03-04 18:00"),
    )
    assert calendar.last_start(hours, at("2024-03-04 09:05")) == at("2024-03-04 08:00")
    assert calendar.last_start(hours, at("2024-03-04 18:00")) is None
    assert calendar.last_start(hours, at("2024-03-09 10:00")) is None  # Saturday


def test_period_of_an_always_on_schedule_is_bounded() -> None:
    schedule = calendar.parse_weekly("daily", "UTC")
    now = utc("2024-03-04 12:00")
    start, end = calendar.period(schedule, now) or (0.0, 0.0)
    assert now - 9 * 86400 < start <= now - 7 * 86400
    assert now + 7 * 86400 <= end < now + 9 * 86400


@pytest.mark.parametrize(
    ("text", "wall", "expected"),
    [
        ("Mon-Fri 08:00-18:00", "2024-03-04 07:00", "2024-03-04 08:00"),
        ("Mon-Fri 08:00-18:00", "2024-03-04 08:00", "2024-03-05 08:00"),
        ("Mon-Fri 08:00-18:00", "2024-03-08 19:00", "2024-03-11 08:00"),  # over the weekend
        ("Fri 18:00-Mon 06:00", "2024-03-05 12:00", "2024-03-08 18:00"),
    ],
)
def test_next_start(text: str, wall: str, expected: str) -> None:
    schedule = calendar.parse_weekly(text, "Europe/Berlin")
    assert calendar.next_start(schedule, at(wall)) == at(expected)


def test_next_start_of_a_date_that_never_comes() -> None:
    schedule = calendar.parse_cron("0 0 30 2 *", 60, "UTC")
    assert calendar.next_start(schedule, utc("2024-01-01 00:00")) is None
    assert not calendar.active(schedule, utc("2024-03-01 00:00"))


def test_occurrences_in_order() -> None:
    schedule = calendar.parse_weekly("Mon,Wed 12:00-13:00", "UTC")
    found = calendar.occurrences(schedule, utc("2024-03-04 00:00"), utc("2024-03-11 00:00"))
    assert found == [
        (utc("2024-03-04 12:00"), utc("2024-03-04 13:00")),
        (utc("2024-03-06 12:00"), utc("2024-03-06 13:00")),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty weekly schedule"),
        ("Funday 08:00-09:00", "unknown day 'funday'"),
        ("Mon-Fri 25:00-08:00", "'25:00' is not a time of day"),
        ("Mon-Fri 08:60-09:00", "'08:60' is not a time of day"),
        ("Mon 08:00-08:00", "is empty: for a whole day write 00:00-24:00"),
        ("Mon 24:00-08:00", "cannot start at 24:00"),
        ("Mon-Fri at 8", "cannot read 'Mon-Fri at 8'"),
    ],
)
def test_weekly_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(calendar.CalendarError, match=message):
        calendar.parse_weekly(text, "UTC")


@pytest.mark.parametrize(
    ("text", "duration", "message"),
    [
        ("0 2 * *", 60, "needs 5 fields"),
        ("60 2 * * *", 60, "cron minute '60' is not in 0..59"),
        ("0 2 * foo *", 60, "cron month 'foo'"),
        ("0 2 5-1 * *", 60, "runs backwards"),
        ("*/0 2 * * *", 60, "step"),
        ("0 2 * * *", 0, "positive duration"),
    ],
)
def test_cron_errors_say_what_is_wrong(text: str, duration: float, message: str) -> None:
    with pytest.raises(calendar.CalendarError, match=message):
        calendar.parse_cron(text, duration, "UTC")


def test_unknown_zone_and_bad_one_time() -> None:
    with pytest.raises(calendar.CalendarError, match="unknown time zone 'Mars/Base'"):
        calendar.parse_weekly("Mon 08:00-09:00", "Mars/Base")
    with pytest.raises(calendar.CalendarError, match="end after it starts"):
        calendar.one_time(10.0, 10.0)
    with pytest.raises(calendar.CalendarError, match="finite"):
        calendar.one_time(10.0, float("inf"))
