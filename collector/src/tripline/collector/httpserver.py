"""uvicorn inside the collector's own asyncio loop, serving the Starlette app (collector.http)
with the HTTP port's limits."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette

from tripline.collector.config import CollectorConfig
from tripline.collector.http import HttpLimits, guarded_protocol


class EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our loop: the collector owns signal handling, not uvicorn."""

    def install_signal_handlers(self) -> None:
        pass

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


def embedded_uvicorn(
    app: Starlette,
    host: str,
    port: int,
    config: CollectorConfig,
    on_closed: Callable[[str], None],
) -> EmbeddedUvicorn:
    """The server, not started; ``on_closed(why)`` counts a connection the limits closed."""
    http_limits = HttpLimits(
        max_connections=config.http_max_connections,
        header_timeout=config.http_header_timeout,
        body_timeout=config.http_body_timeout,
    )
    return EmbeddedUvicorn(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            http=guarded_protocol(http_limits, on_closed),
            timeout_keep_alive=max(1, math.ceil(config.http_keepalive_timeout)),
        )
    )


async def bound_port(server: uvicorn.Server, serving: asyncio.Task[None]) -> int:
    """Wait until ``server`` (run by the task ``serving``) listens; its port. A failed bind
    is raised here."""
    while not server.started:
        if serving.done():
            serving.result()  # raises the bind error
        await asyncio.sleep(0.01)
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return port
