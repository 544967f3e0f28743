"""The collector's database: the engine, its health, transactions and migrations.

One SQLite file (WAL) by default, PostgreSQL by URL. What is stored lives in one module
per table family, as free functions over a connection from `Store.transaction()` (writes)
or `Store.read()` (a snapshot): `enrollment`, `agents_store`, `agent_instances`,
`alert_states`, `tickets`, `maintenance`, `suppression`, `apitokens`, `delivery_parking`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Connection, Engine, exc

from tripline.collector import migrations
from tripline.collector.agent_instances import InstancePosition, SeqAlreadyApplied
from tripline.collector.agents_store import AgentRecord, AgentRevoked
from tripline.collector.database import (
    READ_ONLY,
    DatabaseFileChanged,
    SqliteFile,
    find_outage,
    is_busy,
    is_corruption,
    make_engine,
    rows_written,
    sqlite_file,
)
from tripline.collector.enrollment import EnrollmentRefused
from tripline.collector.schema import store_probe
from tripline.collector.storeerrors import (
    StoreContended,
    StoreCorrupt,
    StoreError,
    StoreFileGone,
    StoreUnavailable,
)

# The store's errors are imported from here by most callers; the record types and errors
# of the table modules below stay importable from here for callers not yet moved to them.
__all__ = [
    "AgentRecord",
    "AgentRevoked",
    "EnrollmentRefused",
    "InstancePosition",
    "SeqAlreadyApplied",
    "Store",
    "StoreContended",
    "StoreCorrupt",
    "StoreError",
    "StoreFileGone",
    "StoreHealth",
    "StoreUnavailable",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreHealth:
    """Whether the store takes writes, as last shown by a transaction that wrote.

    A transaction that changed no rows proves nothing (SQLite commits it without touching
    the file, even on a full disk), so only failed transactions and transactions that
    wrote rows move the state. Each transition is logged once, with the reason; a caller
    may watch them through `on_change(healthy, reason)`, called in the thread that saw it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.healthy = True
        self.reason = "ready"
        self.on_change: Callable[[bool, str], None] = lambda healthy, reason: None

    def wrote(self) -> None:
        with self._lock:
            if self.healthy:
                return
            self.healthy, was, self.reason = True, self.reason, "ready"
        log.info("store writable again", extra={"was": was})
        self.on_change(True, "ready")

    def failed(self, error: StoreUnavailable) -> None:
        reason = f"store unavailable: {error}"
        with self._lock:
            if not self.healthy and self.reason == reason:
                return
            changed = self.healthy
            self.healthy, self.reason = False, reason
        if isinstance(error, StoreFileGone | StoreCorrupt):
            log.error("store refuses writes", extra={"reason": reason})
        elif changed:
            log.warning("store refuses writes", extra={"reason": reason})
        else:
            return  # another outage of the same kind with a new message: not a transition
        self.on_change(False, reason)


class Store:
    """The database behind a small interface: `transaction()` to write, `read()` for a
    snapshot; the table modules' functions run on the connection either gives."""

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 5.0,
        on_lock_wait: Callable[[float], None] | None = None,
    ) -> None:
        """``on_lock_wait``: told how long each SQLite write transaction waited for the
        write lock (see `database.make_engine`)."""
        path = sqlite_file(url)
        self.file = SqliteFile(path) if path is not None else None
        self._engine = make_engine(
            url, busy_timeout=busy_timeout, file=self.file, on_lock_wait=on_lock_wait
        )
        self.health = StoreHealth()

    @property
    def engine(self) -> Engine:
        return self._engine

    def migrate(self, progress: migrations.Progress | None = None) -> None:
        with self._unavailable_on_outage():
            migrations.migrate(self._engine, progress)

    @contextmanager
    def _unavailable_on_outage(self) -> Iterator[None]:
        try:
            yield
        except DatabaseFileChanged as error:
            raise StoreFileGone(error.path, error.detail.capitalize()) from error
        except exc.TimeoutError as error:
            raise StoreUnavailable(f"database unavailable: {error}") from error
        except exc.SQLAlchemyError as error:
            corrupt = is_corruption(error)
            if corrupt is not None:
                path = self.file.path if self.file is not None else None
                raise StoreCorrupt(path, str(corrupt)) from error
            outage = find_outage(error)
            if outage is None:
                raise
            raise StoreUnavailable(f"database unavailable: {outage.orig}") from error

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction, committed when the block ends without an exception.

        Raises StoreUnavailable (StoreFileGone, StoreCorrupt...) when it cannot commit; each
        such failure marks `health` unhealthy, and only a commit that changed rows marks it
        healthy again. Except StoreContended: the lock stayed busy while others committed.
        """
        mark = self.file.write_mark() if self.file is not None else None
        try:
            with self._unavailable_on_outage(), self._engine.connect() as conn:
                before = rows_written(conn)
                with conn.begin():
                    yield conn
                    if self.file is not None:
                        # Before COMMIT: committing into a deleted file acknowledges into the void.
                        self.file.check()
                wrote = rows_written(conn) != before
        except StoreUnavailable as error:
            others_wrote = self.file is not None and self.file.write_mark() != mark
            if mark is not None and others_wrote and is_busy(error):
                raise StoreContended(f"write lock contended: {error}") from error
            self.health.failed(error)
            raise
        if wrote:
            self.health.wrote()

    def probe(self, now: float) -> None:
        """Write one row, so that a store that refused writes can show it takes them again
        while no other work arrives; raises StoreUnavailable when it still cannot."""
        with self.transaction() as conn:
            updated = conn.execute(
                store_probe.update()
                .where(store_probe.c.id == 1)
                .values(written_at=now, writes=store_probe.c.writes + 1)
            )
            if updated.rowcount == 0:  # migration 2 inserts the row; someone deleted it
                conn.execute(store_probe.insert().values(id=1, written_at=now, writes=1))

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot; writes through it are a bug (SQLite may refuse them)."""
        with (
            self._unavailable_on_outage(),
            self._engine.connect().execution_options(**{READ_ONLY: True}) as conn,
            conn.begin(),
        ):
            yield conn

    def close(self) -> None:
        self._engine.dispose()

    def run_read(self, work: Callable[[Connection], T]) -> T:
        """`work` on a `read()` snapshot; for `asyncio.to_thread(store.run_read, ...)`."""
        with self.read() as conn:
            return work(conn)

    def run_write(self, work: Callable[[Connection], T]) -> T:
        """`work` in its own `transaction()` (not batched with others: the pipeline's
        writes go through its committer); for `asyncio.to_thread(store.run_write, ...)`."""
        with self.transaction() as conn:
            return work(conn)
