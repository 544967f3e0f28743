"""Reading tickets: one with its timeline, snapshot and earlier tickets; a filtered list;
the counts by state. Read-only, on a connection the caller holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, Row, func, select

from tripline.collector import previously, ticketsnapshots
from tripline.collector.schema import TICKET_STATUSES, ticket_events, tickets
from tripline.collector.ticketmodel import (
    ENGINE_ACTOR,
    Ticket,
    TicketEvent,
    TicketNotFound,
    TicketStatus,
)


def _ticket(row: Row[Any], events: tuple[TicketEvent, ...] = ()) -> Ticket:
    values = row._asdict()
    # A row written by an older or broken collector, or by hand, may hold other JSON:
    # reading a ticket must not fail on it (tickets show, the API, delivery).
    labels = row.labels if isinstance(row.labels, dict) else {}
    values["labels"] = tuple(sorted((str(k), str(v)) for k, v in labels.items()))
    values["context"] = dict(row.context) if isinstance(row.context, dict) else {}
    values["flapping"] = bool(row.flapping)
    return Ticket(**values, events=events)


def get_ticket(conn: Connection, ticket_id: int) -> Ticket:
    """The ticket with its timeline, oldest event first."""
    row = conn.execute(select(tickets).where(tickets.c.id == ticket_id)).one_or_none()
    if row is None:
        raise TicketNotFound(ticket_id)
    events = tuple(
        TicketEvent(e.seq, e.at, e.kind, e.actor, e.message, dict(e.data))
        for e in conn.execute(
            select(ticket_events)
            .where(ticket_events.c.ticket_id == ticket_id)
            .order_by(ticket_events.c.seq)
        )
    )
    ticket = _ticket(row, events)
    snap = ticketsnapshots.get(conn, ticket_id)
    earlier = previously.previous_tickets(
        conn,
        ticket_id=ticket_id,
        customer=ticket.customer,
        agent_id=ticket.agent_id,
        rule=ticket.rule,
        engine_actor=ENGINE_ACTOR,
    )
    return dataclasses.replace(
        ticket,
        snapshot=None if snap is None else snap[0],
        snapshot_taken_at=None if snap is None else snap[1],
        previously=earlier,
    )


def list_tickets(
    conn: Connection,
    *,
    status: TicketStatus | tuple[TicketStatus, ...] | None = None,
    customer: str | None = None,
    agent_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
    customers: Collection[str] | None = None,
    severity: str | None = None,
    tier: int | None = None,
) -> list[Ticket]:
    """Newest first, without their events (get_ticket has those). `customers` limits the
    list to those customers (an API token's scope), on top of `customer`."""
    statuses = (status,) if isinstance(status, str) else status
    query = select(tickets)
    if statuses is not None:
        unknown = set(statuses) - set(TICKET_STATUSES)
        if unknown:
            raise ValueError(f"unknown ticket status {sorted(unknown)}; use {TICKET_STATUSES}")
        query = query.where(tickets.c.status.in_(statuses))
    if customer is not None:
        query = query.where(tickets.c.customer == customer)
    if agent_id is not None:
        query = query.where(tickets.c.agent_id == agent_id)
    if customers is not None:
        query = query.where(tickets.c.customer.in_(sorted(customers)))
    if severity is not None:
        query = query.where(tickets.c.severity == severity)
    if tier is not None:
        query = query.where(tickets.c.tier == tier)
    query = (
        query.order_by(tickets.c.opened_at.desc(), tickets.c.id.desc()).limit(limit).offset(offset)
    )
    return [_ticket(row) for row in conn.execute(query)]


def count_by_state(conn: Connection) -> dict[tuple[str, str, int], int]:
    """(status, severity, tier) -> number of tickets."""
    query = select(tickets.c.status, tickets.c.severity, tickets.c.tier, func.count()).group_by(
        tickets.c.status, tickets.c.severity, tickets.c.tier
    )
    return {
        (status, severity, int(tier)): int(n) for status, severity, tier, n in conn.execute(query)
    }
