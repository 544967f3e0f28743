"""The API's errors: `ApiError` and how every failure becomes ``{"error": "..."}``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from tripline.collector import delivery_parking, maintenance, ticketmodel
from tripline.collector.agents_store import AgentNotFound
from tripline.collector.api.encoding import Json
from tripline.collector.enrollment import EnrollmentTokenNotFound
from tripline.collector.store import StoreUnavailable
from tripline.collector.urls import API_PREFIX  # re-exported: the API's home for it

# What each error status means to a caller; the OpenAPI document lists them per route.
ERROR_TEXT = {
    400: "Bad input: the error says which parameter or field and why.",
    401: "No API token, or an unknown or revoked one.",
    403: "The request names a customer outside the token's scope.",
    404: "No such object, or it belongs to a customer outside the token's scope.",
    409: "The ticket is not in a state that allows this change.",
    413: "The request body is too large.",
    429: "Asked again too soon; retry after the Retry-After seconds.",
    504: "The agent has no open stream to this collector, or did not answer in time.",
    503: "The store is unavailable; retry after the Retry-After seconds.",
}


class ApiError(Exception):
    """Answered as ``{"error": message}`` with this status."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Json({"error": message}, status_code=status, headers=headers)


async def unrouted(request: Request, exc: Exception) -> Response:
    """404 for the app the API is mounted in: JSON under API_PREFIX, else plain text."""
    if request.url.path.startswith(API_PREFIX + "/"):
        return error(404, f"no such API path: {request.method} {request.url.path}")
    return PlainTextResponse("Not Found", status_code=404)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error(exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such API path", 405: "method not allowed here"}.get(
        exc.status_code, exc.detail
    )
    return error(exc.status_code, f"{message}: {request.method} {request.url.path}", exc.headers)


async def _not_found(request: Request, exc: Exception) -> Response:
    return error(404, str(exc))


async def _bad_input(request: Request, exc: Exception) -> Response:
    return error(400, str(exc))


async def _conflict(request: Request, exc: Exception) -> Response:
    return error(409, str(exc))


async def _unavailable(request: Request, exc: Exception) -> Response:
    return error(503, "the store is unavailable; retry later", {"Retry-After": "5"})


Handler = Callable[[Request, Exception], Coroutine[Any, Any, Response]]

# The domain's named exceptions, each answered with its status (see ERROR_TEXT).
EXCEPTION_HANDLERS: dict[Any, Handler] = {
    ApiError: _api_error,
    HTTPException: _http_error,
    ticketmodel.TicketNotFound: _not_found,
    AgentNotFound: _not_found,
    EnrollmentTokenNotFound: _not_found,
    maintenance.WindowNotFound: _not_found,
    delivery_parking.ParkedEventNotFound: _not_found,
    maintenance.InvalidWindow: _bad_input,
    ticketmodel.InvalidTicketTransition: _conflict,
    StoreUnavailable: _unavailable,
}
