"""The collector's tables, as SQLAlchemy Core metadata (SQLite and PostgreSQL alike).

Times are unix seconds as floats, always passed in by the caller. JSON columns hold plain
dicts and lists. Migration 1 creates these tables as they are defined here; see
`collector.migrations` for what a later change to a table must do.
"""

from __future__ import annotations

import hashlib
from typing import Any

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
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import CreateIndex
from sqlalchemy.sql.compiler import DDLCompiler


def secret_hash(secret: str) -> str:
    """What a `token_hash` or `credential_hash` column holds for `secret` (hex SHA-256)."""
    return hashlib.sha256(secret.encode()).hexdigest()


@compiles(CreateIndex, "postgresql")
def _partial_on_postgresql(create: CreateIndex, compiler: DDLCompiler, **kw: Any) -> str:
    """A partial index's predicate is declared once, as `sqlite_where`; PostgreSQL gets the
    same WHERE. Declaring `postgresql_where=` instead makes SQLAlchemy load its PostgreSQL
    dialect (~0.02 s) at import to check the argument, in every process: also
    `tripline tickets list` on a SQLite store (bench/README.md, "command start time").
    Read from the index when its DDL is compiled, so copies (the version-1 tables of
    migrations.py) get it too."""
    sql: str = compiler.visit_create_index(create, **kw)  # type: ignore[no-untyped-call]
    where = create.element.dialect_options["sqlite"]["where"]
    if where is None:
        return sql
    # as PostgreSQL's own compiler renders `postgresql_where`
    predicate = compiler.sql_compiler.process(where, include_table=False, literal_binds=True)
    return f"{sql} WHERE {predicate}"


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
    # agents (not revoked) it may enroll; None: no limit (migration 2)
    Column("max_agents", Integer, nullable=True),
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
    # The last applied report's time on the agent's clock, and the collector time it was
    # taken as: the next report of the instance may not go back before them (migration 2).
    Column("last_collected_at", Double, nullable=True),
    Column("last_report_at", Double, nullable=True),
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
    sqlite_where=tickets.c.status != "resolved",  # partial on PostgreSQL too: see below
)
Index("ix_tickets_problem_resolved", tickets.c.problem_key, tickets.c.resolved_at)
Index("ix_tickets_status_customer", tickets.c.status, tickets.c.customer)

# Indexes for a ticket's "previously": resolved tickets of its rule on its PC, else
# its customer, newest first (migration 5).
Index("ix_tickets_agent_rule_resolved", tickets.c.agent_id, tickets.c.rule, tickets.c.resolved_at)
Index(
    "ix_tickets_customer_rule_resolved", tickets.c.customer, tickets.c.rule, tickets.c.resolved_at
)

