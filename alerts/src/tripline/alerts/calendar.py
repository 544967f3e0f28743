"""Calendars: when a maintenance window is on, and when a customer's office is open.

Pure: the standard library and zoneinfo only, time passed in as unix seconds. Three kinds
of schedule share one set of functions (`active`, `period`, `next_start`, `last_start`):

- `OneTime`: from one instant to another.
- `Weekly`: wall-clock ranges in a time zone, e.g. "Mon-Fri 18:00-08:00" (each of those
  evenings until the next morning), "Fri 18:00-Mon 06:00" (a weekend), "Sat-Sun" (whole
  days), clauses joined with ";". Business hours are a Weekly schedule.
- `Cron`: a five-field cron expression for the starts, in a time zone, plus a duration.

Wall times follow the zone's daylight-saving rules: a window from Sat 22:00 to Sun 04:00
lasts five hours on the night clocks go forward and seven on the night they go back. A
wall time the jump skips (02:30 on the spring-forward night in Europe) is read with the
offset before the jump, so it falls one hour later (03:30 summer time); a wall time that
happens twice means its first pass.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "CalendarError",
    "Cron",
    "OneTime",
    "Schedule",
    "Span",
    "Weekly",
    "active",
    "last_start",
    "next_start",
    "occurrences",
    "one_time",
    "parse_cron",
    "parse_weekly",
    "period",
    "zone",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEEKDAYS_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_MINUTES = 1440
# How far `period` merges back-to-back occurrences and `next_start` looks ahead: a weekly
# span is at most a week long, and a yearly cron start is at most a leap year away.
_MERGE_HORIZON = 8 * 86400.0
_MAX_MERGES = 32
# The most a daylight-saving jump moves a wall time (Antarctica/Troll: two hours).
_DST_SLACK = 2 * 3600.0
_LOOKAHEAD_DAYS = 366 + 31


class CalendarError(ValueError):
    """A schedule that cannot be read; the message says what is wrong and what would do."""


@dataclass(frozen=True)
class Span:
    """One weekly occurrence in wall time: starts on `weekday` (0 = Monday) at `start`
    minutes after midnight and ends `days` days later at `end` minutes after midnight."""

    weekday: int
    start: int
    days: int
    end: int


@dataclass(frozen=True)
class OneTime:
    start: float
    end: float


@dataclass(frozen=True)
class Weekly:
    text: str
    spans: tuple[Span, ...]
    tz: ZoneInfo


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Monday, as datetime.weekday()
    # cron's rule: when both day of month and day of week are restricted, either matches
    days_restricted: bool
    weekdays_restricted: bool
    duration: float
    tz: ZoneInfo


Schedule = OneTime | Weekly | Cron


# -- building schedules ----------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` ("Europe/Berlin", "UTC")."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CalendarError(
            f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin' or 'UTC'"
        ) from None


def one_time(start: float, end: float) -> OneTime:
    if not (math.isfinite(start) and math.isfinite(end)):
        raise CalendarError("a one-time window needs a finite start and end")
    if end <= start:
        raise CalendarError("a one-time window must end after it starts")
    return OneTime(start, end)


_CLOCK = r"\d{1,2}:\d{2}"
_CROSS_DAY = re.compile(rf"^([a-z]+) ({_CLOCK})-([a-z]+) ({_CLOCK})$")
_DAYS_TIMES = re.compile(rf"^([a-z*,\-]+)(?: ({_CLOCK}-{_CLOCK}(?:,{_CLOCK}-{_CLOCK})*))?$")


def parse_weekly(text: str, tz: str | ZoneInfo) -> Weekly:
    """Read a weekly schedule: clauses joined by ";", each either DAYS [HH:MM-HH:MM,...]
    ("Mon-Fri 08:00-18:00", "Mon,Wed 12:00-13:00", "Sat-Sun", "daily 02:00-03:00"; a
    range ending at or before its start runs into the next day) or DAY HH:MM-DAY HH:MM
    ("Fri 18:00-Mon 06:00")."""
    tzinfo = tz if isinstance(tz, ZoneInfo) else zone(tz)
    spans: list[Span] = []
    clauses = [c for c in text.split(";") if c.strip()]
    if not clauses:
        raise CalendarError("an empty weekly schedule: write e.g. 'Mon-Fri 18:00-08:00'")
    for clause in clauses:
        normal = re.sub(r"\s*([-,])\s*", r"\1", " ".join(clause.lower().split()))
        cross = _CROSS_DAY.match(normal)
        if cross:
            first, last = _weekday(cross.group(1)), _weekday(cross.group(3))
            start, end = _clock(cross.group(2)), _clock(cross.group(4))
            days = (last - first) % 7
            if days == 0 and end <= start:
                days = 7
            spans.append(Span(first, start, days, end))
            continue
        plain = _DAYS_TIMES.match(normal)
        if not plain:
            raise CalendarError(
                f"cannot read {clause.strip()!r}: write DAYS HH:MM-HH:MM "
                "('Mon-Fri 18:00-08:00') or DAY HH:MM-DAY HH:MM ('Fri 18:00-Mon 06:00')"
            )
        days_set = _days(plain.group(1))
        ranges = plain.group(2).split(",") if plain.group(2) else ["00:00-24:00"]
        for item in ranges:
            begin_text, end_text = item.split("-")
            start, end = _clock(begin_text), _clock(end_text)
            if start == DAY_MINUTES:
                raise CalendarError(f"{item!r}: a range cannot start at 24:00")
            if start == end:
                raise CalendarError(f"{item!r} is empty: for a whole day write 00:00-24:00")
            spans.extend(Span(day, start, 0 if end > start else 1, end) for day in sorted(days_set))
    return Weekly(text=text.strip(), spans=tuple(spans), tz=tzinfo)


def _weekday(name: str) -> int:
    for index, full in enumerate(WEEKDAYS_FULL):
        if name in (full, full[:3]):
            return index
    raise CalendarError(f"unknown day {name!r}: use Mon, Tue, Wed, Thu, Fri, Sat or Sun")


def _days(text: str) -> set[int]:
    if text in {"*", "daily"}:
        return set(range(7))
    out: set[int] = set()
    for item in text.split(","):
        first_text, dash, last_text = item.partition("-")
        first = _weekday(first_text)
        if not dash:
            out.add(first)
            continue
        last = _weekday(last_text)
        # "Fri-Mon" wraps over the weekend
        out.update((first + i) % 7 for i in range((last - first) % 7 + 1))
    return out


def _clock(text: str) -> int:
    hours_text, _, minutes_text = text.partition(":")
    hours, minutes = int(hours_text), int(minutes_text)
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise CalendarError(f"{text!r} is not a time of day (00:00 to 24:00)")
    return hours * 60 + minutes


_CRON_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


def parse_cron(text: str, duration: float, tz: str | ZoneInfo) -> Cron:
    """Read "MIN HOUR DOM MON DOW" (as crontab(5): lists, ranges, steps, month and day
    names, Sunday as 0 or 7, @daily and friends): each match starts a window of
    `duration` seconds."""
    tzinfo = tz if isinstance(tz, ZoneInfo) else zone(tz)
    if not math.isfinite(duration) or duration <= 0:
        raise CalendarError("a cron window needs a positive duration, e.g. 2h")
    expanded = _CRON_MACROS.get(text.strip().lower(), text)
    fields = expanded.split()
    if len(fields) != 5:
        raise CalendarError(
            f"cron expression {text!r} needs 5 fields: minute hour day-of-month month "
            "day-of-week, e.g. '0 2 * * Sun'"
        )
    minutes = _cron_field(fields[0], 0, 59, "minute")
    hours = _cron_field(fields[1], 0, 23, "hour")
    days = _cron_field(fields[2], 1, 31, "day of month")
    months = _cron_field(fields[3], 1, 12, "month", MONTHS)
    cron_days = _cron_field(fields[4], 0, 7, "day of week", ("sun", *WEEKDAYS[:6]))
    return Cron(
        text=text.strip(),
        minutes=frozenset(minutes),
        hours=frozenset(hours),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset((d - 1) % 7 for d in cron_days),
        days_restricted=not fields[2].startswith("*"),
        weekdays_restricted=not fields[4].startswith("*"),
        duration=float(duration),
        tz=tzinfo,
    )


def _cron_field(text: str, low: int, high: int, what: str, names: tuple[str, ...] = ()) -> set[int]:
    def number(token: str) -> int:
        lowered = token.lower()
        if lowered in names:
            return names.index(lowered) + (1 if what == "month" else 0)
        if not token.isdigit() or not low <= int(token) <= high:
            raise CalendarError(f"cron {what} {token!r} is not in {low}..{high}")
        return int(token)

    out: set[int] = set()
    for item in text.split(","):
        body, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CalendarError(f"cron {what}: step in {item!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            first_text, _, last_text = body.partition("-")
            first, last = number(first_text), number(last_text)
            if last < first:
                raise CalendarError(f"cron {what}: range {body!r} runs backwards")
        else:
            first = number(body)
            last = high if slash else first
        out.update(range(first, last + 1, step))
    return out


# -- evaluating schedules ------------------------------------------------------------------


def occurrences(schedule: Schedule, t0: float, t1: float) -> list[tuple[float, float]]:
    """Every (start, end) of the schedule overlapping [t0, t1), ordered by start."""
    if isinstance(schedule, OneTime):
        if schedule.start < t1 and schedule.end > t0:
            return [(schedule.start, schedule.end)]
        return []
    first = _local_date(t0 - _reach(schedule), schedule.tz)
    last = _local_date(t1, schedule.tz)
    found = [
        (start, end)
        for day in _dates(first, last)
        for start, end in _on_date(schedule, day, t0 - _reach(schedule), t1)
        if start < t1 and end > t0
    ]
    return sorted(found)


def active(schedule: Schedule, now: float) -> bool:
    """Whether the schedule is on at `now` (a window is on from its start, up to its end)."""
    return any(start <= now < end for start, end in occurrences(schedule, now, now + 1.0))


def period(schedule: Schedule, now: float) -> tuple[float, float] | None:
    """The stretch containing `now`, back-to-back and overlapping occurrences merged (Mon-Fri
    08:00-12:00 plus 12:00-18:00 is one period); None when the schedule is off at `now`.
    The merge looks at most about a week either way: a schedule that is always on reports
    a start and an end that far from `now`."""
    covering = [(s, e) for s, e in occurrences(schedule, now, now + 1.0) if s <= now < e]
    if not covering:
        return None
    start = min(s for s, _ in covering)
    end = max(e for _, e in covering)
    for _ in range(_MAX_MERGES):
        # occurrences that end exactly where this one starts, or overlap its start
        touching = [s for s, e in occurrences(schedule, start - 1e-3, start) if s < start]
        if not touching or start < now - _MERGE_HORIZON:
            break
        start = min(touching)
    for _ in range(_MAX_MERGES):
        touching = [e for s, e in occurrences(schedule, end, end + 1e-3) if s <= end < e]
        if not touching or end > now + _MERGE_HORIZON:
            break
        end = max(touching)
    return start, end


def last_start(hours: Schedule, now: float) -> float | None:
    """When the period containing `now` began (for business hours: when the office
    opened today); None outside the schedule."""
    found = period(hours, now)
    return None if found is None else found[0]


def next_start(schedule: Schedule, now: float) -> float | None:
    """The first occurrence start after `now`, within about thirteen months; None if
    there is none (a past one-time window, a cron date that never comes such as Feb 30)."""
    if isinstance(schedule, OneTime):
        return schedule.start if schedule.start > now else None
    day = _local_date(now, schedule.tz) - timedelta(days=1)
    for offset in range(_LOOKAHEAD_DAYS):
        starts = [s for s, _ in _on_date(schedule, day + timedelta(days=offset), now, math.inf)]
        later = [start for start in starts if start > now]
        if later:
            return min(later)
    return None


def _reach(schedule: Weekly | Cron) -> float:
    """How long before t0 an occurrence overlapping t0 may have started."""
    if isinstance(schedule, Cron):
        return schedule.duration
    return max((span.days + 1) * 86400.0 for span in schedule.spans)


def _on_date(
    schedule: Weekly | Cron, day: date, lo: float, hi: float
) -> Iterator[tuple[float, float]]:
    """The occurrences starting on local date `day`, at least those starting in [lo, hi]."""
    tz = schedule.tz
    if isinstance(schedule, Weekly):
        weekday = day.weekday()
        for span in schedule.spans:
            if span.weekday == weekday:
                yield (
                    _wall(day, span.start, tz),
                    _wall(day + timedelta(days=span.days), span.end, tz),
                )
        return
    if day.month not in schedule.months:
        return
    in_month = day.day in schedule.days
    in_week = day.weekday() in schedule.weekdays
    if schedule.days_restricted and schedule.weekdays_restricted:
        matches = in_month or in_week
    else:
        matches = in_month and in_week
    if not matches:
        return
    # A minutely cron has 1440 starts a day: place them roughly from midnight and convert
    # only those near [lo, hi] exactly.
    midnight = _wall(day, 0, tz)
    for hour in sorted(schedule.hours):
        for minute in sorted(schedule.minutes):
            rough = midnight + (hour * 60 + minute) * 60.0
            if rough < lo - _DST_SLACK or rough > hi + _DST_SLACK:
                continue
            start = _wall(day, hour * 60 + minute, tz)
            yield start, start + schedule.duration


def _wall(day: date, minute: int, tz: ZoneInfo) -> float:
    """Unix time of `minute` after midnight of local date `day` (1440: the next midnight)."""
    day += timedelta(days=minute // DAY_MINUTES)
    minute %= DAY_MINUTES
    # fold=0: a skipped wall time takes the offset before the jump; a repeated one, its first
    local = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=tz)
    return local.timestamp()


def _local_date(t: float, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(t, tz).date()


def _dates(first: date, last: date) -> Iterator[date]:
    for offset in range((last - first).days + 1):
        yield first + timedelta(days=offset)
