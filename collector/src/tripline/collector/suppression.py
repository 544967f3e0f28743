"""Alerts held back by maintenance windows: the record of each, and the collector's side.

A matching alert that starts firing during an active window (`maintenance.py`) opens no
ticket and sends nothing; it is recorded in `suppressed_alerts`, and opens its ticket when
it outlives every matching window, or is marked cleared when it clears first.

The record functions run on a connection inside the caller's transaction and take `now`;
none commits. `Suppression` is the pipeline's memory of them: the window cache, the alerts
held back now, and the decisions the pipeline commits in its own transactions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, Row, select

from tripline.alerts.engine import AlertKey, AlertState, Transition
from tripline.collector import ticketmodel, tickets
from tripline.collector.maintenance import MaintenanceWindow
from tripline.collector.schema import suppressed_alerts
from tripline.collector.state import AgentLive
from tripline.collector.store import Store, StoreUnavailable
from tripline.collector.ticketmodel import problem_key
from tripline.collector.windowcache import WindowCache
from tripline.common.labels import Labels

log = logging.getLogger(__name__)


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
        suppressed_alerts.insert()
        .values(
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
        .returning(suppressed_alerts.c.id)
    ).scalar_one()
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


class Suppression:
    """The windows in force and the alerts they hold back now, for one pipeline.

    Its methods that take a connection run inside the pipeline's commit; what they return
    is applied to memory with `hold` only once that commit succeeded.
    """

    def __init__(self, windows: WindowCache | None = None) -> None:
        self.windows = WindowCache() if windows is None else windows
        self.held: dict[AlertKey, Suppressed] = {}  # held back, pending

    def restore(self, conn: Connection, now: float) -> None:
        self.windows.load(conn, now)
        for held in pending_suppressed(conn):
            self.held[AlertKey(held.agent_id, held.rule, held.labels)] = held

    async def reload_windows(self, store: Store, now: float) -> None:
        """Reload the windows when the cache is due (other processes change them)."""
        if not self.windows.due(now):
            return

        def load() -> None:
            with store.read() as conn:
                self.windows.load(conn, now)

        try:
            await asyncio.to_thread(load)
        except StoreUnavailable as exc:
            # the windows already loaded stay in force; the next tick tries again
            log.warning("maintenance windows not reloaded", extra={"error": str(exc)})

    def window_for(self, live: AgentLive, rule: str, now: float) -> MaintenanceWindow | None:
        return self.windows.find(
            customer=live.customer, site=live.site, agent_id=live.agent_id, rule=rule, now=now
        )

    def suppress(
        self, conn: Connection, live: AgentLive, tr: Transition, window: MaintenanceWindow
    ) -> Suppressed:
        """Record the firing alert `tr` as held back by `window`."""
        held = record_suppressed(
            conn,
            window_id=window.id,
            customer=live.customer,
            agent_id=live.agent_id,
            hostname=live.hostname,
            rule=tr.rule.name,
            labels=tr.key.labels,
            value=tr.value,
            severity=tr.rule.severity,
            tier=tr.rule.tier,
            summary=tr.summary,
            runbook=tr.rule.runbook,
            threshold=tr.rule.threshold,
            now=tr.at,
        )
        log.info(
            "alert suppressed by maintenance window",
            extra={
                "window_id": window.id,
                "agent_id": live.agent_id,
                "customer": live.customer,
                "rule": tr.rule.name,
                "labels": dict(tr.key.labels),
                "value": tr.value,
            },
        )
        return held

    def hold(self, held: Mapping[AlertKey, Suppressed | None]) -> int:
        """Apply committed bookkeeping to memory (None: no longer held); returns how many
        alerts were newly held back."""
        added = 0
        for key, record in held.items():
            if record is None:
                self.held.pop(key, None)
            else:
                self.held[key] = record
                added += 1
        return added

    def releasable(
        self, agents: Mapping[str, AgentLive], now: float
    ) -> list[tuple[AlertKey, Suppressed, AgentLive | None]]:
        """Held-back alerts no active window covers any more (agent None: not tracked)."""
        out = []
        for key, held in list(self.held.items()):
            live = agents.get(key.agent_id)
            if live is not None and self.window_for(live, key.rule, now):
                continue
            out.append((key, held, live))
        return out

    def release(
        self,
        conn: Connection,
        *,
        held: Suppressed,
        live: AgentLive | None,
        state: AlertState | None,
        context: dict[str, Any],
        now: float,
        policy: ticketmodel.TicketPolicy,
    ) -> ticketmodel.TicketChange | None:
        """Open the ticket of a held-back alert still firing (`live` set), else mark the
        record cleared (its agent was revoked, or the alert ended unseen)."""
        if live is None or state is None:
            clear_suppressed(
                conn,
                customer=held.customer,
                agent_id=held.agent_id,
                rule=held.rule,
                labels=held.labels,
                now=now,
            )
            return None
        change = tickets.on_alert_firing(
            conn,
            customer=held.customer,
            agent_id=held.agent_id,
            hostname=live.hostname,
            rule=held.rule,
            labels=held.labels,
            severity=held.severity,
            tier=held.tier,
            summary=held.summary,
            runbook=held.runbook,
            value=state.value,
            threshold=held.threshold,
            context=context,
            now=now,
            policy=policy,
        )
        release_suppressed(conn, held.id, ticket_id=change.ticket_id, now=now)
        return change
