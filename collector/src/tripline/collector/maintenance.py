"""Maintenance windows: their model, validation and storage.

A maintenance window covers a customer, site, agent or rule (any combination, all given
must match) on a schedule from `alerts.calendar`. A matching alert that starts firing
during one opens no ticket and sends nothing (see `suppression.py`, which also keeps the
record of what was held back; `windowcache.py` holds the windows in the collector's
memory).

The functions here run on a connection inside the caller's transaction
(`Store.transaction()` / `Store.read()`) and take `now`; none commits. The HTTP API, the
CLI and the pipeline all call them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from sqlalchemy import Connection, Row, or_, select

from tripline.alerts import calendar
from tripline.collector.schema import maintenance_windows

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
        maintenance_windows.insert()
        .values(**values, created_at=now, created_by=actor, updated_at=now)
        .returning(maintenance_windows.c.id)
    ).scalar_one()
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
