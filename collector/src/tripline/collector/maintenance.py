"""When alerts are held back: maintenance windows, the alerts they suppressed, business hours.

A maintenance window covers a customer, site, agent or rule (any combination, all given
must match) on a schedule from `alerts.calendar`. A matching alert that starts firing
during one opens no ticket and sends nothing; it is recorded in `suppressed_alerts`, and
opens its ticket when it outlives every matching window (or is marked cleared when it
clears first). Business hours say when a customer's office PCs are expected to report.

The CRUD and suppression functions run on a connection inside the caller's transaction
(`Store.transaction()` / `Store.read()`) and take `now`; none commits. The HTTP API, the
CLI and the pipeline all call them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from sqlalchemy import Connection, Row, or_, select

from tripline.alerts import calendar
from tripline.collector.schema import maintenance_windows, suppressed_alerts
from tripline.collector.tickets import problem_key
from tripline.common.labels import Labels

WindowKind = Literal["once", "weekly", "cron"]
SCOPE_FIELDS = ("customer", "site", "agent_id", "rule")
SCHEDULE_FIELDS = ("starts_at", "ends_at", "weekly", "cron", "duration", "timezone")


class MaintenanceError(Exception):
    """Base of this module's named errors."""


class WindowNotFound(MaintenanceError):
    def __init__(self, window_id: int) -> None:
        super().__init__(f"no maintenance window {window_id}")
        self.window_id = window_id


class InvalidWindow(MaintenanceError, ValueError):
    """A window that cannot be stored; `field` names the offending input."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"maintenance window {field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class MaintenanceWindow:
    id: int
    customer: str | None
    site: str | None
    agent_id: str | None
    rule: str | None
    kind: WindowKind
    starts_at: float | None
    ends_at: float | None
    weekly: str | None
    cron: str | None
    duration: float | None
    timezone: str | None
    comment: str
    created_at: float
    created_by: str
    updated_at: float
    schedule: calendar.Schedule = field(compare=False, repr=False)

    def matches(self, *, customer: str, site: str, agent_id: str, rule: str) -> bool:
        """Whether this window's scope covers the alert (unset scope fields match all)."""
        return (
            (self.customer is None or self.customer == customer)
            and (self.site is None or self.site == site)
            and (self.agent_id is None or self.agent_id == agent_id)
            and (self.rule is None or self.rule == rule)
        )

    def status(self, now: float) -> Literal["active", "scheduled", "ended"]:
        if calendar.active(self.schedule, now):
            return "active"
        return "scheduled" if calendar.next_start(self.schedule, now) is not None else "ended"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the keys are those `create_window` takes, plus bookkeeping."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "schedule"}


@dataclass(frozen=True)
class Suppressed:
    """An alert a maintenance window held back."""

    id: int
    window_id: int
    customer: str
    agent_id: str
    hostname: str
    rule: str
    labels: Labels
    value: float
    severity: str
    tier: int
    summary: str
    runbook: str | None
    threshold: float | None
    suppressed_at: float
    cleared_at: float | None
    released_at: float | None
    ticket_id: int | None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["labels"] = dict(self.labels)
        return out


# -- windows ------------------------------------------------------------------------------


def build_schedule(
    *,
    starts_at: float | None = None,
    ends_at: float | None = None,
    weekly: str | None = None,
    cron: str | None = None,
    duration: float | None = None,
    timezone: str | None = None,
) -> tuple[WindowKind, calendar.Schedule]:
    """Check one schedule (exactly one of starts_at+ends_at, weekly, cron+duration)."""
    given = [
        name
        for name, value in (("starts_at/ends_at", starts_at), ("weekly", weekly), ("cron", cron))
        if value is not None
    ]
    if ends_at is not None and starts_at is None:
        given.append("starts_at/ends_at")
    if len(set(given)) != 1:
        raise InvalidWindow(
            "schedule",
            "give exactly one of starts_at and ends_at (one-time), weekly "
            "(e.g. 'Mon-Fri 18:00-08:00') or cron with a duration (e.g. '0 2 * * Sun', 2h)",
        )
    try:
        tz = calendar.zone(timezone or "UTC")
    except calendar.CalendarError as exc:
        raise InvalidWindow("timezone", str(exc)) from None
    if weekly is not None:
        if duration is not None:
            raise InvalidWindow("duration", "a weekly window's ranges give its length")
        return "weekly", _parsed("weekly", calendar.parse_weekly, weekly, tz)
    if cron is not None:
        if duration is None:
            raise InvalidWindow("duration", "a cron window needs a duration, e.g. 2h")
        return "cron", _parsed("cron", calendar.parse_cron, cron, duration, tz)
    if starts_at is None or ends_at is None:
        raise InvalidWindow("ends_at", "a one-time window needs starts_at and ends_at")
    if duration is not None or timezone is not None:
        raise InvalidWindow("schedule", "a one-time window takes no duration or timezone")
    return "once", _parsed("ends_at", calendar.one_time, starts_at, ends_at)


