"""The collector's timed loops: rule evaluation (with the store probe) and ticket counts.

Each loop must survive anything: an expected outage (StoreUnavailable) is logged at
debug level (store health reports it), anything else is logged with its traceback and
counted, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tripline.collector.config import CollectorConfig
from tripline.collector.pipeline import Pipeline
from tripline.collector.readiness import Readiness
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.store import StoreUnavailable
from tripline.collector.ticketcounts import TicketCounts

log = logging.getLogger(__name__)


async def evaluation_ticker(
    pipeline: Pipeline,
    readiness: Readiness,
    metrics: CollectorMetrics,
    config: CollectorConfig,
    clock: Callable[[], float],
) -> None:
    """Every evaluation_interval: a pipeline tick, then store probe and gRPC health."""
    while True:
        await asyncio.sleep(config.evaluation_interval)
        try:
            await pipeline.tick()
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            # Expected while the store is locked or full: the health status says so,
            # the store logs the transition once and the committer counts failures.
            log.debug("evaluation tick skipped: store unavailable", extra={"error": str(exc)})
        except Exception:
            # The loop must survive anything; the failure is logged and counted.
            metrics.evaluation_errors.inc()
            log.exception("evaluation tick failed")
        await readiness.after_tick(clock())


async def count_tickets(
    ticket_counts: TicketCounts,
    metrics: CollectorMetrics,
    config: CollectorConfig,
    clock: Callable[[], float],
) -> None:
    """Keep the ticket counts /metrics shows current, off the loop (collector.ticketcounts)."""
    while True:
        await asyncio.sleep(config.evaluation_interval)
        try:
            await asyncio.to_thread(ticket_counts.refresh, clock())
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as exc:
            # the counts stay as they were; store health reports the outage
            log.debug("ticket counts not refreshed", extra={"error": str(exc)})
        except Exception:
            # The loop must survive anything; the old counts stay, the failure is
            # logged and counted.
            metrics.ticket_count_errors.inc()
            log.exception("ticket count refresh failed")
