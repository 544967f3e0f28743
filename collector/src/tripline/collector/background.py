"""The collector's timed loops: rule evaluation (with the store probe) and ticket counts.

Each loop must survive anything: an expected outage (StoreUnavailable) is logged at
debug level (store health reports it), anything else is logged with its traceback and
counted, and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import Counter

from tripline.collector.config import CollectorConfig
from tripline.collector.pipeline import Pipeline
from tripline.collector.readiness import Readiness
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.store import StoreUnavailable
from tripline.collector.ticketcounts import TicketCounts

log = logging.getLogger(__name__)


async def _survive(
    step: Callable[[], Awaitable[object]], failures: Counter, *, skipped: str, failed: str
) -> None:
    """One step of a timed loop. A store outage is logged at debug as ``skipped`` (store
    health reports it: the store logs each transition once and the committer counts
    failures); anything else is logged with its traceback as ``failed`` and counted in
    ``failures``, and the loop goes on."""
    try:
        await step()
    except asyncio.CancelledError:
        raise
    except StoreUnavailable as exc:
        log.debug(skipped, extra={"error": str(exc)})
    except Exception:
        failures.inc()
        log.exception(failed)


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
        await _survive(
            pipeline.tick,
            metrics.evaluation_errors,
            skipped="evaluation tick skipped: store unavailable",
            failed="evaluation tick failed",
        )
        await readiness.after_tick(clock())


async def count_tickets(
    ticket_counts: TicketCounts,
    metrics: CollectorMetrics,
    config: CollectorConfig,
    clock: Callable[[], float],
) -> None:
    """Keep the ticket counts /metrics shows current, off the loop (collector.ticketcounts);
    when a refresh fails the old counts stay."""
    while True:
        await asyncio.sleep(config.evaluation_interval)
        await _survive(
            lambda: asyncio.to_thread(ticket_counts.refresh, clock()),
            metrics.ticket_count_errors,
            skipped="ticket counts not refreshed",
            failed="ticket count refresh failed",
        )
