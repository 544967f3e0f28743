"""The report's period: two ISO dates, validated strictly, as unix seconds (UTC)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

MAX_DAYS = 400
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class ReportPeriodError(ValueError):
    """The dates do not make a period a report can cover; the message says how to fix it.
    `field` is the date at fault: "from" or "to"."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Period:
    """From the start of `first` to the start of `until` (UTC): `until` is not included."""

    first: dt.date
    until: dt.date

    @property
    def start(self) -> float:
        return _midnight(self.first)

    @property
    def end(self) -> float:
        return _midnight(self.until)


def _midnight(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def _date(text: str, what: str) -> dt.date:
    if _DATE.fullmatch(text) is None:
        raise ReportPeriodError(what, f"{what} must be a date as YYYY-MM-DD, not {text[:40]!r}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ReportPeriodError(what, f"{what} {text!r} is not a day of the calendar") from None


def parse_period(first: str, until: str) -> Period:
    """`first` and `until` as YYYY-MM-DD; `until` is the first day NOT in the report
    (January is 2024-01-01 to 2024-02-01). Raises ReportPeriodError."""
    start = _date(first, "from")
    end = _date(until, "to")
    if not start < end:
        raise ReportPeriodError(
            "to", f"from ({start}) must be before to ({end}); 'to' is the first day not included"
        )
    if (end - start).days > MAX_DAYS:
        raise ReportPeriodError(
            "to",
            f"a report covers at most {MAX_DAYS} days; {start} to {end} is {(end - start).days}",
        )
    return Period(start, end)
