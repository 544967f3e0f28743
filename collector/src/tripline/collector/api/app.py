"""`build_api`: the resource modules' declared routes as one Starlette app, and
openapi.json written from the same declarations."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tripline.collector.api import (
    agents,
    deliveries,
    enrollment,
    openapi,
    reports,
    rules,
    snapshots,
    tickets,
    windows,
)
from tripline.collector.api.context import ApiContext
from tripline.collector.api.encoding import Json
from tripline.collector.api.errors import EXCEPTION_HANDLERS
from tripline.collector.api.routing import Operation


class Resource(Protocol):
    """A module of routes: its operations, and the answers' shapes they name (by `ref`)."""

    @property
    def OPERATIONS(self) -> Sequence[Operation]: ...

    @property
    def SCHEMAS(self) -> Mapping[str, Any]: ...


# A new resource is one more module here (say api_snapshots.py declaring OPERATIONS and
# SCHEMAS with `routing.operation`); its routes and its part of openapi.json follow.
RESOURCES: tuple[Resource, ...] = (
    tickets,
    agents,
    enrollment,
    rules,
    windows,
    deliveries,
    reports,
    snapshots,
)


def operations() -> Iterator[Operation]:
    for module in RESOURCES:
        yield from module.OPERATIONS


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of every route `build_api` serves (but itself)."""
    schemas: dict[str, Any] = {}
    for module in RESOURCES:
        clash = set(schemas) & set(module.SCHEMAS)
        if clash:
            raise ValueError(f"schemas declared twice: {sorted(clash)}")
        schemas.update(module.SCHEMAS)
    return openapi.document(operations(), schemas)


def build_api(ctx: ApiContext) -> Starlette:
    """The API as an app to mount at API_PREFIX."""
    document = openapi_document()

    async def serve_document(request: Request) -> Response:
        return Json(document)

    routes: list[BaseRoute] = [Route("/openapi.json", serve_document)]
    routes.extend(op.route(ctx) for op in operations())
    return Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
