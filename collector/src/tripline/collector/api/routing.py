"""Routes declared once: method, path, parameters, body and answer in one `Operation`.

The handler reads its input only through the declaration (`Call.query`, `Call.path`,
`Call.body`), and `api.openapi` writes the document from the same declarations, so a
limit lives in one place. A resource module lists its operations in ``OPERATIONS`` and
the answer shapes they name in ``SCHEMAS``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tripline.collector.api.auth import caller
from tripline.collector.api.body import Body, read_json
from tripline.collector.api.context import ApiContext
from tripline.collector.api.errors import ApiError
from tripline.collector.api.params import Param, parse_query
from tripline.collector.apitokens import ApiToken


@dataclass
class Call:
    """One authenticated request to an operation; its query already parsed."""

    ctx: ApiContext
    request: Request
    token: ApiToken
    query: dict[str, Any]
    operation: Operation

    def path(self, name: str) -> Any:
        """The path parameter `name`, parsed by its declaration (400 when bad)."""
        for param in self.operation.path_params:
            if param.name == name:
                return param.parse(self.request.path_params[name], self.token)
        raise LookupError(f"{self.operation.operation_id} declares no path parameter {name!r}")

    async def body(self) -> dict[str, Any]:
        """The body's fields, each checked by the declaration (400/413 when bad)."""
        if self.operation.body is None:
            raise LookupError(f"{self.operation.operation_id} declares no body")
        return self.operation.body.parse(await read_json(self.request))


Handler = Callable[[Call], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    """One route: what it takes and answers (for the document) and the handler that serves
    it. `errors` are the statuses it may answer beyond 400, 401, 413 (with a body) and 503.
    """

    method: str
    path: str
    operation_id: str
    summary: str
    answer: dict[str, Any]
    handler: Handler
    status: int = 200
    query: tuple[Param, ...] = ()
    path_params: tuple[Param, ...] = ()
    body: Body | None = None
    errors: tuple[int, ...] = ()
    # media types the answer may come in besides JSON (a report's text/html, text/csv)
    media: tuple[str, ...] = ()
    # counts a refused request (any ApiError: auth, a bad parameter, the handler's own)
    refused: Callable[[ApiContext], None] | None = None

    def route(self, ctx: ApiContext) -> Route:
        """The Starlette route serving this operation with `ctx`."""

        async def endpoint(request: Request) -> Response:
            try:
                token = await caller(ctx, request)
                query = parse_query(request, self.query, token)
                return await self.handler(Call(ctx, request, token, query, self))
            except ApiError:
                if self.refused is not None:
                    self.refused(ctx)
                raise

        return Route(self.path, endpoint, methods=[self.method], name=self.operation_id)


def operation(
    method: str,
    path: str,
    operation_id: str,
    summary: str,
    answer: dict[str, Any],
    *,
    status: int = 200,
    query: Sequence[Param] = (),
    path_params: Sequence[Param] = (),
    body: Body | None = None,
    errors: Sequence[int] = (),
    media: Sequence[str] = (),
    refused: Callable[[ApiContext], None] | None = None,
) -> Callable[[Handler], Operation]:
    """Declare the decorated handler as an `Operation`."""
    declared = {p.name for p in path_params}
    named = {part[1:-1] for part in path.split("/") if part.startswith("{")}
    if declared != named:
        raise ValueError(f"{operation_id}: path {path} names {named}, declares {declared}")

    def wrap(handler: Handler) -> Operation:
        return Operation(
            method=method,
            path=path,
            operation_id=operation_id,
            summary=summary,
            answer=answer,
            handler=handler,
            status=status,
            query=tuple(query),
            path_params=tuple(path_params),
            body=body,
            errors=tuple(errors),
            media=tuple(media),
            refused=refused,
        )

    return wrap
