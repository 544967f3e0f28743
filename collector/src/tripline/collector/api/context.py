"""What every handler gets: the store, the pipeline and the clock, and how it reads and
writes through them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Connection

from tripline.collector.pipeline import Pipeline
from tripline.collector.store import Store

T = TypeVar("T")


@dataclass(frozen=True)
class ApiContext:
    store: Store
    pipeline: Pipeline
    clock: Callable[[], float] = time.time

    async def read(self, work: Callable[[Connection], T]) -> T:
        """`work` on a read connection, in a worker thread (the event loop never blocks)."""

        def run() -> T:
            with self.store.read() as conn:
                return work(conn)

        return await asyncio.to_thread(run)

    async def write(self, work: Callable[[Connection], T]) -> T:
        """`work` in one transaction through the collector's committer."""
        return await self.pipeline.committer.submit(work)
