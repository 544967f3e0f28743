"""Operators' HTTP API tokens, scoped to customers, and the audit log of writes.

A token is ``tla_`` plus 256 random bits; the store keeps only its sha256, as it does for
agent credentials (a secret that random needs no slow hash). Each token sees all customers
or a fixed list of them. Functions run on a connection inside the caller's transaction
and take `now`; every write they make is also written to the audit log with its actor.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, Row, exc, select

from tripline.collector.schema import api_tokens, audit_log, secret_hash

TOKEN_PREFIX = "tla_"
MAX_NAME_LENGTH = 128


class ApiTokenError(Exception):
    """Base of the API token store's named errors."""


class ApiTokenNotFound(ApiTokenError):
    def __init__(self, token_id: int) -> None:
        super().__init__(f"no API token with id {token_id}")
        self.token_id = token_id


class ApiTokenNameTaken(ApiTokenError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"an API token named {name!r} exists (or existed): names identify who made a "
            "change in the audit log, so pick another"
        )
        self.name = name


@dataclass(frozen=True)
class ApiToken:
    id: int
    name: str
    # None: every customer, today's and future ones
    customers: tuple[str, ...] | None
    created_at: float
    revoked_at: float | None

    def allows(self, customer: str) -> bool:
        return self.customers is None or customer in self.customers

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["customers"] = None if self.customers is None else list(self.customers)
        return out


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str
    action: str
    target: str
    customer: str | None
    data: dict[str, Any]


def check_name(text: str, what: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """A name or customer as the store takes it, else ValueError saying why."""
    if not text or text != text.strip():
        raise ValueError(f"{what} must be non-empty, without surrounding spaces")
    if len(text) > max_length:
        raise ValueError(f"{what} must be at most {max_length} characters")
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in text):
        raise ValueError(f"{what} must not contain control characters")
    return text


def _token(row: Row[Any]) -> ApiToken:
    customers = None if row.customers is None else tuple(row.customers)
    return ApiToken(row.id, row.name, customers, row.created_at, row.revoked_at)


def create_token(
    conn: Connection,
    name: str,
    customers: Sequence[str] | None,
    *,
    actor: str,
    now: float,
) -> tuple[ApiToken, str]:
    """A new token; the secret is returned once and stored only hashed.

    `customers` None scopes it to every customer; a list must name at least one.
    """
    check_name(name, "the token name")
    scope: list[str] | None = None
    if customers is not None:
        scope = sorted({check_name(c, "a customer") for c in customers})
        if not scope:
            raise ValueError("a token scoped to customers needs at least one customer")
    if conn.scalar(select(api_tokens.c.id).where(api_tokens.c.name == name)) is not None:
        raise ApiTokenNameTaken(name)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    values = {
        "name": name,
        "token_hash": secret_hash(secret),
        "customers": scope,
        "created_at": now,
    }
    try:
        with conn.begin_nested():
            token_id = conn.execute(
                api_tokens.insert().values(**values).returning(api_tokens.c.id)
            ).scalar_one()
    except exc.IntegrityError:
        raise ApiTokenNameTaken(name) from None
    token = ApiToken(token_id, name, None if scope is None else tuple(scope), now, None)
    record(
        conn,
        actor=actor,
        action="api_token.create",
        target=f"api_token/{token_id}",
        customer=None,
        data={"name": name, "customers": scope},
        now=now,
    )
    return token, secret


def list_tokens(conn: Connection) -> list[ApiToken]:
    return [_token(row) for row in conn.execute(select(api_tokens).order_by(api_tokens.c.id))]


def revoke_token(conn: Connection, token_id: int, *, actor: str, now: float) -> ApiToken:
    """Idempotent: revoking again keeps the first revocation time and writes no audit row."""
    row = conn.execute(
        select(api_tokens).where(api_tokens.c.id == token_id).with_for_update()
    ).one_or_none()
    if row is None:
        raise ApiTokenNotFound(token_id)
    if row.revoked_at is not None:
        return _token(row)
    conn.execute(api_tokens.update().where(api_tokens.c.id == token_id).values(revoked_at=now))
    record(
        conn,
        actor=actor,
        action="api_token.revoke",
        target=f"api_token/{token_id}",
        customer=None,
        data={"name": row.name},
        now=now,
    )
    return dataclasses.replace(_token(row), revoked_at=now)


def authenticate(conn: Connection, secret: str) -> ApiToken | None:
    """The live token a secret belongs to; None if unknown, revoked or malformed."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 256:
        return None
    row = conn.execute(
        select(api_tokens).where(api_tokens.c.token_hash == secret_hash(secret))
    ).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    return _token(row)


def record(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str,
    customer: str | None,
    data: Mapping[str, Any],
    now: float,
) -> None:
    """Append one audit row; callers pass the connection that made the change, so the
    row commits with it or not at all."""
    conn.execute(
        audit_log.insert().values(
            at=now, actor=actor, action=action, target=target, customer=customer, data=dict(data)
        )
    )


def audit_entries(
    conn: Connection, *, action: str | None = None, limit: int = 1000
) -> list[AuditEntry]:
    """Oldest first."""
    query = select(audit_log).order_by(audit_log.c.id).limit(limit)
    if action is not None:
        query = query.where(audit_log.c.action == action)
    return [
        AuditEntry(r.id, r.at, r.actor, r.action, r.target, r.customer, dict(r.data))
        for r in conn.execute(query)
    ]
