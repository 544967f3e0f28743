"""Delivery leases: collectors sharing one database take turns per route.

A lease row with an expiry (``delivery_leases``): the holder drains the route and renews
as it goes; a holder that dies leaves the route to another once the lease expires. A lease
rather than per-row locks keeps order per ticket across collectors and works the same on
SQLite. Functions run on a connection inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import socket

from sqlalchemy import Connection, delete, or_, update

from tripline.collector.database import insert_ignoring_conflict
from tripline.collector.schema import delivery_leases


def take_lease(conn: Connection, route: str, owner: str, now: float, ttl: float) -> bool:
    """Take or renew the route's lease; False while another collector holds it."""
    renewed = conn.execute(
        update(delivery_leases)
        .where(
            delivery_leases.c.route == route,
            or_(delivery_leases.c.owner == owner, delivery_leases.c.expires_at <= now),
        )
        .values(owner=owner, expires_at=now + ttl)
    ).rowcount
    if renewed:
        return True
    return (
        insert_ignoring_conflict(
            conn, delivery_leases, route=route, owner=owner, expires_at=now + ttl
        )
        == 1
    )


def release_lease(conn: Connection, route: str, owner: str) -> None:
    conn.execute(
        delete(delivery_leases).where(
            delivery_leases.c.route == route, delivery_leases.c.owner == owner
        )
    )


def lease_owner(instance: str = "") -> str:
    """This collector's name in lease rows: its host and an instance name (its data
    directory). Stable across restarts, so a collector restarted after a crash takes its
    routes back at once instead of waiting for its own lease to expire."""
    digest = hashlib.sha256(instance.encode()).hexdigest()[:12]
    return f"{socket.gethostname()[:48]}:{digest}"
