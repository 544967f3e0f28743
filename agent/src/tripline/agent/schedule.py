"""The collection schedule: one job every ``interval`` seconds on the event loop.

It does what the agent asked of APScheduler (an interval job, at most one run at a time,
missed runs coalesced, the interval changed when the collector says so) without its
imports: APScheduler 3 loads importlib.metadata, email, zipfile, multiprocessing, tzlocal
and more, about 4 MiB of the agent's memory for one timer (bench/README.md).

Runs stay on a grid (start + k x interval), as an interval trigger's do: a run that
overruns the next grid point, or a loop that was held up, runs once and then waits for
the next grid point after now, never for every point it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def next_run(planned: float, now: float, interval: float) -> float:
    """The grid point after ``planned`` that is not in the past at ``now``."""
    following = planned + interval
    if following >= now:
        return following
    return following + math.ceil((now - following) / interval) * interval


class IntervalSchedule:
    """Awaits ``job`` now and then every ``interval`` seconds until stopped."""

    def __init__(self, job: Callable[[], Awaitable[None]], interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self._job = job
        self.interval = interval
        self._changed = asyncio.Event()

    def reschedule(self, interval: float) -> None:
        """The next run ``interval`` seconds from now, and every ``interval`` after."""
        if not interval > 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.interval = interval
        self._changed.set()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        planned = loop.time()
        while not stop.is_set():
            delay = planned - loop.time()
            if delay > 0:
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait(stop), delay)
                if self._changed.is_set():
                    planned = loop.time() + self.interval
                continue
            try:
                await self._job()
            except Exception:
                # A run that fails (a full disk under the spool) must not end the
                # schedule: the next one may succeed. Probe failures are counted by
                # the prober; this is what is left, logged with its traceback.
                log.exception("collection failed")
            planned = next_run(planned, loop.time(), self.interval)

    async def _wait(self, stop: asyncio.Event) -> None:
        waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._changed.wait())}
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
