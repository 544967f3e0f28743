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
    ) -> None:
        """``window``: seconds a batch gathers after its first unit (0: commit what is
        queued at once, as soon as the previous batch is done)."""
        self._store = store
        self._metrics = metrics
        self._max_batch = max_batch
        self._window = window
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
        while True:
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
            self._metrics.commit_batch_units.observe(len(batch))
            for unit, (ok, value) in zip(batch, results, strict=True):
                if unit.future.done():
                    continue
                if ok:
                    unit.future.set_result(value)
                else:
                    unit.future.set_exception(value)

    def _commit(self, batch: list[_Unit[Any]]) -> list[tuple[bool, Any]]:
        """All units in one transaction; if any unit fails, each again in its own.

        A unit failing is rare (a seq another collector applied first, a bug), so the
        common path pays for no savepoints; the fallback isolates the failure so it
        rolls back alone and the others still commit.
        """
        try:
            with self._store.transaction() as conn:
                return [(True, unit.work(conn)) for unit in batch]
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
