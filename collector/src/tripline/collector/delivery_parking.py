"""Parked deliveries: events a route gave up on after repeated failures, so one event
cannot hold its route for good.

A parked event is not pending; an operator lists them (API, CLI) and retries one with
`unpark`, which makes it pending again so the route sends it next. Functions run on a
connection inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select

from tripline.collector.database import insert_ignoring_conflict
from tripline.collector.schema import delivery_parked, ticket_events, tickets

ERROR_MAX = 1000


def park(
    conn: Connection, route: str, event_id: int, attempts: int, now: float, error: str
) -> None:
    insert_ignoring_conflict(
        conn,
        delivery_parked,
        route=route,
        event_id=event_id,
        attempts=attempts,
        parked_at=now,
        error=error[:ERROR_MAX],
    )


@dataclass(frozen=True)
class ParkedEvent:
    route: str
    event_id: int
    ticket_id: int
    seq: int
    kind: str
    customer: str
    attempts: int
    parked_at: float
    error: str

    @property
    def idempotency_key(self) -> str:
        return f"{self.ticket_id}-{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "event_id": self.event_id,
            "ticket_id": self.ticket_id,
            "seq": self.seq,
            "kind": self.kind,
            "customer": self.customer,
            "idempotency_key": self.idempotency_key,
            "attempts": self.attempts,
            "parked_at": self.parked_at,
            "error": self.error,
        }


class ParkedEventNotFound(LookupError):
    def __init__(self, route: str, event_id: int) -> None:
        super().__init__(f"no parked event {event_id} on route {route!r}")
        self.route = route
        self.event_id = event_id


def _parked_query() -> Any:
    return (
        select(
            delivery_parked,
            ticket_events.c.ticket_id,
            ticket_events.c.seq,
            ticket_events.c.kind,
            tickets.c.customer,
        )
        .join(ticket_events, ticket_events.c.id == delivery_parked.c.event_id)
        .join(tickets, tickets.c.id == ticket_events.c.ticket_id)
    )


def _parked(row: Any) -> ParkedEvent:
    return ParkedEvent(
        route=row.route,
        event_id=row.event_id,
        ticket_id=row.ticket_id,
        seq=row.seq,
        kind=row.kind,
        customer=row.customer,
        attempts=row.attempts,
        parked_at=row.parked_at,
        error=row.error,
    )


def list_parked(
    conn: Connection,
    *,
    route: str | None = None,
    customers: Iterable[str] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[ParkedEvent]:
    """Parked events, oldest first; ``customers`` None means every customer."""
    query = _parked_query()
    if route is not None:
        query = query.where(delivery_parked.c.route == route)
    if customers is not None:
        query = query.where(tickets.c.customer.in_(list(customers)))
    query = query.order_by(delivery_parked.c.event_id, delivery_parked.c.route)
    return [_parked(r) for r in conn.execute(query.limit(limit).offset(offset))]


def get_parked(conn: Connection, route: str, event_id: int) -> ParkedEvent:
    query = _parked_query().where(
        delivery_parked.c.route == route, delivery_parked.c.event_id == event_id
    )
    row = conn.execute(query).one_or_none()
    if row is None:
        raise ParkedEventNotFound(route, event_id)
    return _parked(row)


def unpark(conn: Connection, route: str, event_id: int) -> ParkedEvent:
    """Make a parked event pending again: the route sends it next (before newer events)."""
    event = get_parked(conn, route, event_id)
    conn.execute(
        delete(delivery_parked).where(
            delivery_parked.c.route == route, delivery_parked.c.event_id == event_id
        )
    )
    return event
