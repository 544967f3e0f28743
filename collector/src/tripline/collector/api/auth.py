"""Who calls: the API token in ``Authorization: Bearer``, and what its scope allows."""

from __future__ import annotations

from starlette.requests import Request

from tripline.collector import apitokens
from tripline.collector.api.context import ApiContext
from tripline.collector.api.errors import ApiError
from tripline.collector.apitokens import ApiToken

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tripline"'}


async def caller(ctx: ApiContext, request: Request) -> ApiToken:
    """The request's API token; 401 when it sends none, or an unknown or revoked one."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(
            401,
            "send 'Authorization: Bearer <API token>' (an operator creates one with "
            "'tripline api-tokens create --name NAME')",
            _CHALLENGE,
        )
    token = await ctx.read(lambda conn: apitokens.authenticate(conn, secret.strip()))
    if token is None:
        raise ApiError(401, "the API token is unknown or revoked", _CHALLENGE)
    return token


def act_for(token: ApiToken, customer: str) -> None:
    """403 unless the token may create or change objects of `customer`."""
    if not token.allows(customer):
        raise ApiError(403, f"this API token may not act for customer {customer!r}")


def scope(token: ApiToken, customer: str | None) -> tuple[str, ...] | None:
    """The customers a listing covers: the filter's one, else all the token sees
    (None: every customer)."""
    return token.customers if customer is None else (customer,)
