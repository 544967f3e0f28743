"""Ticket lifecycle: open, reopen, flap, escalate, acknowledge, comment, resolve.

Every function runs on a connection inside the caller's transaction (`Store.transaction()`)
and takes `now`; none commits. Each change bumps the ticket's `event_seq` and appends an
event to its timeline, with the actor: "tripline" for the engine, else the operator.
The ticket's types are in ticketmodel.py; reading tickets is in ticketqueries.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, Row, exc, func, select

from tripline.collector.schema import ticket_events, tickets
from tripline.collector.ticketmodel import (
    ENGINE_ACTOR,
    InvalidTicketTransition,
    Ticket,
    TicketChange,
    TicketNotFound,
    TicketPolicy,
    problem_key,
)
from tripline.collector.ticketqueries import get_ticket
from tripline.common.labels import Labels


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts) or "0s"


def _locked(conn: Connection, ticket_id: int) -> Row[Any]:
    row = conn.execute(
        select(tickets).where(tickets.c.id == ticket_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise TicketNotFound(ticket_id)
    return row


def _active(conn: Connection, key: str) -> Row[Any] | None:
    return conn.execute(
        select(tickets)
        .where(tickets.c.problem_key == key, tickets.c.status != "resolved")
        .with_for_update()
    ).one_or_none()


_Event = tuple[str, str, str, dict[str, Any]]  # kind, actor, message, data


def _change(
    conn: Connection, ticket: Row[Any], now: float, values: dict[str, Any], *events: _Event
) -> None:
    seq = ticket.event_seq
    for kind, actor, message, data in events:
        seq += 1
        event = {"kind": kind, "actor": actor, "message": message, "data": data}
        conn.execute(ticket_events.insert().values(ticket_id=ticket.id, seq=seq, at=now, **event))
    conn.execute(
        tickets.update()
        .where(tickets.c.id == ticket.id)
        .values(**values, event_seq=seq, updated_at=now)
    )


def on_alert_firing(
    conn: Connection,
    *,
    customer: str,
    agent_id: str,
    hostname: str,
    rule: str,
    labels: Labels,
    severity: str,
    tier: int,
    summary: str,
    runbook: str | None,
    value: float,
    threshold: float | None,
    context: dict[str, Any],
    now: float,
    policy: TicketPolicy,
    seen_at: float | None = None,
    key: str | None = None,
) -> TicketChange:
    """Open a ticket for a problem that started firing, reopen its recent one, or leave an
    active one alone ("unchanged"). Safe against another collector doing the same at once.

    `now` is when the problem started (a report replayed after an outage may be older);
    `seen_at` is the collector's clock when it learnt of it (default `now`): escalation
    counts from there, since nobody could acknowledge the ticket before it existed.
    `key` replaces the problem key for a ticket of many PCs (collector/grouptickets.py),
    whose `agent_id` only names one of them."""
    if tier not in (1, 2, 3):
        raise ValueError(f"ticket tier must be 1, 2 or 3, not {tier!r}")
    key = key or problem_key(customer, agent_id, rule, labels)
    occurrence = {
        "hostname": hostname,
        "severity": severity,
        "tier": tier,
        "summary": summary,
        "runbook": runbook,
        "value": value,
        "threshold": threshold,
        "context": context,
    }
    problem = {
        "problem_key": key,
        "customer": customer,
        "agent_id": agent_id,
        "rule": rule,
        "labels": dict(sorted(labels)),
    }
    try:
        # The savepoint lets the caller's transaction go on if a racing collector wins.
        with conn.begin_nested():
            tier_since = now if seen_at is None else max(now, seen_at)
            return _fire(conn, problem, occurrence, now, policy, tier_since)
    except exc.IntegrityError:
        active = _active(conn, key)
        if active is None:
            raise
        return TicketChange(active.id, "unchanged")


def _fire(
    conn: Connection,
    problem: dict[str, Any],
    occurrence: dict[str, Any],
    now: float,
    policy: TicketPolicy,
    tier_since: float,
) -> TicketChange:
    key = problem["problem_key"]
    active = _active(conn, key)
    if active is not None:
        return TicketChange(active.id, "unchanged")
    data = {k: occurrence[k] for k in ("value", "threshold", "context")}
    last = conn.execute(
        select(tickets)
        .where(tickets.c.problem_key == key, tickets.c.status == "resolved")
        .order_by(tickets.c.resolved_at.desc(), tickets.c.id.desc())
        .limit(1)
        .with_for_update()
    ).first()
    if last is not None and now - last.resolved_at < policy.reopen_window:
        return _reopen(conn, last, occurrence, data, now, policy, tier_since)
    fresh = {"status": "open", "opened_at": now, "tier_since": tier_since, "reopen_count": 0}
    inserted = conn.execute(
        tickets.insert()
        .values(**problem, **occurrence, **fresh, flapping=False, updated_at=now, event_seq=0)
        .returning(tickets.c.id, tickets.c.event_seq)
    ).one()
    _change(conn, inserted, now, {}, ("opened", ENGINE_ACTOR, occurrence["summary"], data))
    return TicketChange(inserted.id, "opened")


def _reopen(
    conn: Connection,
    last: Row[Any],
    occurrence: dict[str, Any],
    data: dict[str, Any],
    now: float,
    policy: TicketPolicy,
    tier_since: float,
) -> TicketChange:
    count = last.reopen_count + 1
    cleared = dict.fromkeys(
        ("acknowledged_at", "acknowledged_by", "resolved_at", "resolved_by", "resolved_value")
    )
    values = {
        **occurrence,
        **cleared,
        "resolve_reason": None,
        "status": "open",
        "tier_since": tier_since,
        "reopen_count": count,
    }
    after = _duration(now - last.resolved_at)
    reopened = {**data, "reopen_count": count, "resolved_at": last.resolved_at}
    message = f"reopened {after} after it resolved: {occurrence['summary']}"
    events: list[_Event] = [("reopened", ENGINE_ACTOR, message, reopened)]
    earlier = conn.scalar(
        select(func.count())
        .select_from(ticket_events)
        .where(
            ticket_events.c.ticket_id == last.id,
            ticket_events.c.kind == "reopened",
            ticket_events.c.at >= now - policy.flap_window,
        )
    )
    recent = int(earlier or 0) + 1
    if not last.flapping and recent >= policy.flap_count:
        values["flapping"] = True
        message = f"flapping: reopened {recent} times within {_duration(policy.flap_window)}"
        flap = {"reopens": recent, "window": policy.flap_window}
        events.append(("flapping", ENGINE_ACTOR, message, flap))
    _change(conn, last, now, values, *events)
    return TicketChange(last.id, "reopened")


def on_alert_resolved(
    conn: Connection,
    *,
    customer: str,
    agent_id: str,
    rule: str,
    labels: Labels,
    value: float,
    reason: str,
    now: float,
    key: str | None = None,
    data: Mapping[str, Any] | None = None,
) -> TicketChange | None:
    """Resolve the problem's active ticket as the engine; None when it has none. `key`
    as for `on_alert_firing`; `data` goes onto the resolved event."""
    row = _active(conn, key or problem_key(customer, agent_id, rule, labels))
    if row is None:
        return None
    message = f"resolved: {reason} (value {value:g})"
    event = {"value": value, "reason": reason, **(data or {})}
    _close(conn, row, now, ENGINE_ACTOR, value, reason, message, event)
    return TicketChange(row.id, "resolved")


def engine_note(
    conn: Connection,
    ticket_id: int,
    *,
    message: str,
    data: Mapping[str, Any],
    now: float,
    values: Mapping[str, Any] | None = None,
) -> None:
    """The engine adds a "commented" event (and changes `values`: summary, value, context)
    to an unresolved ticket; nothing when it is resolved."""
    row = _locked(conn, ticket_id)
    if row.status == "resolved":
        return
    _change(conn, row, now, dict(values or {}), ("commented", ENGINE_ACTOR, message, dict(data)))


def _close(
    conn: Connection,
    row: Row[Any],
    now: float,
    actor: str,
    value: float | None,
    reason: str,
    message: str,
    data: dict[str, Any],
) -> None:
    values = {"status": "resolved", "resolved_at": now, "resolved_by": actor}
    values.update(resolved_value=value, resolve_reason=reason)
    _change(conn, row, now, values, ("resolved", actor, message, data))


def acknowledge(conn: Connection, ticket_id: int, *, actor: str, now: float) -> Ticket:
    """An operator takes the ticket: it stops escalating."""
    row = _locked(conn, ticket_id)
    if row.status == "acknowledged":
        why = f"already acknowledged by {row.acknowledged_by}"
        raise InvalidTicketTransition(ticket_id, "acknowledge", why)
    if row.status == "resolved":
        raise InvalidTicketTransition(ticket_id, "acknowledge", "it is resolved")
    values = {"status": "acknowledged", "acknowledged_at": now, "acknowledged_by": actor}
    _change(conn, row, now, values, ("acknowledged", actor, f"acknowledged by {actor}", {}))
    return get_ticket(conn, ticket_id)


def comment(conn: Connection, ticket_id: int, *, actor: str, text: str, now: float) -> Ticket:
    """Add a note to the timeline, whatever the ticket's status."""
    if not text.strip():
        raise ValueError("a comment needs some text")
    row = _locked(conn, ticket_id)
    _change(conn, row, now, {}, ("commented", actor, text, {}))
    return get_ticket(conn, ticket_id)


