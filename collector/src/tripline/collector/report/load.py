"""Read what one customer's report needs from the store, for one period."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, func, select

from tripline.collector.report.model import (
    AgentRow,
    EventRow,
    FsSample,
    ReportInput,
    SpanRow,
    TicketRow,
)
from tripline.collector.schema import (
    agent_presence,
    agents,
    filesystem_usage,
    ticket_events,
    tickets,
)

DAY = 86400.0
# Presence spans this long before the period are read too: a reboot at the period's
# start is told by the boot time of the span before it.
LOOKBACK = 7 * DAY
# The growth rate of a filesystem is fitted over the period's last days at most.
FIT_DAYS = 30


def customer_known(conn: Connection, customer: str) -> bool:
    """Whether the store has any agent or ticket of `customer`."""
    for table in (agents, tickets):
        if conn.scalar(select(table.c.customer).where(table.c.customer == customer).limit(1)):
            return True
    return False


def read_input(
    conn: Connection,
    customer: str,
    start: float,
    end: float,
    *,
    memory_rules: Collection[str],
    gap: float,
    now: float,
) -> ReportInput:
    """Everything `compute.compute` needs for `customer` from `start` to `end`."""
    agent_rows = [
        AgentRow(
            agent_id=row.agent_id,
            hostname=row.hostname,
            site=row.site,
            os=" ".join(str(row.inventory.get(k) or "") for k in ("os", "os_release")).strip()
            if isinstance(row.inventory, dict)
            else "",
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            last_seen_at=row.last_seen_at,
        )
        for row in conn.execute(
            select(agents).where(
                agents.c.customer == customer,
                agents.c.created_at < end,
                (agents.c.revoked_at.is_(None)) | (agents.c.revoked_at >= start),
            )
        )
    ]
    mine = select(agents.c.agent_id).where(agents.c.customer == customer)
    spans = [
        SpanRow(row.agent_id, row.started_at, row.ended_at, row.boot_time)
        for row in conn.execute(
            select(agent_presence).where(
                agent_presence.c.agent_id.in_(mine),
                agent_presence.c.started_at < end,
                agent_presence.c.ended_at >= start - LOOKBACK,
            )
        )
    ]
    ticket_rows = [
        TicketRow(row.id, row.agent_id, row.hostname, row.rule, row.severity, row.tier)
        for row in conn.execute(
            select(
                tickets.c.id,
                tickets.c.agent_id,
                tickets.c.hostname,
                tickets.c.rule,
                tickets.c.severity,
                tickets.c.tier,
            ).where(
                tickets.c.customer == customer,
                tickets.c.opened_at < end,
                tickets.c.updated_at >= start,  # any life of it in the period changed it since
            )
        )
    ]
    events: list[EventRow] = []
    ticket_ids = [t.ticket_id for t in ticket_rows]
    for chunk in range(0, len(ticket_ids), 500):
        # `data` only where the tiers are (an opened event's holds the whole context).
        for row in conn.execute(
            select(
                ticket_events.c.ticket_id,
                ticket_events.c.seq,
                ticket_events.c.at,
                ticket_events.c.kind,
                ticket_events.c.actor,
            ).where(
                ticket_events.c.ticket_id.in_(ticket_ids[chunk : chunk + 500]),
                ticket_events.c.at < end,
            )
        ):
            events.append(EventRow(row.ticket_id, row.seq, row.at, row.kind, row.actor))
    tiers = {
        (row.ticket_id, row.seq): row.data
        for chunk in range(0, len(ticket_ids), 500)
        for row in conn.execute(
            select(ticket_events.c.ticket_id, ticket_events.c.seq, ticket_events.c.data).where(
                ticket_events.c.ticket_id.in_(ticket_ids[chunk : chunk + 500]),
                ticket_events.c.kind == "escalated",
                ticket_events.c.at < end,
            )
        )
    }
    events = [
        EventRow(
            e.ticket_id,
            e.seq,
            e.at,
            e.kind,
            e.actor,
            _tier(tiers[(e.ticket_id, e.seq)], "from_tier"),
            _tier(tiers[(e.ticket_id, e.seq)], "to_tier"),
        )
        if (e.ticket_id, e.seq) in tiers
        else e
        for e in events
    ]
    fit_from = max(start, end - FIT_DAYS * DAY)
    samples = [
        FsSample(row.agent_id, row.mountpoint, row.sampled_at, row.size_bytes, row.used_bytes)
        for row in conn.execute(
            select(filesystem_usage).where(
                filesystem_usage.c.agent_id.in_(mine),
                filesystem_usage.c.sampled_at >= fit_from,
                filesystem_usage.c.sampled_at < end,
            )
        )
    ]
    # Presence is kept from migration 5 on: before the customer's first span nothing
    # says whether its PCs reported, so that time is not expected of them.
    since = conn.scalar(
        select(func.min(agent_presence.c.started_at)).where(agent_presence.c.agent_id.in_(mine))
    )
    return ReportInput(
        customer=customer,
        start=start,
        end=end,
        agents=tuple(agent_rows),
        spans=tuple(spans),
        tickets=tuple(ticket_rows),
        events=tuple(events),
        filesystems=tuple(samples),
        memory_rules=frozenset(memory_rules),
        history_since=None if since is None else float(since),
        gap=gap,
        now=now,
    )


def _tier(data: object, key: str) -> int | None:
    value = data.get(key) if isinstance(data, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
