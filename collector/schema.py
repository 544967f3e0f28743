"""The collector's tables, as SQLAlchemy Core metadata (SQLite and PostgreSQL alike).

Times are unix seconds as floats, always passed in by the caller. JSON columns hold plain
dicts and lists. Migration 1 creates these tables as they are defined here; see
`collector.migrations` for what a later change to a table must do.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Named constraints keep migrations (ALTER, DROP CONSTRAINT) writable on both backends.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TICKET_STATUSES = ("open", "acknowledged", "resolved")
EVENT_KINDS = (
    "opened",
    "reopened",
    "escalated",
    "acknowledged",
    "commented",
    "resolved",
    "flapping",
)

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", Double, nullable=False),
)

enrollment_tokens = Table(
    "enrollment_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer", Text, nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=True),
    Column("revoked_at", Double, nullable=True),
)

agents = Table(
    "agents",
    metadata,
    Column("agent_id", String(64), primary_key=True),
    Column("customer", Text, nullable=False, index=True),
    Column("hostname", Text, nullable=False),
    Column("site", Text, nullable=False, default=""),
    Column("credential_hash", String(64), nullable=False),
    Column("enrollment_token_id", Integer, ForeignKey("enrollment_tokens.id"), nullable=True),
    Column("inventory", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_seen_at", Double, nullable=True),
    Column("revoked_at", Double, nullable=True),
)

agent_instances = Table(
    "agent_instances",
    metadata,
    Column("agent_id", String(64), ForeignKey("agents.agent_id"), nullable=False),
    Column("instance_id", Text, nullable=False),
    Column("applied_seq", BigInteger, nullable=False),
    # Reports applied for this instance; equals applied_seq when nothing was dropped or
    # applied twice, which is how the exactly-once promise is checked from outside.
    Column("reports_applied", BigInteger, nullable=False, default=0),
    Column("dropped_reports_total", BigInteger, nullable=False, default=0),
    Column("first_seen_at", Double, nullable=False),
    Column("last_seen_at", Double, nullable=False),
    PrimaryKeyConstraint("agent_id", "instance_id"),
)

alert_states = Table(
    "alert_states",
    metadata,
    Column("agent_id", String(64), ForeignKey("agents.agent_id"), nullable=False),
    Column("rule", Text, nullable=False),
    # The AlertKey's label pairs in their own order, so a loaded key equals the saved one.
    Column("labels_json", Text, nullable=False),
    Column("phase", String(16), nullable=False),
    Column("active_since", Double, nullable=False),
    Column("firing_since", Double, nullable=True),
    Column("clear_since", Double, nullable=True),
    Column("value", Double, nullable=False),
    Column("last_eval", Double, nullable=False),
    PrimaryKeyConstraint("agent_id", "rule", "labels_json"),
    CheckConstraint("phase IN ('pending', 'firing')", name="phase"),
)

tickets = Table(
    "tickets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("problem_key", String(64), nullable=False),
    Column("customer", Text, nullable=False),
    Column("agent_id", String(64), ForeignKey("agents.agent_id"), nullable=False),
    Column("hostname", Text, nullable=False),
    Column("rule", Text, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("tier", Integer, nullable=False),
    Column("summary", Text, nullable=False),
    Column("runbook", Text, nullable=True),
    Column("value", Double, nullable=False),
    Column("threshold", Double, nullable=True),
    Column("context", JSON, nullable=False),
    Column("opened_at", Double, nullable=False),
    Column("tier_since", Double, nullable=False),
    Column("acknowledged_at", Double, nullable=True),
    Column("acknowledged_by", Text, nullable=True),
    Column("resolved_at", Double, nullable=True),
    Column("resolved_by", Text, nullable=True),
    Column("resolved_value", Double, nullable=True),
    Column("resolve_reason", Text, nullable=True),
    Column("reopen_count", Integer, nullable=False, default=0),
    Column("flapping", Boolean, nullable=False, default=False),
    Column("updated_at", Double, nullable=False),
    Column("event_seq", Integer, nullable=False, default=0),
    CheckConstraint("status IN ('open', 'acknowledged', 'resolved')", name="status"),
    CheckConstraint("tier BETWEEN 1 AND 3", name="tier"),
)

# The database, not process memory, holds "one actionable ticket per problem": two
# collectors racing to open the same problem cannot both succeed.
Index(
    "uq_tickets_active_problem",
    tickets.c.problem_key,
    unique=True,
    sqlite_where=tickets.c.status != "resolved",
    postgresql_where=tickets.c.status != "resolved",
)
Index("ix_tickets_problem_resolved", tickets.c.problem_key, tickets.c.resolved_at)
Index("ix_tickets_status_customer", tickets.c.status, tickets.c.customer)

ticket_events = Table(
    "ticket_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ticket_id", Integer, ForeignKey("tickets.id", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("at", Double, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("actor", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("data", JSON, nullable=False),
    UniqueConstraint("ticket_id", "seq"),
    CheckConstraint(
        "kind IN ('opened', 'reopened', 'escalated', 'acknowledged', 'commented', "
        "'resolved', 'flapping')",
        name="kind",
    ),
)
Index("ix_ticket_events_kind_at", ticket_events.c.kind, ticket_events.c.at)