def resolve(
    conn: Connection, ticket_id: int, *, actor: str, now: float, note: str | None = None
) -> Ticket:
    """An operator closes the ticket (open or acknowledged)."""
    row = _locked(conn, ticket_id)
    if row.status == "resolved":
        why = f"already resolved by {row.resolved_by}"
        raise InvalidTicketTransition(ticket_id, "resolve", why)
    reason = note or f"resolved by {actor}"
    _close(conn, row, now, actor, None, reason, reason, {"note": note})
    return get_ticket(conn, ticket_id)


def escalate_due(conn: Connection, *, now: float, policy: TicketPolicy) -> list[TicketChange]:
    """Move each open, unacknowledged ticket that waited its tier's time up one tier."""
    changes: list[TicketChange] = []
    # Highest tier first, so a ticket moved up now is not looked at again in this call.
    for tier, wait in sorted(policy.escalate_after.items(), reverse=True):
        if tier >= 3:
            continue
        due = conn.execute(
            select(tickets)
            .where(
                tickets.c.status == "open",
                tickets.c.tier == tier,
                tickets.c.tier_since + wait <= now,
            )
            .order_by(tickets.c.id)
            .with_for_update()
        ).all()
        for row in due:
            message = (
                f"escalated to tier {tier + 1}: unacknowledged for "
                f"{_duration(now - row.tier_since)}"
            )
            data = {"from_tier": tier, "to_tier": tier + 1}
            _change(
                conn, row, now, {"tier": tier + 1, "tier_since": now},
                ("escalated", ENGINE_ACTOR, message, data),
            )  # fmt: skip
            changes.append(TicketChange(row.id, "escalated"))
    return sorted(changes, key=lambda c: c.ticket_id)


def reassign_tier(conn: Connection, ticket_id: int, *, tier: int, actor: str, now: float) -> Ticket:
    """An operator moves an unresolved ticket to another tier, up or down; its escalation
    clock restarts. Recorded as an "escalated" event with ``"manual": true``."""
    if tier not in (1, 2, 3):
        raise ValueError(f"ticket tier must be 1, 2 or 3, not {tier!r}")
    row = _locked(conn, ticket_id)
    if row.status == "resolved":
        raise InvalidTicketTransition(ticket_id, "change the tier of", "it is resolved")
    if row.tier == tier:
        raise InvalidTicketTransition(ticket_id, "change the tier of", f"it is at tier {tier}")
    message = f"tier {row.tier} -> {tier} by {actor}"
    data = {"from_tier": row.tier, "to_tier": tier, "manual": True}
    _change(conn, row, now, {"tier": tier, "tier_since": now}, ("escalated", actor, message, data))
    return get_ticket(conn, ticket_id)
