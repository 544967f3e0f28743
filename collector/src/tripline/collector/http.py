"""HTTP side of the collector: /metrics for Prometheus, /healthz, /readyz, the API, the
operator's ticket page (/ui).

Served by uvicorn in the collector's own asyncio loop. /metrics is rendered and
compressed in a worker thread (:mod:`.metricspage`), so a scrape never holds the loop
that applies reports.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import h11
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from tripline.collector.api import API_PREFIX, ApiContext, build_api, unrouted
from tripline.collector.metricspage import MetricsPage
from tripline.collector.web import WEB_PREFIX, build_web


def build_app(
    registry: CollectorRegistry,
    ready: Callable[[], tuple[bool, str] | Awaitable[tuple[bool, str]]],
    page: MetricsPage | None = None,
    api: ApiContext | None = None,
    web_refused: Callable[[str], None] = lambda reason: None,
    extra_routes: Sequence[Route] = (),
) -> Starlette:
    """``page`` renders /metrics (default: the registry alone); ``extra_routes``: a
    worker's private endpoints (collector.metricsmerge)."""
    if page is None:
        page = MetricsPage(lambda: generate_latest(registry))

    async def metrics(request: Request) -> Response:
        body, zipped = await page.body(request.headers.get("accept-encoding", ""))
        headers = {"Vary": "Accept-Encoding"}
        if zipped:
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers=headers)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        answer = ready()  # worker 0 of --workers asks the others (collector.workerready)
        ok, reason = answer if isinstance(answer, tuple) else await answer
        return PlainTextResponse(f"{reason}\n", status_code=200 if ok else 503)

    routes: list[Route | Mount] = [
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        *extra_routes,
    ]
    if api is not None:
        api_app = build_api(api)
        routes.append(Mount(API_PREFIX, app=api_app))
        # the ticket page answers through the same API app, with the operator's token
        routes.append(Mount(WEB_PREFIX, app=build_web(api_app, web_refused)))
        # a path the mount cannot match (a newline in it) still gets the API's JSON 404
        return Starlette(routes=routes, exception_handlers={404: unrouted})
    return Starlette(routes=routes)


@dataclass(frozen=True)
class HttpLimits:
    """What one HTTP client may hold of the port (config keys ``http_*``)."""

    max_connections: int = 256
    header_timeout: float = 10.0
    body_timeout: float = 30.0


def _plain_response(status: str, body: str, *extra: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, written without the app."""
    data = body.encode()
    head = [f"HTTP/1.1 {status}", "content-type: text/plain; charset=utf-8"]
    head += [*extra, "connection: close", f"content-length: {len(data)}", "", ""]
    return "\r\n".join(head).encode() + data


_FULL = _plain_response(
    "503 Service Unavailable", "too many open HTTP connections; retry soon\n", "retry-after: 1"
)
_TIMEOUT = _plain_response("408 Request Timeout", "request head not received in time\n")
# how long an answered connection keeps discarding a body it will not read
LINGER_SECONDS = 2.0
# the request is read whole (its body too): a timer has nothing left to guard
_READ_DONE = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)


def guarded_protocol(limits: HttpLimits, closed: Callable[[str], None]) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with what it lacks against hostile clients.

    uvicorn times out only the idle gap after a response (``timeout_keep_alive``): a
    client that connects and sends nothing, or sends its headers a byte at a time, holds
    a descriptor for ever, and ``limit_concurrency`` answers 503 only to clients that
    send a request. Here a connection must deliver its request head within
    ``header_timeout`` (of connecting or of the previous response) and its body within
    ``body_timeout`` of the head, or it is closed. At ``max_connections`` a newcomer
    closes the connection that has waited longest without sending a request; when every
    connection is busy it gets 503 and is closed at once. ``closed(reason)`` is called
    for each (for a counter).
    """

    class GuardedH11Protocol(H11Protocol):
        _refused = False
        _lingering = False
        _timer: asyncio.TimerHandle | None = None
        _waiting_since = 0.0

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= limits.max_connections and not self._evict_idle():
                self._refused = True
                closed("full")
                transport.write(_FULL)
                transport.close()
                return
            super().connection_made(transport)
            self._expect_head()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._lingering:  # only the close timer is left to run
                return
            state = self.conn.their_state
            if state is h11.SEND_BODY and self._timer is not None and self._waiting_since:
                self._waiting_since = 0.0
                self._arm(limits.body_timeout, "body_timeout")
            elif state in _READ_DONE:
                self._waiting_since = 0.0
                self._cancel()

        def on_response_complete(self) -> None:
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                # Answered before the body was read (413): reading the rest only to discard
                # it would let a client stream for ever, so the connection ends. Lingering
                # close, as nginx does: FIN after the answer, discard what still arrives
                # for a moment, then close; closing at once with unread bytes sends a
                # reset that can destroy the answer before the client reads it.
                self._cancel()
                self._lingering = True
                if self.transport.can_write_eof():
                    self.transport.write_eof()
                    self._timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)
                else:
                    self.transport.close()
                return
            super().on_response_complete()
            if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
                self._expect_head()

        def _expect_head(self) -> None:
            self._waiting_since = time.monotonic()
            self._arm(limits.header_timeout, "header_timeout")

        def _arm(self, delay: float, reason: str) -> None:
            self._cancel()
            self._timer = self.loop.call_later(delay, self._expire, reason)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expire(self, reason: str) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            closed(reason)
            if reason == "header_timeout" and self.conn.our_state is h11.IDLE:
                self.transport.write(_TIMEOUT)
            self.transport.close()

        def _evict_idle(self) -> bool:
            """Close the connection waiting longest for a request head; False if none."""
            idle = [
                c
                for c in self.connections
                if isinstance(c, GuardedH11Protocol)
                and c._waiting_since
                and not c.transport.is_closing()
            ]
            if not idle:
                return False
            oldest = min(idle, key=lambda c: c._waiting_since)
            closed("evicted_idle")
            oldest._cancel()
            oldest.transport.close()
            # its connection_lost comes later; it must not count against the newcomer
            self.connections.discard(oldest)
            return True

    return GuardedH11Protocol
