"""What fixed it last time: a ticket's earlier tickets of the same rule, and how they ended.

The earlier tickets come from the same PC (agent) when it has any, else from the same
customer's other PCs. Each says who resolved it ("tripline" when the problem cleared by
itself), the resolving note or, failing one, the last comment, and how long it took.
Two bounded queries on indexed columns (ix_tickets_agent_rule_resolved,
ix_tickets_customer_rule_resolved) plus one for the comments of at most `limit` tickets.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, and_, func, select

from tripline.collector.schema import ticket_events, tickets

PREVIOUS_LIMIT = 3
# A comment is shown whole up to this length, then cut: the ticket shows several.
MAX_NOTE = 500


def _resolved(
    conn: Connection, ticket_id: int, rule: str, where: Any, limit: int
) -> list[Row[Any]]:
    query = (
        select(
            tickets.c.id,
            tickets.c.agent_id,
            tickets.c.hostname,
            tickets.c.summary,
            tickets.c.opened_at,
            tickets.c.resolved_at,
            tickets.c.resolved_by,
            tickets.c.resolve_reason,
        )
        .where(
            where,
            tickets.c.rule == rule,
            tickets.c.status == "resolved",
            tickets.c.id != ticket_id,
        )
        .order_by(tickets.c.resolved_at.desc(), tickets.c.id.desc())
        .limit(limit)
    )
    return list(conn.execute(query))


def previous_tickets(
    conn: Connection,
    *,
    ticket_id: int,
    customer: str,
    agent_id: str,
    rule: str,
    limit: int = PREVIOUS_LIMIT,
    engine_actor: str = "tripline",
) -> dict[str, Any]:
    """``{"scope": "agent" | "customer" | None, "tickets": [...]}``, newest first."""
    scope: str | None = "agent"
    rows = _resolved(conn, ticket_id, rule, tickets.c.agent_id == agent_id, limit)
    if not rows:
        scope = "customer"
        rows = _resolved(conn, ticket_id, rule, tickets.c.customer == customer, limit)
    if not rows:
        return {"scope": None, "tickets": []}
    # The last comment of each: one row per ticket, however long its timeline.
    latest = (
        select(ticket_events.c.ticket_id, func.max(ticket_events.c.seq).label("seq"))
        .where(
            ticket_events.c.ticket_id.in_([r.id for r in rows]),
            ticket_events.c.kind == "commented",
        )
        .group_by(ticket_events.c.ticket_id)
        .subquery()
    )
    comments = select(ticket_events.c.ticket_id, ticket_events.c.message).join(
        latest,
        and_(ticket_events.c.ticket_id == latest.c.ticket_id, ticket_events.c.seq == latest.c.seq),
    )
    last_comment = {int(t): str(m) for t, m in conn.execute(comments)}
    out = []
    for r in rows:
        automatic = r.resolved_by == engine_actor
        # An operator's resolve without a note records "resolved by NAME" as its reason.
        note = (
            None
            if automatic or r.resolve_reason == f"resolved by {r.resolved_by}"
            else (r.resolve_reason)
        )
        note = note or last_comment.get(int(r.id))
        out.append(
            {
                "id": int(r.id),
                "agent_id": r.agent_id,
                "hostname": r.hostname,
                "summary": r.summary,
                "opened_at": r.opened_at,
                "resolved_at": r.resolved_at,
                "resolved_by": r.resolved_by,
                "auto_resolved": automatic,
                "resolve_reason": r.resolve_reason,
                "note": None if note is None else note[:MAX_NOTE],
                "took_seconds": None
                if r.resolved_at is None
                else max(0.0, r.resolved_at - r.opened_at),
            }
        )
    return {"scope": scope, "tickets": out}
