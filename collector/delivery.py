"""Deliver ticket events to every route: at least once, across restarts, in order per ticket.

The outbox is the ``ticket_events`` table, written in the same transaction as the ticket
change. Each route records every event it has handled in ``deliveries``; what is not there
yet is pending. Events go out in id order, and a retryable failure stops the route until
its backoff elapses, so a later event of a ticket never overtakes an earlier one (a
resolve is never followed by a stale open). Receivers drop repeats by the idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, exists, func, insert, select

from agent.backoff import Backoff
from collector.schema import deliveries, delivery_routes, ticket_events, tickets
from collector.selfmetrics import CollectorMetrics
from collector.sinks import AlertmanagerSink, Delivery, DeliveryFailed, Sink
from collector.store import Store, StoreUnavailable

log = logging.getLogger(__name__)

BATCH = 100


def register_route(conn: Connection, route: str, now: float) -> int:
    """The route's first event id; registering a new route starts it at the present."""
    row = conn.execute(
        select(delivery_routes.c.first_event_id).where(delivery_routes.c.route == route)
    ).one_or_none()
    if row is not None:
        return int(row.first_event_id)
    first = int(conn.scalar(select(func.coalesce(func.max(ticket_events.c.id), 0))) or 0)
    conn.execute(insert(delivery_routes).values(route=route, first_event_id=first, created_at=now))
    return first


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


def pending(
    conn: Connection, route: str, first_event_id: int, limit: int = BATCH
) -> list[Delivery]:
    """Events this route has not handled yet, oldest first, with their ticket's state now."""
    handled = exists().where(
        and_(deliveries.c.route == route, deliveries.c.event_id == ticket_events.c.id)
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
        )
        .join(tickets, tickets.c.id == ticket_events.c.ticket_id)
        .where(ticket_events.c.id > first_event_id, ~handled)
        .order_by(ticket_events.c.id)
        .limit(limit)
    )
    return [
        Delivery(
            event_id=row.event_id,
            ticket=_ticket_dict(row),
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
    conn.execute(
        insert(deliveries).values(
            route=route, event_id=event_id, status=status, attempts=attempts, at=now, error=error
        )
    )


def open_tickets(conn: Connection) -> list[dict[str, Any]]:
    query = select(tickets.c.id.label("ticket_id"), *_TICKET_COLUMNS).where(
        tickets.c.status != "resolved"
    )
    return [_ticket_dict(row) for row in conn.execute(query)]


@dataclass
class _RouteState:
    sink: Sink
    backoff: Backoff
    first_event_id: int = -1
    attempts: int = 0
    next_attempt: float = 0.0
    next_resync: float = 0.0
    backlog: int = 0
    last_error: str = field(default="")


class Deliverer:
    def __init__(
        self,
        store: Store,
        sinks: list[Sink],
        metrics: CollectorMetrics,
        *,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        backoff_initial: float = 1.0,
        backoff_max: float = 300.0,
        poll_interval: float = 1.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.routes = {
            sink.route.name: _RouteState(sink, Backoff(backoff_initial, backoff_max, rng))
            for sink in sinks
        }
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """New ticket events were committed: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                for name, state in self.routes.items():
                    try:
                        await self.drain(name, state)
                    except StoreUnavailable as exc:
                        log.warning("delivery paused: store unavailable", extra={"error": str(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
        finally:
            for state in self.routes.values():
                await state.sink.close()

    async def drain(self, name: str, state: _RouteState) -> None:
        """Deliver what is pending for one route until it is empty or the receiver fails."""
        now = self.clock()
        if state.first_event_id < 0:
            state.first_event_id = await self._write(lambda c: register_route(c, name, now))
        if now < state.next_attempt:
            return
        resync_due = isinstance(state.sink, AlertmanagerSink) and now >= state.next_resync
        if resync_due and not await self._resync(name, state):
            return
        while True:
            batch = await asyncio.to_thread(self._read, name, state.first_event_id)
            if not batch:
                return
            for delivery in batch:
                if not await self._deliver_one(name, state, delivery):
                    return

    async def _deliver_one(self, name: str, state: _RouteState, delivery: Delivery) -> bool:
        route = state.sink.route
        if not route.match.matches(delivery.ticket, str(delivery.event["kind"])):
            await self._record(name, delivery, "skipped", 0)
            return True
        attempts = state.attempts + 1
        try:
            await state.sink.deliver(delivery)
        except DeliveryFailed as exc:
            self.metrics.deliveries.labels(name, "retry" if exc.retryable else "failed").inc()
            if exc.retryable:
                self._back_off(name, state, str(exc), exc.retry_after)
                return False
            log.error(
                "delivery refused for good, skipping the event",
                extra={"route": name, "key": delivery.idempotency_key, "error": str(exc)},
            )
            await self._record(name, delivery, "failed", attempts, str(exc))
            state.attempts = 0
            state.backoff.reset()
            return True
        await self._record(name, delivery, "delivered", attempts)
        self.metrics.deliveries.labels(name, "delivered").inc()
        if state.attempts:
            log.info("delivery recovered", extra={"route": name, "after_attempts": state.attempts})
        state.attempts = 0
        state.backoff.reset()
        state.last_error = ""
        return True

    async def _resync(self, name: str, state: _RouteState) -> bool:
        sink = state.sink
        assert isinstance(sink, AlertmanagerSink)
        tickets_now = await asyncio.to_thread(self._open_tickets)
        wanted = [t for t in tickets_now if sink.route.match.matches(t, "opened")]
        try:
            await sink.resync(wanted)
        except DeliveryFailed as exc:
            self.metrics.deliveries.labels(name, "retry").inc()
            self._back_off(name, state, str(exc), exc.retry_after)
            return False
        state.next_resync = self.clock() + sink.resend_interval
        return True

    def _back_off(
        self, name: str, state: _RouteState, error: str, retry_after: float | None
    ) -> None:
        delay = state.backoff.next()
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        state.attempts += 1
        state.next_attempt = self.clock() + delay
        state.last_error = error
        log.warning(
            "delivery failed, will retry",
            extra={
                "route": name,
                "attempt": state.attempts,
                "in_seconds": round(delay, 1),
                "error": error,
            },
        )

    def _read(self, name: str, first_event_id: int) -> list[Delivery]:
        with self.store.read() as conn:
            return pending(conn, name, first_event_id)

    def _open_tickets(self) -> list[dict[str, Any]]:
        with self.store.read() as conn:
            return open_tickets(conn)

    async def _record(
        self, name: str, delivery: Delivery, status: str, attempts: int, error: str | None = None
    ) -> None:
        now = self.clock()
        await self._write(
            lambda c: record(c, name, delivery.event_id, status, attempts, now, error)
        )

    async def _write(self, work: Callable[[Connection], Any]) -> Any:
        def run() -> Any:
            with self.store.transaction() as conn:
                return work(conn)

        return await asyncio.to_thread(run)