def _parsed(field_name: str, parse: Callable[..., calendar.Schedule], *args: Any) -> Any:
    try:
        return parse(*args)
    except calendar.CalendarError as exc:
        raise InvalidWindow(field_name, str(exc)) from None


def _scope(values: Mapping[str, Any]) -> dict[str, str | None]:
    scope: dict[str, str | None] = {}
    for name in SCOPE_FIELDS:
        value = values.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise InvalidWindow(name, f"expected a non-empty name, got {value!r}")
        scope[name] = value.strip() if isinstance(value, str) else None
    if all(value is None for value in scope.values()):
        raise InvalidWindow(
            "scope", "name at least one of customer, site, agent_id, rule (all must match)"
        )
    return scope


def _row_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Validated column values for a window from `create_window`'s keyword arguments."""
    scope = _scope(values)
    schedule_args = {name: values.get(name) for name in SCHEDULE_FIELDS}
    kind, _ = build_schedule(**schedule_args)
    comment = values.get("comment") or ""
    if not isinstance(comment, str):
        raise InvalidWindow("comment", "expected text")
    return {
        **scope,
        "kind": kind,
        "starts_at": schedule_args["starts_at"],
        "ends_at": schedule_args["ends_at"],
        "spec": schedule_args["weekly"] if kind == "weekly" else schedule_args["cron"],
        "duration": schedule_args["duration"],
        "timezone": None if kind == "once" else (schedule_args["timezone"] or "UTC"),
        "comment": comment,
    }


def _window(row: Row[Any]) -> MaintenanceWindow:
    kind: WindowKind = row.kind
    weekly = row.spec if kind == "weekly" else None
    cron = row.spec if kind == "cron" else None
    _, schedule = build_schedule(
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        weekly=weekly,
        cron=cron,
        duration=row.duration,
        timezone=row.timezone,
    )
    return MaintenanceWindow(
        id=row.id,
        customer=row.customer,
        site=row.site,
        agent_id=row.agent_id,
        rule=row.rule,
        kind=kind,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        weekly=weekly,
        cron=cron,
        duration=row.duration,
        timezone=row.timezone,
        comment=row.comment,
        created_at=row.created_at,
        created_by=row.created_by,
        updated_at=row.updated_at,
        schedule=schedule,
    )


def create_window(
    conn: Connection,
    *,
    actor: str,
    now: float,
    customer: str | None = None,
    site: str | None = None,
    agent_id: str | None = None,
    rule: str | None = None,
    starts_at: float | None = None,
    ends_at: float | None = None,
    weekly: str | None = None,
    cron: str | None = None,
    duration: float | None = None,
    timezone: str | None = None,
    comment: str = "",
) -> MaintenanceWindow:
    """Store a window; raises InvalidWindow naming the field that is wrong.

    Scope: customer, site, agent_id, rule; at least one, all given must match an alert.
    Schedule: starts_at and ends_at (unix seconds), or weekly (see
    `alerts.calendar.parse_weekly`), or cron and duration (seconds); weekly and cron read
    wall times in `timezone` (IANA name, default UTC).
    """
    values = _row_values(
        {
            "customer": customer,
            "site": site,
            "agent_id": agent_id,
            "rule": rule,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "weekly": weekly,
            "cron": cron,
            "duration": duration,
            "timezone": timezone,
            "comment": comment,
        }
    )
    window_id = conn.execute(
        maintenance_windows.insert().values(
            **values, created_at=now, created_by=actor, updated_at=now
        )
    ).inserted_primary_key[0]
    return get_window(conn, int(window_id))


def get_window(conn: Connection, window_id: int) -> MaintenanceWindow:
    row = conn.execute(
        select(maintenance_windows).where(maintenance_windows.c.id == window_id)
    ).one_or_none()
    if row is None:
        raise WindowNotFound(window_id)
    return _window(row)


def list_windows(
    conn: Connection,
    *,
    customers: Collection[str] | None = None,
    current_after: float | None = None,
) -> list[MaintenanceWindow]:
    """Windows by id. `customers` keeps those scoped to one of them (a window without a
    customer spans customers, so a customer-scoped caller does not see it);
    `current_after` drops one-time windows that ended before that time."""
    query = select(maintenance_windows).order_by(maintenance_windows.c.id)
    if customers is not None:
        query = query.where(maintenance_windows.c.customer.in_(list(customers)))
    if current_after is not None:
        query = query.where(
            or_(maintenance_windows.c.kind != "once", maintenance_windows.c.ends_at > current_after)
        )
    return [_window(row) for row in conn.execute(query)]


