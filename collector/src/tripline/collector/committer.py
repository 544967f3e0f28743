"""Group commit: many reports' effects in one store transaction.

Submitted units of work run in one shared transaction; when one fails, the batch is
retried unit by unit so the failure rolls back alone while the others commit. Callers
await their own result; a report is acknowledged only after the transaction holding its
effects commits.

A batch gathers for ``window`` seconds after its first unit (a tick) before it commits.
Without it a collector at a few hundred reports/s commits nearly every report alone: the
commit returns before the next report arrives, so each pays a thread hand-off, a
connection checkout, BEGIN/COMMIT and the store-file checks of its own (about a fifth of
the collector's CPU per report in the profile, bench/README.md). With a tick the reports
of many streams that arrive together share one transaction, and each stream's Ack waits
at most one tick longer: still only after the commit that made it durable.

A batch that waited past the busy timeout on a lock other writers kept committing under
(`StoreContended`: the other workers of ``--workers N`` at saturation) is retried, with
whatever arrived meanwhile: contention slows acknowledgements, it does not fail them
(failing them would end every waiting stream, and the agents would reconnect and resend
into the same contention).

A transaction holds the write lock for at most about ``max_hold`` seconds of unit work:
the units left when it runs out commit in the next transaction, first in line. Without
the bound a saturated collector's batch (hundreds of reports, each doing more on a
fleet's first report after a start) could hold the lock for seconds on a starved
thread, and another worker's BEGIN would wait out its busy timeout while nothing
committed: an outage by every sign SQLite gives, so that worker would fail its batch and
end its streams, and the agents' reconnects would add TLS handshakes to the overload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.store import Store, StoreContended, StoreUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

# A quarter of a second: far above one batch's work in steady state (a few ms), far
# below the 5 s busy timeout another writer waits, which so sees the lock change hands.
MAX_HOLD = 0.25


@dataclass
class _Unit(Generic[T]):
    work: Callable[[Connection], T]
    future: asyncio.Future[T] = field(repr=False)


class Committer:
    def __init__(
        self,
        store: Store,
        metrics: CollectorMetrics,
        max_batch: int = 500,
        window: float = 0.0,
        max_hold: float = MAX_HOLD,
    ) -> None:
        """``window``: seconds a batch gathers after its first unit (0: commit what is
        queued at once, as soon as the previous batch is done). ``max_hold``: seconds of
        unit work after which a transaction commits what it has done (at least one unit)."""
        self._store = store
        self._metrics = metrics
        self._max_batch = max_batch
        self._window = window
        self._max_hold = max_hold
        self._queue: asyncio.Queue[_Unit[Any]] = asyncio.Queue()

    @property
    def healthy(self) -> bool:
        """The store's health (`Store.health`): a commit that wrote rows makes it true, a
        failed one false; empty commits leave it as it was."""
        return self._store.health.healthy

    async def submit(self, work: Callable[[Connection], T]) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Unit(work, future))
        return await future

    async def run(self) -> None:
        carried: list[_Unit[Any]] = []  # units the last transaction had no time for
        while True:
            if carried:
                batch, carried = carried, []
            else:
                batch = [await self._queue.get()]
                if self._window > 0 and self._queue.qsize() < self._max_batch - 1:
                    await asyncio.sleep(self._window)
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            batch = [unit for unit in batch if not unit.future.cancelled()]
            if not batch:
                continue
            started = time.perf_counter()
            try:
                while True:
                    try:
                        results = await asyncio.to_thread(self._commit, batch)
                        break
                    except StoreContended as exc:
                        self._metrics.store_contended.inc()
                        log.debug("write lock contended, batch retried", extra={"error": str(exc)})
                        batch = [unit for unit in batch if not unit.future.cancelled()]
                        while len(batch) < self._max_batch and not self._queue.empty():
                            batch.append(self._queue.get_nowait())
            except StoreUnavailable as exc:
                self._metrics.store_errors.inc()
                # The store logs each healthy/unhealthy transition once; a line per failed
                # batch would repeat it several times a second for the whole outage.
                log.debug("store unavailable, batch not committed", extra={"error": str(exc)})
                for unit in batch:
                    if not unit.future.done():
                        unit.future.set_exception(exc)
                continue
            self._metrics.commit_seconds.observe(time.perf_counter() - started)
            self._metrics.commit_batch_units.observe(len(results))
            carried = batch[len(results) :]
            for unit, (ok, value) in zip(batch, results, strict=False):
                if unit.future.done():
                    continue
                if ok:
                    unit.future.set_result(value)
                else:
                    unit.future.set_exception(value)

    def _commit(self, batch: list[_Unit[Any]]) -> list[tuple[bool, Any]]:
        """The units in one transaction, as many as fit in ``max_hold`` (at least one);
        the results of the units done, in order. If any unit fails, each again in its own.

        A unit failing is rare (a seq another collector applied first, a bug), so the
        common path pays for no savepoints; the fallback isolates the failure so it
        rolls back alone and the others still commit.
        """
        try:
            with self._store.transaction() as conn:
                # timed from BEGIN: the wait for the lock is not holding it
                until = time.perf_counter() + self._max_hold
                results: list[tuple[bool, Any]] = []
                for unit in batch:
                    results.append((True, unit.work(conn)))
                    if time.perf_counter() >= until:
                        break
                return results
        except StoreUnavailable:
            raise
        except Exception:  # find which unit failed: retried alone below
            if len(batch) == 1:
                return [self._alone(batch[0])]
        return [self._alone(unit) for unit in batch]

    def _alone(self, unit: _Unit[Any]) -> tuple[bool, Any]:
        while True:
            try:
                with self._store.transaction() as conn:
                    return True, unit.work(conn)
            except StoreContended:
                # Retried here, not with the batch: the units before this one committed.
                self._metrics.store_contended.inc()
            except StoreUnavailable:
                raise
            except Exception as exc:  # the caller's future gets it
                return False, exc
