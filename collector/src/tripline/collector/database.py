"""SQLAlchemy engines for the store: SQLite tuned for a collector, PostgreSQL as given.

Knows connections, not tables: `collector.store` and `collector.migrations` build on it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

READ_ONLY = "tripline_read_only"
WRITES = "tripline_rows_written"
"""Key in a DBAPI connection's `info`: statements that changed rows on it, ever (see
`rows_written`)."""
"""Execution option: on SQLite, begin a deferred (reading) transaction, not an IMMEDIATE one."""

# SQLite primary result codes meaning "the database cannot take this now": busy, locked,
# out of memory, read-only, I/O error, full, cannot open, lock protocol.
_SQLITE_OUTAGE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
# SQLITE_BUSY and SQLITE_LOCKED: another connection holds the lock (the busy timeout ran out).
_SQLITE_BUSY_CODES = frozenset({5, 6})
# "database disk image is malformed" and "file is not a database".
_SQLITE_CORRUPT_CODES = frozenset({11, 26})
# How often a writer waiting for the write lock tries again. SQLite's own busy handler
# sleeps 1, 2, 5 ... ms and then 100 ms between tries: against another process that
# commits every few tens of ms (the other workers of --workers N, one commit per tick)
# the waiter keeps missing the gaps and can wait out the whole busy timeout while the
# other commits dozens of times. Trying every millisecond takes the first gap.
WRITE_LOCK_POLL = 0.001


class DatabaseFileChanged(Exception):
    """The SQLite file at the configured path is no longer the one this process opened
    (deleted, or replaced by another file): nothing more may be written through it."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


