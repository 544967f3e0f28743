"""SQLAlchemy engines for the store: SQLite tuned for a collector, PostgreSQL as given.

Knows connections, not tables: `collector.store` and `collector.migrations` build on it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

READ_ONLY = "tripline_read_only"
"""Execution option: on SQLite, begin a deferred (reading) transaction, not an IMMEDIATE one."""

# SQLite primary result codes meaning "the database cannot take this now": busy, locked,
# out of memory, read-only, I/O error, full, cannot open, lock protocol.
_SQLITE_OUTAGE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})


def is_outage(error: exc.DBAPIError) -> bool:
    """Whether a database error means "unavailable now" rather than a bug in the caller."""
    if error.connection_invalidated:
        return True
    if not isinstance(error, exc.OperationalError):
        return False
    orig = error.orig
    if isinstance(orig, sqlite3.Error):
        # "no such table" and syntax errors are OperationalError too: those are bugs.
        code = getattr(orig, "sqlite_errorcode", None)
        return code is not None and (code & 0xFF) in _SQLITE_OUTAGE_CODES
    # psycopg keeps bugs in ProgrammingError/DataError; its OperationalError is the server
    # or the connection failing.
    return True


def find_outage(error: BaseException) -> exc.DBAPIError | None:
    """The outage behind `error`, if any, following its chain of causes.

    SQLite rolls the whole transaction back on some outages (disk full, I/O error), so
    the error that reaches the caller can be a later "no such savepoint" raised while
    unwinding; the outage is its context.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, exc.DBAPIError) and is_outage(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def make_engine(url: str, *, busy_timeout: float = 5.0) -> Engine:
    """An engine whose SQLite connections are WAL, foreign-keyed and truly transactional
    (DDL included), taking the write lock at BEGIN unless the READ_ONLY option is set."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    memory = parsed.database in (None, "", ":memory:")
    options: dict[str, Any] = {"poolclass": StaticPool} if memory else {}
    engine = create_engine(
        url, connect_args={"timeout": busy_timeout, "check_same_thread": False}, **options
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # The driver's own transaction handling skips BEGIN before DDL and cannot take the
        # write lock up front; we emit BEGIN ourselves (see _on_begin).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if not memory:
                cursor.execute("PRAGMA journal_mode = WAL")
            # FULL: a report is acknowledged only once its effects survive a power cut.
            cursor.execute("PRAGMA synchronous = FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock at BEGIN: a deferred transaction that reads and
        # then writes can fail with SQLITE_BUSY at once, whatever the busy timeout.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine
