"""Enrollment tokens and enrolling an agent with one.

A token is created for one customer (the secret is returned once and stored only as its
sha256), may expire, may cap the agents it enrolls, and may be revoked. `enroll_agent`
checks all of that and registers the agent under the token's customer. Functions run on
a connection inside the caller's transaction (`Store.transaction()` / `Store.read()`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, exc, func, select

from tripline.collector import entropy
from tripline.collector.agents_store import AgentRecord
from tripline.collector.schema import agents, enrollment_tokens, secret_hash
from tripline.collector.storeerrors import StoreError


class EnrollmentRefused(StoreError):
    """`token_id` and `customer` are set when the token is known but may not enroll now
    (revoked, expired, at its agent limit)."""

    def __init__(
        self, reason: str, token_id: int | None = None, customer: str | None = None
    ) -> None:
        super().__init__(f"enrollment refused: {reason}")
        self.reason = reason
        self.token_id = token_id
        self.customer = customer


class EnrollmentTokenConflict(StoreError):
    def __init__(self, customer: str, other_customer: str) -> None:
        super().__init__(
            f"this enrollment token already belongs to customer {other_customer!r}, "
            f"not {customer!r}: give each customer its own token"
        )
        self.customer = customer
        self.other_customer = other_customer


class EnrollmentTokenNotFound(StoreError):
    def __init__(self, token_id: int) -> None:
        super().__init__(f"no enrollment token with id {token_id}")
        self.token_id = token_id


@dataclass(frozen=True)
class EnrollmentToken:
    id: int
    customer: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    # agents (not revoked) it may enroll; None: no limit
    max_agents: int | None = None


def _token(row: Any) -> EnrollmentToken:
    return EnrollmentToken(**{f.name: getattr(row, f.name) for f in fields(EnrollmentToken)})


def create_token(
    conn: Connection,
    customer: str,
    now: float,
    expires_at: float | None = None,
    *,
    max_agents: int | None = None,
) -> tuple[EnrollmentToken, str]:
    """A new token for `customer`; the secret is returned once and stored only hashed.

    `max_agents` caps the agents (not revoked) it may enroll; `expires_at` ends it."""
    token = entropy.generate()
    record = ensure_token(conn, customer, token, now, expires_at, max_agents=max_agents)
    return record, token


def ensure_token(
    conn: Connection,
    customer: str,
    token: str,
    now: float,
    expires_at: float | None = None,
    *,
    max_agents: int | None = None,
) -> EnrollmentToken:
    """Register a token chosen by the operator; idempotent for the same customer (a
    revoked token stays revoked, limits stay those it was first registered with)."""
    if not customer or not token or token != token.strip():
        raise ValueError("customer and token must be non-empty, without surrounding spaces")
    if max_agents is not None and max_agents < 1:
        raise ValueError(f"max_agents must be at least 1, got {max_agents}")
    digest = secret_hash(token)
    query = select(enrollment_tokens).where(enrollment_tokens.c.token_hash == digest)
    row = conn.execute(query).one_or_none()
    if row is None:
        insert = enrollment_tokens.insert().values(
            customer=customer,
            token_hash=digest,
            created_at=now,
            expires_at=expires_at,
            max_agents=max_agents,
        )
        try:
            # Collectors sharing PostgreSQL start with the same flags: one inserts.
            with conn.begin_nested():
                conn.execute(insert)
        except exc.IntegrityError:
            pass
        row = conn.execute(query).one()
    if row.customer != customer:
        raise EnrollmentTokenConflict(customer, row.customer)
    return _token(row)


def list_tokens(conn: Connection, customer: str | None = None) -> list[EnrollmentToken]:
    query = select(enrollment_tokens).order_by(enrollment_tokens.c.id)
    if customer is not None:
        query = query.where(enrollment_tokens.c.customer == customer)
    return [_token(row) for row in conn.execute(query)]


def agents_per_token(conn: Connection) -> dict[int, int]:
    """token id -> agents it enrolled that are not revoked (what `max_agents` counts)."""
    query = (
        select(agents.c.enrollment_token_id, func.count())
        .where(agents.c.enrollment_token_id.is_not(None), agents.c.revoked_at.is_(None))
        .group_by(agents.c.enrollment_token_id)
    )
    return {int(token_id): int(count) for token_id, count in conn.execute(query)}


def revoke_token(conn: Connection, token_id: int, now: float) -> None:
    """Idempotent: revoking again keeps the first revocation time."""
    row = conn.execute(
        select(enrollment_tokens.c.revoked_at).where(enrollment_tokens.c.id == token_id)
    ).one_or_none()
    if row is None:
        raise EnrollmentTokenNotFound(token_id)
    if row.revoked_at is None:
        conn.execute(
            enrollment_tokens.update()
            .where(enrollment_tokens.c.id == token_id)
            .values(revoked_at=now)
        )


def enroll_agent(
    conn: Connection,
    token: str,
    *,
    hostname: str,
    site: str,
    inventory: dict[str, Any],
    now: float,
    tags: dict[str, Any] | None = None,
) -> tuple[AgentRecord, str]:
    """Register a new agent for the token's customer; returns it and its credential
    "<agent_id>.<secret>" (shown once, stored hashed)."""
    # FOR UPDATE serializes enrollments of one token on PostgreSQL, so two at once
    # cannot both take its last free place (SQLite takes the write lock at BEGIN).
    row = conn.execute(
        select(enrollment_tokens)
        .where(enrollment_tokens.c.token_hash == secret_hash(token))
        .with_for_update()
    ).one_or_none()
    if row is None:
        raise EnrollmentRefused("unknown enrollment token")
    if row.revoked_at is not None:
        raise EnrollmentRefused(f"enrollment token {row.id} was revoked", row.id, row.customer)
    if row.expires_at is not None and row.expires_at <= now:
        raise EnrollmentRefused(f"enrollment token {row.id} has expired", row.id, row.customer)
    if row.max_agents is not None:
        enrolled = conn.scalar(
            select(func.count()).where(
                agents.c.enrollment_token_id == row.id, agents.c.revoked_at.is_(None)
            )
        )
        if int(enrolled or 0) >= row.max_agents:
            raise EnrollmentRefused(
                f"enrollment token {row.id} has enrolled its maximum of "
                f"{row.max_agents} agents: revoke agents no longer used or create "
                "another token",
                row.id,
                row.customer,
            )
    agent_id = "agt_" + secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = AgentRecord(
        agent_id=agent_id,
        customer=row.customer,
        hostname=hostname,
        site=site,
        created_at=now,
        last_seen_at=None,
        revoked_at=None,
        inventory=dict(inventory),
        tags=dict(tags or {}),
    )
    conn.execute(
        agents.insert().values(
            agent_id=agent_id,
            customer=row.customer,
            hostname=hostname,
            site=site,
            credential_hash=secret_hash(secret),
            enrollment_token_id=row.id,
            inventory=record.inventory,
            tags=record.tags,
            created_at=now,
        )
    )
    return record, f"{agent_id}.{secret}"
