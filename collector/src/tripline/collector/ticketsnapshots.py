"""Snapshots stored with tickets: the one taken while the ticket's problem held.

Functions run on a connection inside the caller's transaction and never commit. A ticket
keeps the first snapshot that reached it while open; reopening it replaces that one
(the old one described an earlier occurrence).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, and_, exists, select

from tripline.collector.database import insert_ignoring_conflict
from tripline.collector.schema import ticket_snapshots, tickets


def _insert_if_absent(conn: Connection, ticket_id: int, taken_at: float, data: Any) -> bool:
    # Another collector may attach one at the same moment: the first one stays.
    return bool(
        insert_ignoring_conflict(
            conn, ticket_snapshots, ticket_id=ticket_id, taken_at=taken_at, snapshot=data
        )
    )


def replace(conn: Connection, ticket_id: int, data: dict[str, Any], taken_at: float) -> None:
    """The ticket's snapshot is now this one (a ticket opened or reopened)."""
    clear(conn, ticket_id)
    _insert_if_absent(conn, ticket_id, taken_at, data)


def clear(conn: Connection, ticket_id: int) -> None:
    conn.execute(ticket_snapshots.delete().where(ticket_snapshots.c.ticket_id == ticket_id))


def attach_to_open(
    conn: Connection,
    *,
    agent_id: str,
    data: dict[str, Any],
    taken_at: float,
    skip_rules: Collection[str] = (),
) -> list[int]:
    """Give the snapshot to the agent's unresolved tickets that have none yet (except
    those of ``skip_rules``: an offline ticket's PC did not answer); returns their ids."""
    has_one = exists().where(ticket_snapshots.c.ticket_id == tickets.c.id)
    query = (
        select(tickets.c.id)
        .where(
            and_(
                tickets.c.agent_id == agent_id,
                tickets.c.status != "resolved",
                tickets.c.rule.not_in(sorted(skip_rules)),
                ~has_one,
            )
        )
        .order_by(tickets.c.id)
    )
    ids = [int(row.id) for row in conn.execute(query)]
    return [ticket_id for ticket_id in ids if _insert_if_absent(conn, ticket_id, taken_at, data)]


def get(conn: Connection, ticket_id: int) -> tuple[dict[str, Any], float] | None:
    """(snapshot, taken_at) of the ticket, or None."""
    row = conn.execute(
        select(ticket_snapshots.c.snapshot, ticket_snapshots.c.taken_at).where(
            ticket_snapshots.c.ticket_id == ticket_id
        )
    ).one_or_none()
    if row is None:
        return None
    # A row written by hand or by a broken collector may hold other JSON.
    snapshot = dict(row.snapshot) if isinstance(row.snapshot, dict) else {}
    return snapshot, float(row.taken_at)
