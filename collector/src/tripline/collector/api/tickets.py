"""/tickets: list, show, acknowledge, comment, resolve, change tier."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, select
from starlette.responses import Response

from tripline.alerts.model import SEVERITIES
from tripline.collector import apitokens, ticketmodel, ticketqueries, tickets
from tripline.collector.api.body import Body, IntField, TextField
from tripline.collector.api.encoding import Json
from tripline.collector.api.jsonschema import array_of, obj, or_null, page_of, ref
from tripline.collector.api.params import (
    CUSTOMER,
    MAX_FILTER,
    PAGING,
    Choice,
    Text,
    Whole,
    page,
    path_id,
)
from tripline.collector.api.routing import Call, operation
from tripline.collector.apitokens import ApiToken
from tripline.collector.schema import TICKET_STATUSES
from tripline.collector.schema import tickets as tickets_table

TICKET_ID = path_id("ticket_id", "ticket id")
TIER = Whole(name="tier", low=1, high=3)


def ticket_json(ticket: ticketmodel.Ticket, *, with_events: bool = True) -> dict[str, Any]:
    out = ticket.to_dict()
    if not with_events:
        del out["events"]
    return out


def _visible_ticket(conn: Connection, token: ApiToken, ticket_id: int) -> str:
    """The ticket's customer; TicketNotFound when missing or outside the scope."""
    customer = conn.scalar(select(tickets_table.c.customer).where(tickets_table.c.id == ticket_id))
    if customer is None or not token.allows(customer):
        raise ticketmodel.TicketNotFound(ticket_id)
    return str(customer)


@operation(
    "GET",
    "/tickets",
    "listTickets",
    "Tickets, newest first, without timelines",
    ref("TicketPage"),
    query=(
        *PAGING,
        Choice(name="status", choices=TICKET_STATUSES),
        CUSTOMER,
        Choice(name="severity", choices=SEVERITIES),
        TIER,
        Text(name="agent_id", max_length=MAX_FILTER),
    ),
    errors=(403,),
)
async def list_tickets(call: Call) -> Response:
    q, token = call.query, call.token
    limit, offset = q["limit"], q["offset"]
    rows = await call.ctx.read(
        lambda conn: ticketqueries.list_tickets(
            conn,
            status=q["status"],
            customer=q["customer"],
            customers=token.customers,
            severity=q["severity"],
            tier=q["tier"],
            agent_id=q["agent_id"],
            limit=limit + 1,
            offset=offset,
        )
    )
    return Json(page([ticket_json(t, with_events=False) for t in rows], limit, offset))


@operation(
    "GET",
    "/tickets/{ticket_id}",
    "showTicket",
    "A ticket with its timeline",
    ref("TicketDetail"),
    path_params=(TICKET_ID,),
    errors=(404,),
)
async def show_ticket(call: Call) -> Response:
    ticket_id = call.path("ticket_id")

    def work(conn: Connection) -> ticketmodel.Ticket:
        _visible_ticket(conn, call.token, ticket_id)
        return ticketqueries.get_ticket(conn, ticket_id)

    return Json(ticket_json(await call.ctx.read(work)))


async def _change_ticket(
    call: Call,
    action: str,
    data: dict[str, Any],
    change: Callable[[Connection, int, str, float], ticketmodel.Ticket],
) -> Response:
    """Apply `change` to a visible ticket with its audit row, in one transaction."""
    token = call.token
    ticket_id = call.path("ticket_id")
    now = call.ctx.clock()

    def work(conn: Connection) -> ticketmodel.Ticket:
        customer = _visible_ticket(conn, token, ticket_id)
        ticket = change(conn, ticket_id, token.name, now)
        apitokens.record(
            conn,
            actor=token.name,
            action=f"ticket.{action}",
            target=f"ticket/{ticket_id}",
            customer=customer,
            data=data,
            now=now,
        )
        return ticket

    ticket = await call.ctx.write(work)
    call.ctx.pipeline.on_ticket_change()
    return Json(ticket_json(ticket))


TICKET_CHANGE: dict[str, Any] = {
    "answer": ref("TicketDetail"),
    "path_params": (TICKET_ID,),
}


@operation(
    "POST",
    "/tickets/{ticket_id}/ack",
    "acknowledgeTicket",
    "Acknowledge: stops escalation",
    **TICKET_CHANGE,
    body=Body(),
    errors=(404, 409),
)
async def ack_ticket(call: Call) -> Response:
    await call.body()
    return await _change_ticket(
        call,
        "acknowledge",
        {},
        lambda conn, tid, actor, now: tickets.acknowledge(conn, tid, actor=actor, now=now),
    )


