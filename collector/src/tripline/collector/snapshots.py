"""Asking agents for diagnostic snapshots over their open Connect streams.

The broker knows which agents have a stream on this collector (the servicer attaches a
sender per stream), keeps at most one request in flight per agent, spaces requests at
least ``min_interval`` apart, and matches answers to requests: an answer nobody asked
for is refused. It knows nothing of gRPC or the store; the pipeline stores what arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tripline.collector.selfmetrics import CollectorMetrics

log = logging.getLogger(__name__)

# A snapshot older than this is not offered to a ticket opening later, nor to an operator.
KEEP_LATEST = 600.0

Sender = Callable[[str], None]


class SnapshotUnavailable(Exception):
    """No snapshot can be had now. ``reason`` is "not_connected", "timeout" or
    "rate_limited"; ``retry_after`` is set for the latter."""

    def __init__(self, agent_id: str, reason: str, message: str, retry_after: float = 0.0):
        super().__init__(message)
        self.agent_id = agent_id
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class TakenSnapshot:
    agent_id: str
    request_id: str
    taken_at: float  # the collector's clock when it arrived
    data: dict[str, Any]


@dataclass
class _InFlight:
    request_id: str
    started: float  # monotonic
    reason: str
    future: asyncio.Future[TakenSnapshot] = field(repr=False)


class SnapshotBroker:
    def __init__(
        self,
        *,
        metrics: CollectorMetrics,
        min_interval: float = 60.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self.metrics = metrics
        self.min_interval = min_interval
        self.timeout = timeout
        self.clock = clock
        self.monotonic = monotonic
        self.new_id = new_id
        self._senders: dict[str, Sender] = {}
        self._in_flight: dict[str, _InFlight] = {}
        self._last_request: dict[str, float] = {}
        self._latest: dict[str, TakenSnapshot] = {}

    # -- streams ------------------------------------------------------------------------

    def attach(self, agent_id: str, send: Sender) -> None:
        """The agent's stream on this collector; a newer one replaces the older."""
        self._senders[agent_id] = send
        self._in_flight.pop(agent_id, None)  # asked on the old stream: never answered

    def detach(self, agent_id: str, send: Sender) -> None:
        if self._senders.get(agent_id) is send:
            del self._senders[agent_id]
            flight = self._in_flight.pop(agent_id, None)
            if flight is not None and not flight.future.done():
                flight.future.set_exception(
                    SnapshotUnavailable(agent_id, "not_connected", "the agent disconnected")
                )
                flight.future.exception()  # retrieved: nobody may be waiting for it

    def forget(self, agent_id: str) -> None:
        """A retired agent: drop everything held for it."""
        self._senders.pop(agent_id, None)
        self._in_flight.pop(agent_id, None)
        self._last_request.pop(agent_id, None)
        self._latest.pop(agent_id, None)

    def connected(self, agent_id: str) -> bool:
        return agent_id in self._senders

    # -- requests -----------------------------------------------------------------------

    def request(self, agent_id: str, reason: str) -> asyncio.Future[TakenSnapshot]:
        """Ask the agent unless a request is in flight (its future is returned) or one was
        made less than ``min_interval`` ago; raises SnapshotUnavailable."""
        now = self.monotonic()
        flight = self._in_flight.get(agent_id)
        if flight is not None and now - flight.started >= self.timeout:
            self._expire(agent_id, flight)
            flight = None
        if flight is not None:
            return flight.future
        send = self._senders.get(agent_id)
        if send is None:
            self.metrics.snapshots.labels("not_connected").inc()
            raise SnapshotUnavailable(
                agent_id, "not_connected", f"agent {agent_id} has no open stream to this collector"
            )
        last = self._last_request.get(agent_id)
        if last is not None and now - last < self.min_interval:
            self.metrics.snapshots.labels("rate_limited").inc()
            wait = self.min_interval - (now - last)
            raise SnapshotUnavailable(
                agent_id,
                "rate_limited",
                f"agent {agent_id} was asked for a snapshot {now - last:.0f}s ago; "
                f"snapshot_min_interval is {self.min_interval:g}s",
                retry_after=wait,
            )
        request_id = self.new_id()
        future: asyncio.Future[TakenSnapshot] = asyncio.get_running_loop().create_future()
        self._in_flight[agent_id] = _InFlight(request_id, now, reason, future)
        self._last_request[agent_id] = now
        send(request_id)
        self.metrics.snapshots.labels("requested").inc()
        log.info(
            "snapshot requested",
            extra={"agent_id": agent_id, "request_id": request_id, "reason": reason},
        )
        return future

    def want(self, agent_id: str, reason: str) -> None:
        """Ask if allowed now, else let it be (a rule going pending or firing)."""
        # counted when refused; a ticket without a fresh snapshot keeps the periodic context
        with contextlib.suppress(SnapshotUnavailable):
            self.request(agent_id, reason)

    async def ask(self, agent_id: str, wait: float) -> TakenSnapshot:
        """A snapshot for an operator: a fresh one, the one in flight, or (asked again
        within ``min_interval``) the latest; raises SnapshotUnavailable."""
        try:
            future = self.request(agent_id, "operator")
        except SnapshotUnavailable as exc:
            latest = self.latest(agent_id, within=self.min_interval)
            if exc.reason == "rate_limited" and latest is not None:
                return latest
            raise
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait)
        except TimeoutError:
            raise SnapshotUnavailable(
                agent_id,
                "timeout",
                f"agent {agent_id} did not answer within {wait:g}s (an agent older than "
                "snapshots never answers)",
            ) from None

    def receive(self, agent_id: str, request_id: str, data: dict[str, Any]) -> TakenSnapshot | None:
        """An answer from the agent's stream; None (counted) when nobody asked for it."""
        flight = self._in_flight.get(agent_id)
        if flight is None or flight.request_id != request_id:
            self.metrics.snapshots.labels("unsolicited").inc()
            log.warning(
                "snapshot refused: not asked for",
                extra={"agent_id": agent_id, "request_id": request_id},
            )
            return None
        del self._in_flight[agent_id]
        taken = TakenSnapshot(agent_id, request_id, self.clock(), data)
        self._latest[agent_id] = taken
        if not flight.future.done():
            flight.future.set_result(taken)
        self.metrics.snapshots.labels("answered").inc()
        log.info(
            "snapshot received",
            extra={
                "agent_id": agent_id,
                "request_id": request_id,
                "took_seconds": round(self.monotonic() - flight.started, 3),
            },
        )
        return taken

    def latest(
        self, agent_id: str, *, since: float = 0.0, within: float = KEEP_LATEST
    ) -> TakenSnapshot | None:
        """The last snapshot received from the agent, if taken at or after ``since`` and
        at most ``within`` seconds ago."""
        taken = self._latest.get(agent_id)
        if taken is None:
            return None
        if self.clock() - taken.taken_at > within:
            del self._latest[agent_id]
            return None
        return taken if taken.taken_at >= since else None

    def _expire(self, agent_id: str, flight: _InFlight) -> None:
        del self._in_flight[agent_id]
        self.metrics.snapshots.labels("timeout").inc()
        log.warning(
            "snapshot not answered",
            extra={"agent_id": agent_id, "request_id": flight.request_id},
        )
        if not flight.future.done():
            flight.future.set_exception(
                SnapshotUnavailable(agent_id, "timeout", "the agent did not answer")
            )
            flight.future.exception()
