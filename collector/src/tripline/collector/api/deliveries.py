"""/deliveries/parked: ticket events a route gave up on, and retrying one."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import Connection
from starlette.responses import Response

from tripline.collector import apitokens, delivery_parking
from tripline.collector.api.auth import scope
from tripline.collector.api.body import Body
from tripline.collector.api.encoding import Json
from tripline.collector.api.jsonschema import obj, page_of, ref
from tripline.collector.api.params import CUSTOMER, PAGING, Text, page, path_id
from tripline.collector.api.routing import Call, operation


def _route(where: Literal["query", "path"], description: str) -> Text:
    """A delivery route's name (the collector config's), as the filter or the path gives it."""
    return Text(
        name="route",
        where=where,
        min_length=1,
        max_length=128,
        empty="route must name a delivery route of the collector config",
        description=description,
    )


@operation(
    "GET",
    "/deliveries/parked",
    "listParkedDeliveries",
    "Ticket events a route gave up on after its retries, oldest first",
    ref("ParkedDeliveryPage"),
    query=(*PAGING, _route("query", ""), CUSTOMER),
    errors=(403,),
)
async def list_parked(call: Call) -> Response:
    q = call.query
    limit, offset, route = q["limit"], q["offset"], q["route"]
    customers = scope(call.token, q["customer"])
    rows = await call.ctx.read(
        lambda conn: delivery_parking.list_parked(
            conn, route=route, customers=customers, limit=limit + 1, offset=offset
        )
    )
    return Json(page([r.to_dict() for r in rows], limit, offset))


@operation(
    "POST",
    "/deliveries/parked/{route}/{event_id}/retry",
    "retryParkedDelivery",
    "Make a parked event pending again: its route sends it next",
    ref("ParkedDeliveryRetried"),
    path_params=(_route("path", "route name"), path_id("event_id", "event id", "ticket event id")),
    body=Body(),
    errors=(404,),
)
async def retry_parked(call: Call) -> Response:
    await call.body()
    route = call.path("route")
    event_id = call.path("event_id")
    token, ctx = call.token, call.ctx
    now = ctx.clock()

    def work(conn: Connection) -> delivery_parking.ParkedEvent:
        parked = delivery_parking.get_parked(conn, route, event_id)
        if not token.allows(parked.customer):  # answered as a missing one
            raise delivery_parking.ParkedEventNotFound(route, event_id)
        delivery_parking.unpark(conn, route, event_id)
        apitokens.record(
            conn,
            actor=token.name,
            action="delivery.retry",
            target=f"delivery/{route}/{event_id}",
            customer=parked.customer,
            data={"idempotency_key": parked.idempotency_key},
            now=now,
        )
        return parked

    parked = await ctx.write(work)
    ctx.pipeline.on_ticket_change()  # the route looks now, not at its next poll
    return Json({**parked.to_dict(), "status": "pending"})


OPERATIONS = (list_parked, retry_parked)


def _schemas() -> dict[str, Any]:
    integer, text = {"type": "integer"}, {"type": "string"}
    parked = obj(
        (
            "route",
            "event_id",
            "ticket_id",
            "seq",
            "kind",
            "customer",
            "idempotency_key",
            "attempts",
            "parked_at",
            "error",
        ),
        route=text,
        event_id=integer,
        ticket_id=integer,
        seq=integer,
        kind=text,
        customer=text,
        idempotency_key=text,
        attempts=integer,
        parked_at={"type": "number"},
        error=text,
    )
    return {
        "ParkedDelivery": parked,
        "ParkedDeliveryPage": page_of("ParkedDelivery"),
        "ParkedDeliveryRetried": {"allOf": [parked, obj(("status",), status={"const": "pending"})]},
    }


SCHEMAS = _schemas()
