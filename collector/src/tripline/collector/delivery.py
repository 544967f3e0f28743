"""The delivery loop: ticket events to every route, at least once, across restarts, in
order per ticket.

The outbox is the ``ticket_events`` table, written in the same transaction as the ticket
change. Each route records every event it has handled in ``deliveries``; what is not there
(nor parked) is pending. Each route drains in its own supervised task, so a slow or dead
receiver delays only its own route, and a task that dies is restarted.

Within a route, events go out in id order and a failure pauses the route until its backoff
elapses, so a later event of a ticket never overtakes an earlier one (a resolve is never
followed by a stale open). One event cannot hold a route for good: an event the receiver
keeps refusing, or that a sink cannot render, is parked after ``max_attempts`` failures or
``park_after`` seconds, and the route goes on. Later events of its ticket are still sent
(a resolve after a parked open must reach the receiver); an operator's retry sends the
parked one late, and receivers order by event seq and drop repeats by the idempotency key.
A receiver nobody can reach parks nothing: the route waits for it.

Collectors sharing one database take turns per route through a lease row with an expiry
(``delivery_leases``): the holder drains the route, renews as it goes, and a holder that
dies leaves the route to another once the lease expires. A lease rather than per-row
locks keeps order per ticket across collectors and works the same on SQLite.

This module holds the loop (one supervised task per route, retries, backoff, parking
decisions); what it reads and writes lives in `delivery_outbox`, `delivery_parking` and
`delivery_leases`.
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

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from tripline.collector.delivery_leases import lease_owner, release_lease, take_lease
from tripline.collector.delivery_outbox import (
    delivered_before,
    open_tickets,
    pending,
    record,
    register_route,
)
from tripline.collector.delivery_parking import ERROR_MAX, park
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.sinks import AlertmanagerSink, Delivery, DeliveryFailed, Sink
from tripline.collector.store import Store, StoreUnavailable
from tripline.common.backoff import Backoff

log = logging.getLogger(__name__)


@dataclass
class _RouteState:
    sink: Sink
    backoff: Backoff
    first_event_id: int = -1
    # failures of the event at the head of the route, counted toward parking
    head_event_id: int = -1
    attempts: int = 0
    first_failure_at: float | None = None
    next_attempt: float = 0.0
    next_resync: float = 0.0
    lease_until: float = 0.0
    last_error: str = field(default="")
    # why the route's task is down (restarting); None while it runs
    down: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


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
        max_attempts: int = 10,
        park_after: float = 3600.0,
        lease: float = 30.0,
        owner: str | None = None,
        restart_backoff: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.rng = rng
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.max_attempts = max_attempts
        self.park_after = park_after
        self.lease = lease
        self.owner = owner or lease_owner()
        self.restart_backoff = restart_backoff
        self.routes = {
            sink.route.name: _RouteState(sink, Backoff(backoff_initial, backoff_max, rng))
            for sink in sinks
        }
        for name in self.routes:
            self.metrics.delivery_parked.labels(name)
            self.metrics.delivery_errors.labels(name)
            self.metrics.delivery_restarts.labels(name)

    def notify(self) -> None:
        """New ticket events were committed (or a parked one retried): look now."""
        for state in self.routes.values():
            state.wake.set()

    def problems(self) -> list[str]:
        """Why delivery is not working, for /readyz: one entry per route that is down."""
        return [
            f"delivery route {name!r} down: {state.down}"
            for name, state in self.routes.items()
            if state.down is not None
        ]

    async def run(self) -> None:
        """Drain every route in its own supervised task until cancelled."""
        tasks = [
            asyncio.create_task(self._supervise(name, state), name=f"delivery-{name}")
            for name, state in self.routes.items()
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for name, state in self.routes.items():
                await state.sink.close()
                await self._release(name)

    async def _release(self, name: str) -> None:
        """Hand the route to another collector at once rather than after the lease."""
        with contextlib.suppress(StoreUnavailable, SQLAlchemyError):
            await self._write(lambda c: release_lease(c, name, self.owner))

    async def _supervise(self, name: str, state: _RouteState) -> None:
        restarts = Backoff(*self.restart_backoff, self.rng)
        while True:
            try:
                await self._route_loop(name, state, restarts)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The route must survive anything: logged with the traceback, counted,
                # shown on /readyz until the restarted task drains once.
                delay = restarts.next()
                state.down = f"{type(exc).__name__}: {str(exc)[:200]}"
                self.metrics.delivery_restarts.labels(name).inc()
                log.exception(
                    "delivery route task died, restarting",
                    extra={"route": name, "in_seconds": round(delay, 1)},
                )
                await asyncio.sleep(delay)

    async def _route_loop(self, name: str, state: _RouteState, restarts: Backoff) -> None:
        while True:
            state.wake.clear()
            try:
                await self.drain(name, state)
            except StoreUnavailable as exc:
                log.warning(
                    "delivery paused: store unavailable", extra={"route": name, "error": str(exc)}
                )
            else:
                if state.down is not None:
                    log.info("delivery route running again", extra={"route": name})
                state.down = None
                restarts.reset()
            wait = self.poll_interval
            if state.next_attempt > self.clock():
                wait = min(wait, max(0.0, state.next_attempt - self.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.wake.wait(), wait)

    def _lease_ttl(self, state: _RouteState) -> float:
        # The lease must outlast one delivery, or another collector would take the route
        # while this one still waits for the receiver.
        return max(self.lease, 2 * state.sink.timeout + 5.0)

    async def _hold_lease(self, name: str, state: _RouteState) -> bool:
        now = self.clock()
        ttl = self._lease_ttl(state)
        if state.lease_until - now > ttl / 2:
            return True
        held = await self._write(lambda c: take_lease(c, name, self.owner, now, ttl))
        state.lease_until = now + ttl if held else 0.0
        return bool(held)

    async def drain(self, name: str, state: _RouteState) -> None:
        """Deliver what is pending for one route until it is empty or the receiver fails."""
        now = self.clock()
        if state.first_event_id < 0:
            state.first_event_id = await self._write(lambda c: register_route(c, name, now))
        if now < state.next_attempt:
            return
        if not await self._hold_lease(name, state):
            return  # another collector drains this route now
        resync_due = isinstance(state.sink, AlertmanagerSink) and now >= state.next_resync
        if resync_due and not await self._resync(name, state):
            return
        while True:
            batch = await asyncio.to_thread(self._read, name, state.first_event_id)
            if not batch:
                return
            for delivery in batch:
                if not await self._hold_lease(name, state):
                    return
                if not await self._deliver_one(name, state, delivery):
                    return

    async def _wanted(self, name: str, state: _RouteState, delivery: Delivery) -> bool:
        route = state.sink.route
        kind = str(delivery.event["kind"])
        if route.match.matches(delivery.ticket, kind):
            return True
        # A resolve ends every alert that was sent, even when the ticket no longer matches
        # the filter (escalated past the route's tiers): no ghost alert stays firing.
        if isinstance(state.sink, AlertmanagerSink) and kind == "resolved":
            ticket_id = int(delivery.ticket["id"])
            return bool(
                await asyncio.to_thread(
                    self._read_with, delivered_before, name, ticket_id, delivery.event_id
                )
            )
        return False

    async def _deliver_one(self, name: str, state: _RouteState, delivery: Delivery) -> bool:
        """Try one event; True when the route may go on to the next."""
        if delivery.event_id != state.head_event_id:
            state.head_event_id = delivery.event_id
            state.attempts = 0
            state.first_failure_at = None
        attempts = state.attempts + 1
        try:
            wanted = await self._wanted(name, state, delivery)
            if wanted:
                await state.sink.deliver(delivery)
        except DeliveryFailed as exc:
            self.metrics.deliveries.labels(name, "retry" if exc.retryable else "failed").inc()
            if exc.retryable:
                return await self._failed(
                    name, state, delivery, str(exc), exc.retry_after, counts=not exc.unreachable
                )
            log.error(
                "delivery refused for good, skipping the event",
                extra={"route": name, "key": delivery.idempotency_key, "error": str(exc)},
            )
            await self._record(name, delivery, "failed", attempts, str(exc)[:ERROR_MAX])
            self._reset(state)
            return True
        except (asyncio.CancelledError, SQLAlchemyError, StoreUnavailable):
            raise  # the store's trouble, not this event's: the supervisor handles it
        except Exception as exc:
            # A sink or its rendering cannot handle this one event (a bug, or a value no
            # receiver format can hold): it must not stop the route nor any other.
            self.metrics.delivery_errors.labels(name).inc()
            self.metrics.deliveries.labels(name, "retry").inc()
            log.exception(
                "delivery raised, will retry then park the event",
                extra={"route": name, "key": delivery.idempotency_key},
            )
            return await self._failed(
                name, state, delivery, f"{type(exc).__name__}: {exc}", None, counts=True
            )
        if not wanted:
            await self._record(name, delivery, "skipped", 0)
            return True
        await self._record(name, delivery, "delivered", attempts)
        self.metrics.deliveries.labels(name, "delivered").inc()
        if state.attempts:
            log.info("delivery recovered", extra={"route": name, "after_attempts": state.attempts})
        self._reset(state)
        return True

    def _reset(self, state: _RouteState) -> None:
        state.attempts = 0
        state.first_failure_at = None
        state.backoff.reset()
        state.last_error = ""

    async def _failed(
        self,
        name: str,
        state: _RouteState,
        delivery: Delivery,
        error: str,
        retry_after: float | None,
        *,
        counts: bool,
    ) -> bool:
        """Back off, or park the event when it has failed long enough; True to go on."""
        now = self.clock()
        if counts:
            state.attempts += 1
            if state.first_failure_at is None:
                state.first_failure_at = now
            spent = now - state.first_failure_at
            if state.attempts >= self.max_attempts or spent >= self.park_after:
                await self._write(
                    lambda c: park(c, name, delivery.event_id, state.attempts, now, error)
                )
                self.metrics.delivery_parked.labels(name).inc()
                log.error(
                    "delivery parked after repeated failures; the route goes on",
                    extra={
                        "route": name,
                        "key": delivery.idempotency_key,
                        "event_id": delivery.event_id,
                        "attempts": state.attempts,
                        "error": error[:ERROR_MAX],
                    },
                )
                self._reset(state)
                return True
        self._back_off(name, state, error, retry_after)
        return False

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
        except (asyncio.CancelledError, StoreUnavailable):
            raise
        except Exception:
            # One open ticket the sink cannot render must not stop the route's events.
            self.metrics.delivery_errors.labels(name).inc()
            log.exception("Alertmanager resync raised; events still go out", extra={"route": name})
        state.next_resync = self.clock() + sink.resend_interval
        return True

    def _back_off(
        self, name: str, state: _RouteState, error: str, retry_after: float | None
    ) -> None:
        delay = state.backoff.next()
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max))
        state.next_attempt = self.clock() + delay
        state.last_error = error
        log.warning(
            "delivery failed, will retry",
            extra={
                "route": name,
                "attempt": state.attempts,
                "in_seconds": round(delay, 1),
                "error": error[:ERROR_MAX],
            },
        )

    def _read(self, name: str, first_event_id: int) -> list[Delivery]:
        with self.store.read() as conn:
            return pending(conn, name, first_event_id)

    def _read_with(self, work: Callable[..., Any], *args: Any) -> Any:
        with self.store.read() as conn:
            return work(conn, *args)

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
