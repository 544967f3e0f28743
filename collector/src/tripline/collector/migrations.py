"""Versioned schema migrations, applied in order, each in its own transaction.

Migration 1 creates the tables from `collector.schema` as they stand. The day a later
migration alters a table, migration 1 must keep creating the version-1 shape (copy those
table definitions here first), or a fresh database would get the change twice; the
test comparing a migrated database with `schema.metadata` catches the mismatch.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
    text,
)

from tripline.collector import schema

Progress = Callable[[str], None]

# Arbitrary constant; serializes migrating collectors that share one PostgreSQL.
_PG_MIGRATION_LOCK = 0x7472_6970_6C69_6E65 & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


class MigrationError(Exception):
    """The database's schema cannot be brought to the version this code knows."""


class DatabaseTooNew(MigrationError):
    def __init__(self, db_version: int, code_version: int) -> None:
        super().__init__(
            f"database schema is at version {db_version}, but this Tripline knows only up to "
            f"version {code_version}: upgrade Tripline, or point it at another database"
        )
        self.db_version = db_version
        self.code_version = code_version


class InvalidMigrationList(MigrationError):
    def __init__(self, versions: Sequence[int]) -> None:
        super().__init__(f"migration versions must be 1, 2, 3... in order; got {list(versions)}")
        self.versions = list(versions)


# Tables a later migration creates: migration 1 leaves them out.
_LATER_TABLES = frozenset(
    {
        "store_probe",
        "delivery_parked",
        "delivery_leases",
        "agent_presence",
        "filesystem_usage",
        "ticket_snapshots",
    }
)
# Indexes a later migration adds to a version-1 table: left out of its copy.
_LATER_INDEXES = frozenset({"ix_tickets_agent_rule_resolved", "ix_tickets_customer_rule_resolved"})


@functools.cache
def _v1() -> MetaData:
    """Version-1 shapes of the tables later migrations alter (see the module docstring),
    and the other tables as they stand. Built on first use, not at import: only a fresh
    database needs it, and copying every table costs each `tripline` command's start."""
    v1 = MetaData(naming_convention=schema.metadata.naming_convention)
    Table(
        "enrollment_tokens",
        v1,
        Column("id", Integer, primary_key=True),
        Column("customer", Text, nullable=False, index=True),
        Column("token_hash", String(64), nullable=False, unique=True),
        Column("created_at", Double, nullable=False),
        Column("expires_at", Double, nullable=True),
        Column("revoked_at", Double, nullable=True),
    )
    Table(
        "agent_instances",
        v1,
        Column("agent_id", String(64), ForeignKey("agents.agent_id"), nullable=False),
        Column("instance_id", Text, nullable=False),
        Column("applied_seq", BigInteger, nullable=False),
        Column("reports_applied", BigInteger, nullable=False, default=0),
        Column("dropped_reports_total", BigInteger, nullable=False, default=0),
        Column("first_seen_at", Double, nullable=False),
        Column("last_seen_at", Double, nullable=False),
        PrimaryKeyConstraint("agent_id", "instance_id"),
    )
    for table in schema.metadata.sorted_tables:
        if table.name not in v1.tables and table.name not in _LATER_TABLES:
            copy = table.to_metadata(v1)
            for index in [i for i in copy.indexes if i.name in _LATER_INDEXES]:
                copy.indexes.discard(index)
    return v1


def _create_v1(conn: Connection) -> None:
    _v1().create_all(conn)


def _create_store_probe(conn: Connection) -> None:
    schema.store_probe.create(conn)
    conn.execute(schema.store_probe.insert().values(id=1, written_at=0.0, writes=0))


def _create_delivery_tables(conn: Connection) -> None:
    tables = [schema.delivery_parked, schema.delivery_leases]
    schema.metadata.create_all(conn, tables=tables, checkfirst=True)


def _add_columns(conn: Connection, table: str, *names: str) -> None:
    """ALTER TABLE ADD COLUMN for nullable columns as `collector.schema` defines them."""
    for name in names:
        column = schema.metadata.tables[table].c[name]
        kind = column.type.compile(dialect=conn.dialect)
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))


def _create_report_history(conn: Connection) -> None:
    tables = [schema.agent_presence, schema.filesystem_usage]
    schema.metadata.create_all(conn, tables=tables, checkfirst=True)


def _token_limits_and_report_times(conn: Connection) -> None:
    _add_columns(conn, "enrollment_tokens", "max_agents")
    _add_columns(conn, "agent_instances", "last_collected_at", "last_report_at")


def _ticket_snapshots_and_history(conn: Connection) -> None:
    schema.ticket_snapshots.create(conn)
    for index in schema.tickets.indexes:
        if index.name in _LATER_INDEXES:
            index.create(conn)


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create agents, enrollment, alert state and ticket tables", _create_v1),
    Migration(2, "create the store_probe table (health checks write it)", _create_store_probe),
    Migration(3, "delivery: parked events and per-route leases", _create_delivery_tables),
    Migration(
        4,
        "enrollment token agent limit; last report times per agent instance",
        _token_limits_and_report_times,
    ),
    Migration(
        5,
        "service report history: agent presence spans, daily filesystem usage",
        _create_report_history,
    ),
    Migration(
        6,
        "ticket snapshots; indexes for a ticket's previous tickets of its rule",
        _ticket_snapshots_and_history,
    ),
)


def current_version(conn: Connection) -> int:
    """The highest applied migration, 0 for an empty database."""
    if not inspect(conn).has_table(schema.schema_migrations.name):
        return 0
    return int(conn.scalar(select(func.max(schema.schema_migrations.c.version))) or 0)


def migrate(
    engine: Engine,
    progress: Progress | None = None,
    *,
    migrations: Sequence[Migration] = MIGRATIONS,
    now: float | None = None,
) -> int:
    """Apply the pending migrations in order and return the resulting version.

    Use an engine from `collector.database.make_engine`: on SQLite its hooks make each
    transaction (DDL included) real and take the write lock at BEGIN. Several processes may
    migrate at once; each step re-reads the version under the lock and skips what another
    process applied. `now` stamps `applied_at` (the wall clock when omitted: it is a record
    for people, nothing reads it back).
    """
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise InvalidMigrationList(versions)
    latest = len(migrations)
    with engine.connect() as conn:
        found = current_version(conn)
    if found > latest:
        raise DatabaseTooNew(found, latest)
    for step in migrations[found:]:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            if current_version(conn) >= step.version:
                continue
            if progress is not None:
                progress(f"migration {step.version}/{latest}: {step.description}")
            step.apply(conn)
            conn.execute(
                schema.schema_migrations.insert().values(
                    version=step.version,
                    description=step.description,
                    applied_at=time.time() if now is None else now,
                )
            )
    return latest