@operation(
    "POST",
    "/tickets/{ticket_id}/comment",
    "commentTicket",
    "Add a comment to the timeline",
    **TICKET_CHANGE,
    body=Body(
        {"text": TextField(blank="field {key!r} needs some text")},
        required=("text",),
        needed=True,
    ),
    errors=(404,),
)
async def comment_ticket(call: Call) -> Response:
    text = (await call.body())["text"]
    return await _change_ticket(
        call,
        "comment",
        {"text": text},
        lambda conn, tid, actor, now: tickets.comment(conn, tid, actor=actor, text=text, now=now),
    )


@operation(
    "POST",
    "/tickets/{ticket_id}/resolve",
    "resolveTicket",
    "Resolve, with an optional note",
    **TICKET_CHANGE,
    body=Body({"note": TextField(nullable=True)}),
    errors=(404, 409),
)
async def resolve_ticket(call: Call) -> Response:
    note = (await call.body()).get("note")
    return await _change_ticket(
        call,
        "resolve",
        {"note": note},
        lambda conn, tid, actor, now: tickets.resolve(
            conn, tid, actor=actor, now=now, note=note or None
        ),
    )


@operation(
    "POST",
    "/tickets/{ticket_id}/tier",
    "reassignTicketTier",
    "Move an unresolved ticket to another tier; its escalation clock restarts",
    **TICKET_CHANGE,
    body=Body({"tier": IntField(low=1, high=3)}, required=("tier",), needed=True),
    errors=(404, 409),
)
async def tier_ticket(call: Call) -> Response:
    tier = (await call.body())["tier"]
    return await _change_ticket(
        call,
        "tier",
        {"tier": tier},
        lambda conn, tid, actor, now: tickets.reassign_tier(
            conn, tid, tier=tier, actor=actor, now=now
        ),
    )


OPERATIONS = (list_tickets, show_ticket, ack_ticket, comment_ticket, resolve_ticket, tier_ticket)


def _schemas() -> dict[str, Any]:
    number = {"type": "number"}
    text = {"type": "string"}
    when = or_null("number")
    labels = {"type": "object", "additionalProperties": {"type": "string"}}
    ticket = obj(
        ("id", "customer", "agent_id", "hostname", "rule", "labels", "status", "severity"),
        id={"type": "integer"},
        problem_key=text,
        customer=text,
        agent_id=text,
        hostname=text,
        rule=text,
        labels=labels,
        status={"enum": list(TICKET_STATUSES)},
        severity=text,
        tier={"type": "integer", "minimum": 1, "maximum": 3},
        summary=text,
        runbook=or_null("string"),
        value=or_null("number"),
        threshold=or_null("number"),
        context={"type": "object"},
        opened_at=number,
        tier_since=number,
        acknowledged_at=when,
        acknowledged_by=or_null("string"),
        resolved_at=when,
        resolved_by=or_null("string"),
        resolved_value=or_null("number"),
        resolve_reason=or_null("string"),
        reopen_count={"type": "integer"},
        flapping={"type": "boolean"},
        updated_at=number,
        event_seq={"type": "integer"},
    )
    event = obj(
        ("seq", "at", "kind", "actor", "message", "data"),
        seq={"type": "integer"},
        at=number,
        kind=text,
        actor={**text, "description": "'tripline' for the engine, else the API token's name"},
        message=text,
        data={"type": "object"},
    )
    return {
        "Ticket": ticket,
        "TicketEvent": event,
        "TicketDetail": {
            "allOf": [
                ref("Ticket"),
                obj(("events",), events=array_of(ref("TicketEvent"))),
                obj(
                    (),
                    snapshot={
                        **or_null("object"),
                        "description": "what the agent saw while the problem held "
                        "(top_cpu, top_memory, filesystems, logged_in_users, uptime_seconds...)",
                    },
                    snapshot_taken_at={
                        **or_null("number"),
                        "description": "when the collector received it",
                    },
                    previously={
                        **or_null("object"),
                        "description": "scope (agent, customer or null) and the last tickets "
                        "of this rule there: resolved_by, auto_resolved, note, took_seconds",
                    },
                ),
            ]
        },
        "TicketPage": page_of("Ticket"),
    }


SCHEMAS = _schemas()
