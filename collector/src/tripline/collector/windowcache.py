"""The maintenance windows that can still matter, held in the collector's memory so
matching an alert against them costs no query (storage: `maintenance.py`)."""

from __future__ import annotations

import math

from sqlalchemy import Connection

from tripline.alerts import calendar
from tripline.collector.maintenance import MaintenanceWindow, list_windows


class WindowCache:
    """The windows that can still matter, held in memory so matching an alert costs no
    query. Other processes (the CLI) change the table, so the owner reloads it when
    `due(now)`; `invalidate()` makes the next check reload at once."""

    def __init__(self, reload_every: float = 5.0) -> None:
        self.reload_every = reload_every
        self.windows: tuple[MaintenanceWindow, ...] = ()
        self._loaded_at = -math.inf
        # window -> (valid from, valid until, active): schedules are evaluated once per
        # change of state, not once per alert
        self._memo: dict[MaintenanceWindow, tuple[float, float, bool]] = {}

    def due(self, now: float) -> bool:
        return not self._loaded_at <= now < self._loaded_at + self.reload_every

    def invalidate(self) -> None:
        self._loaded_at = -math.inf

    def load(self, conn: Connection, now: float) -> None:
        windows = tuple(list_windows(conn, current_after=now))
        # Read from the committer's thread too: swap whole objects, never mutate in place.
        kept = set(windows)
        self._memo = {w: m for w, m in dict(self._memo).items() if w in kept}
        self.windows = windows
        self._loaded_at = now

    def find(
        self, *, customer: str, site: str, agent_id: str, rule: str, now: float
    ) -> MaintenanceWindow | None:
        """An active window covering the alert, the lowest id if several."""
        for window in self.windows:
            if window.matches(customer=customer, site=site, agent_id=agent_id, rule=rule) and (
                self._active(window, now)
            ):
                return window
        return None

    def _active(self, window: MaintenanceWindow, now: float) -> bool:
        memo = self._memo.get(window)
        if memo is not None and memo[0] <= now < memo[1]:
            return memo[2]
        span = calendar.period(window.schedule, now)
        if span is not None:
            memo = (span[0], span[1], True)
        else:
            start = calendar.next_start(window.schedule, now)
            memo = (now, now + 86400.0 if start is None else start, False)
        self._memo[window] = memo
        return memo[2]
