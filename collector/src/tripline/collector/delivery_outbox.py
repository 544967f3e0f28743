"""The delivery outbox: which ticket events a route has still to send, and the record of
each one it handled.

The outbox is the ``ticket_events`` table, written in the same transaction as the ticket
change; ``delivery_routes`` holds where each route starts, ``deliveries`` what it has
handled (delivered, skipped, failed for good). An event neither handled nor parked
(``delivery_parking``) is pending. Functions run on a connection inside the caller's
transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, exists, func, select

from tripline.collector import previously
from tripline.collector.database import insert_ignoring_conflict
from tripline.collector.schema import (
    deliveries,
    delivery_parked,
    delivery_routes,
    ticket_events,
    ticket_snapshots,
    tickets,
)
from tripline.collector.sinks import Delivery

BATCH = 100


def register_route(conn: Connection, route: str, now: float) -> int:
    """The route's first event id; registering a new route starts it at the present."""
    query = select(delivery_routes.c.first_event_id).where(delivery_routes.c.route == route)
    row = conn.execute(query).one_or_none()
    if row is not None:
        return int(row.first_event_id)
    first = int(conn.scalar(select(func.coalesce(func.max(ticket_events.c.id), 0))) or 0)
    insert_ignoring_conflict(
        conn, delivery_routes, route=route, first_event_id=first, created_at=now
    )
    return int(conn.execute(query).scalar_one())


def _ticket_dict(row: Any) -> dict[str, Any]:
    return {
        "id": row.ticket_id,
        "status": row.status,
        "customer": row.customer,
        "agent_id": row.agent_id,
        "hostname": row.hostname,
        "rule": row.rule,
        "labels": row.labels,
        "severity": row.severity,
        "tier": row.tier,
        "summary": row.summary,
        "runbook": row.runbook,
        "value": row.value,
        "threshold": row.threshold,
        "context": row.context,
        "opened_at": row.opened_at,
        "acknowledged_at": row.acknowledged_at,
        "acknowledged_by": row.acknowledged_by,
        "resolved_at": row.resolved_at,
        "resolved_value": row.resolved_value,
        "resolved_by": row.resolved_by,
        "reopen_count": row.reopen_count,
        "flapping": row.flapping,
    }


_TICKET_COLUMNS = [c for c in tickets.c if c.name not in ("id", "event_seq", "problem_key")]


def _with_history(conn: Connection, row: Any) -> dict[str, Any]:
    """The ticket as delivered: its snapshot as it is now, and for an opening (or
    reopening) what ended its earlier tickets (one bounded, indexed query)."""
    ticket = _ticket_dict(row)
    ticket["snapshot"] = row.snapshot if isinstance(row.snapshot, dict) else None
    ticket["snapshot_taken_at"] = row.snapshot_taken_at
    if row.kind in ("opened", "reopened"):
        ticket["previously"] = previously.previous_tickets(
            conn,
            ticket_id=row.ticket_id,
            customer=row.customer,
            agent_id=row.agent_id,
            rule=row.rule,
        )
    return ticket


def pending(
    conn: Connection, route: str, first_event_id: int, limit: int = BATCH
) -> list[Delivery]:
    """Events this route has neither handled nor parked, oldest first, with their ticket's
    state now."""
    handled = exists().where(
        and_(deliveries.c.route == route, deliveries.c.event_id == ticket_events.c.id)
    )
    parked = exists().where(
        and_(delivery_parked.c.route == route, delivery_parked.c.event_id == ticket_events.c.id)
    )
    query = (
        select(
            ticket_events.c.id.label("event_id"),
            ticket_events.c.ticket_id,
            ticket_events.c.seq,
            ticket_events.c.at,
            ticket_events.c.kind,
            ticket_events.c.actor,
            ticket_events.c.message,
            *_TICKET_COLUMNS,
            ticket_snapshots.c.snapshot,
            ticket_snapshots.c.taken_at.label("snapshot_taken_at"),
        )
        .join(tickets, tickets.c.id == ticket_events.c.ticket_id)
        .outerjoin(ticket_snapshots, ticket_snapshots.c.ticket_id == tickets.c.id)
        .where(ticket_events.c.id > first_event_id, ~handled, ~parked)
        .order_by(ticket_events.c.id)
        .limit(limit)
    )
    return [
        Delivery(
            event_id=row.event_id,
            ticket=_with_history(conn, row),
            event={
                "seq": row.seq,
                "kind": row.kind,
                "at": row.at,
                "actor": row.actor,
                "message": row.message,
            },
        )
        for row in conn.execute(query)
    ]


def record(
    conn: Connection,
    route: str,
    event_id: int,
    status: str,
    attempts: int,
    now: float,
    error: str | None = None,
) -> None:
    """The route handled the event; a second record of it (a collector that took over the
    route after a lease expired mid-delivery) is ignored."""
    insert_ignoring_conflict(
        conn,
        deliveries,
        route=route,
        event_id=event_id,
        status=status,
        attempts=attempts,
        at=now,
        error=error,
    )


def delivered_before(conn: Connection, route: str, ticket_id: int, event_id: int) -> bool:
    """Whether the route delivered an earlier event of the ticket."""
    query = (
        select(deliveries.c.event_id)
        .join(ticket_events, ticket_events.c.id == deliveries.c.event_id)
        .where(
            deliveries.c.route == route,
            deliveries.c.status == "delivered",
            ticket_events.c.ticket_id == ticket_id,
            ticket_events.c.id < event_id,
        )
        .limit(1)
    )
    return conn.execute(query).first() is not None


def open_tickets(conn: Connection) -> list[dict[str, Any]]:
    query = select(tickets.c.id.label("ticket_id"), *_TICKET_COLUMNS).where(
        tickets.c.status != "resolved"
    )
    return [_ticket_dict(row) for row in conn.execute(query)]
