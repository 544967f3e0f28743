"""Whether the collector serves: gRPC health, /readyz, and the store probe behind both.

Until ``started``, /readyz says "starting" and gRPC health NOT_SERVING. gRPC health
follows the store's health (Store.health) as soon as a transaction changes it, not at
the next tick; while the store refuses writes, a probe row is written every
STORE_PROBE_INTERVAL so health comes back even when no report arrives to show it.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2

from tripline.collector.delivery import Deliverer
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.store import Store, StoreUnavailable

SERVICE_NAME = "tripline.v1.Collector"

# While the store refuses writes, a probe row is written this often (seconds), so health
# comes back even when no report arrives to show the store takes writes again.
STORE_PROBE_INTERVAL = 2.0


class Readiness:
    def __init__(self, store: Store, metrics: CollectorMetrics) -> None:
        self.store = store
        self.metrics = metrics
        # the gRPC health service, added to the server by the app
        self.servicer = health.aio.HealthServicer()
        # set once the gRPC server exists: store health changes reach gRPC health from then
        self.listening = False
        self.stopping = False
        self.started = False
        # set when routes are configured: a route that is down makes /readyz fail
        self.deliverer: Deliverer | None = None
        self._next_probe = 0.0
        self._health_tasks: set[asyncio.Future[None]] = set()

    async def probe_store(self, now: float) -> None:
        """Write the probe row; a success marks the store healthy (Store.health)."""
        self._next_probe = now + STORE_PROBE_INTERVAL
        try:
            await asyncio.to_thread(self.store.probe, now)
        except StoreUnavailable:
            self.metrics.store_probes.labels("failed").inc()
        else:
            self.metrics.store_probes.labels("ok").inc()
        self.metrics.store_healthy.set(1 if self.store.health.healthy else 0)

    async def after_tick(self, now: float) -> None:
        """After each evaluation tick: probe the store if it is down and a probe is due,
        then set gRPC health from the store's health."""
        if not self.store.health.healthy and now >= self._next_probe:
            await self.probe_store(now)
        await self.set_health(self.store.health.healthy)

    def store_health_changed(self, healthy: bool) -> None:
        """In the loop, right when a transaction changes the store's health: gRPC health
        follows at once rather than at the next tick."""
        self.metrics.store_healthy.set(1 if healthy else 0)
        self.metrics.store_health_changes.labels("healthy" if healthy else "unhealthy").inc()
        if self.listening and not self.stopping:
            # The state now, not `healthy`: several changes may be queued, the last one wins.
            task = asyncio.ensure_future(self.set_health(self.store.health.healthy))
            self._health_tasks.add(task)
            task.add_done_callback(self._health_tasks.discard)

    async def set_health(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.servicer.set("", status)
        await self.servicer.set(SERVICE_NAME, status)

    def ready(self) -> tuple[bool, str]:
        """/readyz: (ready, reason)."""
        if not self.started:
            return False, "starting"
        health = self.store.health
        if not health.healthy:
            return False, health.reason
        deliverer = self.deliverer
        if deliverer is not None and deliverer.problems():
            return False, "; ".join(deliverer.problems())
        return True, "ready"