class SqliteFile:
    """The identity (device, inode) of a store's SQLite file, taken at the first connection.

    A file deleted under a running process stays readable and writable through the
    descriptors already open, so SQLite commits into it without an error: only comparing
    what the path names now with what was opened tells the data is going nowhere.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def _now(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def before_connect(self) -> None:
        """Refuse to open a path whose file is gone or replaced: SQLite would create an
        empty database there, and a restart would then find a store without its agents."""
        with self._lock:
            if self._identity is None:
                return
        self.check()

    def remember(self) -> None:
        with self._lock:
            if self._identity is None:
                self._identity = self._now()

    def write_mark(self) -> tuple[int, int, int] | None:
        """Changes whenever any connection writes the database (WAL mode: every commit
        appends to, or restarts, the ``-wal`` file); None while there is no WAL file.
        Compared before and after a wait for the write lock, it tells a lock held by
        writers that keep committing (contention) from one held by a writer that is
        stuck or gone (an outage)."""
        try:
            st = os.stat(f"{self.path}-wal")
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def check(self) -> None:
        """Raise DatabaseFileChanged unless the path still names the file first opened."""
        with self._lock:
            expected = self._identity
        if expected is None:
            return
        found = self._now()
        if found is None:
            raise DatabaseFileChanged(self.path, "the database file was deleted")
        if found != expected:
            raise DatabaseFileChanged(self.path, "the database file was replaced by another file")


def sqlite_file(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other backends and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if database in (None, "", ":memory:"):
        return None
    if database.startswith("file:"):  # URI form: file:path?mode=ro
        database = database[len("file:") :].partition("?")[0]
    return Path(database).absolute()


def _sqlite_cause(
    error: BaseException, codes: frozenset[int], kind: type[sqlite3.Error]
) -> sqlite3.Error | None:
    """The SQLite error of `kind` with a primary result code in `codes` behind `error`
    (SQLAlchemy's wrapper, or anywhere in its chain of causes), if any."""
    seen: BaseException | None = error
    while seen is not None:
        orig = seen.orig if isinstance(seen, exc.DBAPIError) else seen
        if isinstance(orig, kind):
            code = getattr(orig, "sqlite_errorcode", None)
            if code is not None and (code & 0xFF) in codes:
                return orig
        seen = seen.__cause__ or seen.__context__
    return None


def is_corruption(error: BaseException) -> sqlite3.Error | None:
    """The SQLite "corrupt" or "not a database" error behind `error`, if any."""
    return _sqlite_cause(error, _SQLITE_CORRUPT_CODES, sqlite3.Error)


def is_busy(error: BaseException) -> bool:
    """Whether `error` comes from SQLite's busy timeout running out on a held lock."""
    return _sqlite_cause(error, _SQLITE_BUSY_CODES, sqlite3.OperationalError) is not None


def rows_written(conn: Connection) -> int:
    """How many statements have changed rows on this connection's DBAPI connection; the
    difference across a transaction tells whether it carried real work."""
    return int(conn.connection.info.get(WRITES, 0))


def _count_writes(engine: Engine) -> None:
    @event.listens_for(engine, "after_cursor_execute")
    def _after(
        conn: Connection, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        dml = context is not None and (context.isinsert or context.isupdate or context.isdelete)
        # rowcount -1 (unknown) counts too: better once too often than never.
        if dml and cursor.rowcount != 0:
            info = conn.connection.info
            info[WRITES] = info.get(WRITES, 0) + 1


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


def make_engine(
    url: str,
    *,
    busy_timeout: float = 5.0,
    file: SqliteFile | None = None,
    on_lock_wait: Callable[[float], None] | None = None,
) -> Engine:
    """An engine whose SQLite connections are WAL, foreign-keyed and truly transactional
    (DDL included), taking the write lock at BEGIN unless the READ_ONLY option is set.

    Every engine counts the statements that changed rows (`rows_written`). Given `file`,
    a SQLite engine remembers the file's identity at its first connection and refuses to
    open a new connection once the path names another file or none. Given
    `on_lock_wait`, a SQLite engine reports the seconds each write transaction waited for
    the write lock (0 when it was free): the cost of sharing the file with other writers.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        pg = create_engine(url, pool_pre_ping=True)
        _count_writes(pg)
        return pg
    memory = parsed.database in (None, "", ":memory:")
    options: dict[str, Any] = {"poolclass": StaticPool} if memory else {}
    engine = create_engine(
        url, connect_args={"timeout": busy_timeout, "check_same_thread": False}, **options
    )
    _count_writes(engine)

    if file is not None:
        guard = file

        @event.listens_for(engine, "do_connect")
        def _before_open(_dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> None:
            guard.before_connect()

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
        if file is not None:
            file.remember()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # IMMEDIATE takes the write lock at BEGIN: a deferred transaction that reads and
        # then writes can fail with SQLITE_BUSY at once, whatever the busy timeout.
        if conn.get_execution_options().get(READ_ONLY, False):
            conn.exec_driver_sql("BEGIN")
        elif memory:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # one connection: never busy
        else:
            waited = begin_immediate(conn, busy_timeout)
            if on_lock_wait is not None:
                on_lock_wait(waited)

    return engine


def begin_immediate(
    conn: Connection,
    timeout: float,
    *,
    poll: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> float:
    """BEGIN IMMEDIATE on a SQLite connection, trying for the write lock every `poll`
    seconds (default: WRITE_LOCK_POLL, read at each call) until `timeout`; then raises SQLAlchemy's
    OperationalError "database is locked", as SQLite's own busy timeout would. Returns
    the seconds it waited for the lock."""
    raw = conn.connection.driver_connection
    assert isinstance(raw, sqlite3.Connection)
    started = clock()
    deadline = started + timeout
    interval = WRITE_LOCK_POLL if poll is None else poll
    # SQLite's handler off for BEGIN only: reads and COMMIT keep the configured timeout.
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        while clock() < deadline:
            try:
                raw.execute("BEGIN IMMEDIATE")
                return clock() - started
            except sqlite3.OperationalError as error:
                if not is_busy(error):
                    break  # tried again below, to raise it as SQLAlchemy does
            sleep(interval)
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the last try, raising as SQLAlchemy does
        return clock() - started
    finally:
        raw.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")


def insert_ignoring_conflict(conn: Connection, table: Any, **values: Any) -> int:
    """INSERT that does nothing when the key exists (another collector got there first);
    returns the number of rows inserted. A conflict must never kill a delivery loop."""
    if conn.dialect.name == "postgresql":
        # Imported here: the engine has loaded this dialect; a SQLite process never needs it.
        from sqlalchemy.dialects import postgresql

        stmt: Any = postgresql.insert(table).values(**values).on_conflict_do_nothing()
    else:
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
    return int(conn.execute(stmt).rowcount or 0)