# The diagnostic snapshot the agent took while the ticket's problem held (migration 5):
# one per ticket; a reopen replaces it. `taken_at` is the collector's clock on arrival.
ticket_snapshots = Table(
    "ticket_snapshots",
    metadata,
    Column(
        "ticket_id",
        Integer,
        ForeignKey("tickets.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("taken_at", Double, nullable=False),
    Column("snapshot", JSON, nullable=False),
)

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

# The outbox is ticket_events itself: a delivery route records each event it has handled,
# so an event is delivered at least once, across restarts, in order per ticket.
delivery_routes = Table(
    "delivery_routes",
    metadata,
    Column("route", String(128), primary_key=True),
    # events up to this id existed before the route did: a new route gets no history
    Column("first_event_id", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("route", String(128), nullable=False),
    Column("event_id", Integer, ForeignKey("ticket_events.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("at", Double, nullable=False),
    Column("error", Text, nullable=True),
    PrimaryKeyConstraint("route", "event_id"),
    CheckConstraint("status IN ('delivered', 'failed', 'skipped')", name="status"),
)

# Events a route gave up on after its retries (collector.delivery). A parked event has no
# row in `deliveries`, so an operator's retry (deleting the row here) makes it pending again.
delivery_parked = Table(
    "delivery_parked",
    metadata,
    Column("route", String(128), nullable=False),
    Column("event_id", Integer, ForeignKey("ticket_events.id", ondelete="CASCADE"), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("parked_at", Double, nullable=False),
    Column("error", Text, nullable=False),
    PrimaryKeyConstraint("route", "event_id"),
)

# Which collector drains a route, until when: collectors sharing one PostgreSQL take turns
# per route, so each event is sent by one of them and in order per ticket (a lease, not
# row locks: a lock held across an HTTP call would pin a connection per route).
delivery_leases = Table(
    "delivery_leases",
    metadata,
    Column("route", String(128), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("expires_at", Double, nullable=False),
)

# Operators' HTTP API tokens (collector.apitokens). The secret is stored as its sha256 only;
# `customers` is a JSON list of the customers the token may see, NULL for all of them.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    # the actor recorded for the token's writes, so unique for good (revoked ones too)
    Column("name", String(128), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("customers", JSON, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("revoked_at", Double, nullable=True),
)

# Every write made through the API or to API tokens, with who made it.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", Double, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", Text, nullable=False),
    # the customer the object belongs to; NULL for objects of no customer (API tokens)
    Column("customer", Text, nullable=True),
    Column("data", JSON, nullable=False),
)
Index("ix_audit_log_at", audit_log.c.at)

# Scope columns left NULL match anything; a window has at least one. `kind` says which
# schedule columns apply: once (starts_at, ends_at), weekly (spec, timezone) or cron
# (spec, duration, timezone). See alerts.calendar.
maintenance_windows = Table(
    "maintenance_windows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("customer", Text, nullable=True, index=True),
    Column("site", Text, nullable=True),
    Column("agent_id", String(64), nullable=True),
    Column("rule", Text, nullable=True),
    Column("kind", String(16), nullable=False),
    Column("starts_at", Double, nullable=True),
    Column("ends_at", Double, nullable=True),
    Column("spec", Text, nullable=True),
    Column("duration", Double, nullable=True),
    Column("timezone", Text, nullable=True),
    Column("comment", Text, nullable=False, default=""),
    Column("created_at", Double, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
    CheckConstraint("kind IN ('once', 'weekly', 'cron')", name="kind"),
)

# Alerts a maintenance window held back: no ticket, nothing sent. A row is pending until
# the alert clears (cleared_at) or outlives every matching window and opens its ticket
# (released_at, ticket_id). window_id has no foreign key: deleting a window keeps the record.
suppressed_alerts = Table(
    "suppressed_alerts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("problem_key", String(64), nullable=False),
    Column("window_id", Integer, nullable=False, index=True),
    Column("customer", Text, nullable=False),
    Column("agent_id", String(64), ForeignKey("agents.agent_id"), nullable=False),
    Column("hostname", Text, nullable=False),
    Column("rule", Text, nullable=False),
    Column("labels", JSON, nullable=False),
    Column("value", Double, nullable=False),
    Column("severity", String(16), nullable=False),
    Column("tier", Integer, nullable=False),
    Column("summary", Text, nullable=False),
    Column("runbook", Text, nullable=True),
    Column("threshold", Double, nullable=True),
    Column("suppressed_at", Double, nullable=False),
    Column("cleared_at", Double, nullable=True),
    Column("released_at", Double, nullable=True),
    Column("ticket_id", Integer, ForeignKey("tickets.id"), nullable=True),
)
# One pending record per problem, whichever collector suppressed it.
Index(
    "uq_suppressed_alerts_pending",
    suppressed_alerts.c.problem_key,
    unique=True,
    sqlite_where=(suppressed_alerts.c.cleared_at.is_(None))
    & (suppressed_alerts.c.released_at.is_(None)),
)
Index(
    "ix_suppressed_alerts_agent_at", suppressed_alerts.c.agent_id, suppressed_alerts.c.suppressed_at
)

# One row (id 1) the collector rewrites while the store refuses writes, to find out when
# it takes them again without waiting for an agent's report (migration 2).
store_probe = Table(
    "store_probe",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("written_at", Double, nullable=False),
    Column("writes", Integer, nullable=False),
)

# What the service report (collector.report) needs beyond latest values, written by
# collector.history from the apply path (migration 5).
#
# Spans of time an agent was reporting, on the collector's clock: a span grows while
# reports keep coming (its end written at most every few minutes) and a new one starts
# after a silence longer than offline_after or when the PC's boot time changes (a reboot).
agent_presence = Table(
    "agent_presence",
    metadata,
    Column("agent_id", String(64), ForeignKey("agents.agent_id"), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("ended_at", Double, nullable=False),
    # boot_time_seconds as the agent reported it at the span's start (its own clock)
    Column("boot_time", Double, nullable=True),
    PrimaryKeyConstraint("agent_id", "started_at"),
)

# One usage sample per agent, mountpoint and UTC day (the latest of that day, rewritten at
# most hourly), kept for FS_USAGE_DAYS days: enough to fit a growth rate per filesystem.
filesystem_usage = Table(
    "filesystem_usage",
    metadata,
    Column("agent_id", String(64), ForeignKey("agents.agent_id"), nullable=False),
    Column("mountpoint", Text, nullable=False),
    Column("day", Integer, nullable=False),  # unix time // 86400
    Column("sampled_at", Double, nullable=False),
    Column("size_bytes", Double, nullable=False),
    Column("used_bytes", Double, nullable=False),
    PrimaryKeyConstraint("agent_id", "mountpoint", "day"),
)
