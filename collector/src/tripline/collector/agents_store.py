"""Enrolled agents: looking one up by id or by credential, listing, revoking, recording
the inventory of its Hello, and when each was last seen.

Enrolling lives in `enrollment` (it needs the token); each agent's instances and applied
report seq in `agent_instances`. Functions run on a connection inside the caller's
transaction (`Store.transaction()` / `Store.read()`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, select

from tripline.collector.schema import agents, secret_hash
from tripline.collector.storeerrors import StoreError


class AgentNotFound(StoreError):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"no agent {agent_id!r}")
        self.agent_id = agent_id


class AgentRevoked(StoreError):
    """The agent's credential was revoked: nothing more of it is applied."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} is revoked")
        self.agent_id = agent_id


@dataclass(frozen=True)
class AgentRecord:
    agent_id: str
    customer: str
    hostname: str
    site: str
    created_at: float
    last_seen_at: float | None
    revoked_at: float | None
    inventory: dict[str, Any]
    tags: dict[str, Any]


def _agent(row: Any) -> AgentRecord:
    values = {f.name: getattr(row, f.name) for f in fields(AgentRecord)}
    return AgentRecord(**{**values, "inventory": dict(row.inventory), "tags": dict(row.tags)})


def authenticate(conn: Connection, credential: str) -> AgentRecord | None:
    """The agent a credential belongs to; None if unknown, revoked or malformed."""
    agent_id, dot, secret = credential.partition(".")
    if not dot or not agent_id or not secret:
        return None
    row = conn.execute(select(agents).where(agents.c.agent_id == agent_id)).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(secret_hash(secret), row.credential_hash):
        return None
    return _agent(row)


def get_agent(conn: Connection, agent_id: str) -> AgentRecord | None:
    row = conn.execute(select(agents).where(agents.c.agent_id == agent_id)).one_or_none()
    return None if row is None else _agent(row)


def list_agents(conn: Connection, customer: str | None = None) -> list[AgentRecord]:
    query = select(agents).order_by(agents.c.customer, agents.c.hostname, agents.c.agent_id)
    if customer is not None:
        query = query.where(agents.c.customer == customer)
    return [_agent(row) for row in conn.execute(query)]


def revoked_agent_ids(conn: Connection) -> set[str]:
    return set(conn.scalars(select(agents.c.agent_id).where(agents.c.revoked_at.is_not(None))))


def revoke_agent(conn: Connection, agent_id: str, now: float) -> None:
    """Idempotent: revoking again keeps the first revocation time."""
    row = conn.execute(
        select(agents.c.revoked_at).where(agents.c.agent_id == agent_id)
    ).one_or_none()
    if row is None:
        raise AgentNotFound(agent_id)
    if row.revoked_at is None:
        conn.execute(agents.update().where(agents.c.agent_id == agent_id).values(revoked_at=now))


def update_inventory(
    conn: Connection, agent_id: str, hostname: str, inventory: dict[str, Any], now: float
) -> None:
    """Record what the agent said in its Hello; also marks it seen at `now`."""
    updated = conn.execute(
        agents.update()
        .where(agents.c.agent_id == agent_id)
        .values(hostname=hostname, inventory=dict(inventory), last_seen_at=now)
    ).rowcount
    if updated == 0:
        raise AgentNotFound(agent_id)


def last_seen_all(conn: Connection) -> dict[str, float]:
    """agent_id -> last_seen_at of every agent seen at least once and not revoked."""
    query = select(agents.c.agent_id, agents.c.last_seen_at).where(
        agents.c.last_seen_at.is_not(None), agents.c.revoked_at.is_(None)
    )
    return {row.agent_id: row.last_seen_at for row in conn.execute(query)}