def update_window(
    conn: Connection, window_id: int, *, actor: str, now: float, **changes: Any
) -> MaintenanceWindow:
    """Change scope fields, comment or the schedule; schedule fields given replace the
    whole schedule (pass weekly alone to turn a one-time window into a weekly one).
    `actor` is accepted for the caller's audit trail; the row keeps its creator."""
    del actor
    unknown = set(changes) - set(SCOPE_FIELDS) - set(SCHEDULE_FIELDS) - {"comment"}
    if unknown:
        raise InvalidWindow(sorted(unknown)[0], "not a maintenance window field")
    current = get_window(conn, window_id).to_dict()
    if set(changes) & set(SCHEDULE_FIELDS):
        for name in SCHEDULE_FIELDS:
            current[name] = None
    current.update(changes)
    values = _row_values(current)
    conn.execute(
        maintenance_windows.update()
        .where(maintenance_windows.c.id == window_id)
        .values(**values, updated_at=now)
    )
    return get_window(conn, window_id)


def delete_window(conn: Connection, window_id: int) -> MaintenanceWindow:
    """Remove a window and return it; alerts it held back open their tickets at the
    collector's next check unless another window still covers them."""
    window = get_window(conn, window_id)
    conn.execute(maintenance_windows.delete().where(maintenance_windows.c.id == window_id))
    return window


# -- suppressed alerts --------------------------------------------------------------------


def _suppressed(row: Row[Any]) -> Suppressed:
    values = {f.name: getattr(row, f.name) for f in fields(Suppressed)}
    values["labels"] = tuple(sorted((str(k), str(v)) for k, v in row.labels.items()))
    return Suppressed(**values)


def record_suppressed(
    conn: Connection,
    *,
    window_id: int,
    customer: str,
    agent_id: str,
    hostname: str,
    rule: str,
    labels: Labels,
    value: float,
    severity: str,
    tier: int,
    summary: str,
    runbook: str | None,
    threshold: float | None,
    now: float,
) -> Suppressed:
    """Record that a window held back a firing alert. Idempotent per problem: a pending
    record for the same problem is returned as it is."""
    key = problem_key(customer, agent_id, rule, labels)
    existing = _pending(conn, key)
    if existing is not None:
        return existing
    row_id = conn.execute(
        suppressed_alerts.insert().values(
            problem_key=key,
            window_id=window_id,
            customer=customer,
            agent_id=agent_id,
            hostname=hostname,
            rule=rule,
            labels=dict(sorted(labels)),
            value=value,
            severity=severity,
            tier=tier,
            summary=summary,
            runbook=runbook,
            threshold=threshold,
            suppressed_at=now,
        )
    ).inserted_primary_key[0]
    row = conn.execute(select(suppressed_alerts).where(suppressed_alerts.c.id == row_id)).one()
    return _suppressed(row)


def _pending(conn: Connection, key: str) -> Suppressed | None:
    row = conn.execute(
        select(suppressed_alerts).where(
            suppressed_alerts.c.problem_key == key,
            suppressed_alerts.c.cleared_at.is_(None),
            suppressed_alerts.c.released_at.is_(None),
        )
    ).one_or_none()
    return None if row is None else _suppressed(row)


def clear_suppressed(
    conn: Connection, *, customer: str, agent_id: str, rule: str, labels: Labels, now: float
) -> bool:
    """The alert cleared while held back: it leaves no ticket. False if none was pending."""
    key = problem_key(customer, agent_id, rule, labels)
    updated = conn.execute(
        suppressed_alerts.update()
        .where(
            suppressed_alerts.c.problem_key == key,
            suppressed_alerts.c.cleared_at.is_(None),
            suppressed_alerts.c.released_at.is_(None),
        )
        .values(cleared_at=now)
    ).rowcount
    return bool(updated)


def release_suppressed(conn: Connection, suppressed_id: int, *, ticket_id: int, now: float) -> None:
    """The alert outlived its windows and opened ticket `ticket_id`."""
    conn.execute(
        suppressed_alerts.update()
        .where(suppressed_alerts.c.id == suppressed_id, suppressed_alerts.c.released_at.is_(None))
        .values(released_at=now, ticket_id=ticket_id)
    )


def pending_suppressed(conn: Connection) -> list[Suppressed]:
    """Records neither cleared nor released: the alerts still held back."""
    query = (
        select(suppressed_alerts)
        .where(suppressed_alerts.c.cleared_at.is_(None), suppressed_alerts.c.released_at.is_(None))
        .order_by(suppressed_alerts.c.id)
    )
    return [_suppressed(row) for row in conn.execute(query)]


def list_suppressed(
    conn: Connection,
    *,
    customers: Collection[str] | None = None,
    agent_id: str | None = None,
    window_id: int | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> list[Suppressed]:
    """Newest first; page with `before_id` (the last id of the previous page)."""
    query = select(suppressed_alerts).order_by(suppressed_alerts.c.id.desc()).limit(limit)
    if customers is not None:
        query = query.where(suppressed_alerts.c.customer.in_(list(customers)))
    if agent_id is not None:
        query = query.where(suppressed_alerts.c.agent_id == agent_id)
    if window_id is not None:
        query = query.where(suppressed_alerts.c.window_id == window_id)
    if before_id is not None:
        query = query.where(suppressed_alerts.c.id < before_id)
    return [_suppressed(row) for row in conn.execute(query)]


# -- in the collector's memory -----------------------------------------------------------


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
