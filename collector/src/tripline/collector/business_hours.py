"""Business hours: when a customer's office PCs are expected to report.

Customers with business hours are watched during them only, so an office PC switched off
at night opens no offline ticket; agents with an always-on tag (servers) are watched
around the clock. The liveness tracker (`liveness.py`) asks this module; the schedule
maths is `alerts.calendar`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from tripline.alerts import calendar


class BusinessHoursWatch:
    """Whether an office PC is expected to report: customers with business hours are
    watched during them, agents with an always-on tag (servers) around the clock."""

    def __init__(
        self,
        hours: Mapping[str, calendar.Weekly],
        always_on_tags: Collection[tuple[str, str]] = (),
    ) -> None:
        self.hours = dict(hours)
        self.always_on_tags = tuple(always_on_tags)
        # customer -> (valid from, valid until, watched since)
        self._memo: dict[str, tuple[float, float, float | None]] = {}

    def always_on(self, tags: Mapping[str, Any]) -> bool:
        return any(key in tags and str(tags[key]) == value for key, value in self.always_on_tags)

    def watched_since(self, customer: str, now: float) -> float | None:
        """Since when the customer's PCs have been expected to report: -inf for a customer
        without business hours, today's opening time during them, None outside them."""
        hours = self.hours.get(customer)
        if hours is None:
            return -math.inf
        memo = self._memo.get(customer)
        if memo is not None and memo[0] <= now < memo[1]:
            return memo[2]
        span = calendar.period(hours, now)
        if span is not None:
            memo = (span[0], span[1], span[0])
        else:
            start = calendar.next_start(hours, now)
            memo = (now, now + 86400.0 if start is None else start, None)
        self._memo[customer] = memo
        return memo[2]
