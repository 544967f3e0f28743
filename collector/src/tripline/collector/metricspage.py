"""The /metrics body, rendered off the event loop that applies reports, gzip on request.

Agents' series are prepared per agent as reports arrive (:mod:`.exposition`); what is
left per scrape is joining those pieces (tens of MB for thousands of agents) and, for
Prometheus, compressing them. Both run in a worker thread, so the event loop keeps
reading reports and writing acks meanwhile: the thread shares the GIL with it in short
slices, and zlib releases the GIL while it compresses. The thread reads the live maps
without locks: they are only ever replaced by reference or changed one key at a time
by the loop, and the renderer snapshots them first (see
:meth:`.exposition.SeriesExposition.render`).

Scrapes that arrive while a render runs share its page rather than queueing renders of
their own, so a burst of scrapes (or a hostile client) costs one render at a time; such
a page is at most one render old.
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Callable

# Fast and still about 10x smaller for this text; a 50 MB page compresses in a fraction
# of a second where level 9 (gzip's default) takes seconds.
GZIP_LEVEL = 1


class Page:
    """One rendered body; its gzip form is made on first request and kept."""

    def __init__(self, plain: bytes) -> None:
        self.plain = plain
        self._gzipped: bytes | None = None
        self._lock = threading.Lock()

    def gzipped(self) -> bytes:
        """The body gzip-compressed (blocking: call it in a thread)."""
        with self._lock:
            if self._gzipped is None:
                self._gzipped = gzip.compress(self.plain, compresslevel=GZIP_LEVEL, mtime=0)
            return self._gzipped


class MetricsPage:
    """Renders ``render()`` in a thread, one render at a time, shared by the scrapes
    waiting for it."""

    def __init__(self, render: Callable[[], bytes]) -> None:
        self._render = render
        self._inflight: asyncio.Future[Page] | None = None
        self.renders = 0  # renders started
        self.waiting = 0  # scrapes waiting for a render now

    async def page(self) -> Page:
        inflight = self._inflight
        if inflight is None:
            inflight = self._inflight = asyncio.ensure_future(self._make())
            inflight.add_done_callback(self._done)
        self.waiting += 1
        try:
            # shield: a scrape whose client goes away must not cancel the render others share
            return await asyncio.shield(inflight)
        finally:
            self.waiting -= 1

    async def body(self, accept_encoding: str) -> tuple[bytes, bool]:
        """The body for a request with this Accept-Encoding; True when it is gzip."""
        page = await self.page()
        if accepts_gzip(accept_encoding):
            return await asyncio.to_thread(page.gzipped), True
        return page.plain, False

    async def _make(self) -> Page:
        self.renders += 1
        return Page(await asyncio.to_thread(self._render))

    def _done(self, future: asyncio.Future[Page]) -> None:
        if self._inflight is future:
            self._inflight = None


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding value accepts gzip: ``gzip`` (or ``x-gzip``, or else
    ``*``) listed with a weight above zero. A malformed weight counts as zero."""
    weights: dict[str, float] = {}
    for item in header.split(","):
        coding, *params = item.split(";")
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 0.0
        weights[coding.strip().lower()] = weight
    for coding in ("gzip", "x-gzip", "*"):
        if coding in weights:
            return weights[coding] > 0
    return False
