"""HTTP side of the collector: /metrics for Prometheus, /healthz, /readyz, the API.

Served by uvicorn in the collector's own asyncio loop, so a scrape reads live state
without locks or threads.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from collector.api import API_PREFIX, ApiContext, build_api, unrouted


def build_app(
    registry: CollectorRegistry,
    ready: Callable[[], tuple[bool, str]],
    agent_series: Callable[[], bytes] = lambda: b"",
    api: ApiContext | None = None,
) -> Starlette:
    async def metrics(request: Request) -> Response:
        # agents' series are prepared as reports arrive; the registry holds our own
        return Response(agent_series() + generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        ok, reason = ready()
        return PlainTextResponse(f"{reason}\n", status_code=200 if ok else 503)

    routes: list[Route | Mount] = [
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
    ]
    if api is not None:
        routes.append(Mount(API_PREFIX, app=build_api(api)))
        # a path the mount cannot match (a newline in it) still gets the API's JSON 404
        return Starlette(routes=routes, exception_handlers={404: unrouted})
    return Starlette(routes=routes)
