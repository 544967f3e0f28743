"""The agent's durable buffer: reports wait here until the collector acknowledges them.

One SQLite file in WAL mode with synchronous=FULL, so a report `append` has returned for
survives a crash or power loss, and every change is one transaction, so a SIGKILL at any
point leaves either the old state or the new one. Seqs are allocated from a persisted
counter, never from the table, so they are not reused after acks, drops or restarts.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tripline.common import files
from tripline.common.config import ConfigError

DEFAULT_MAX_BYTES = 64 * 2**20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    instance_id TEXT NOT NULL,
    last_seq INTEGER NOT NULL,
    dropped_total INTEGER NOT NULL,
    total_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    seq INTEGER PRIMARY KEY,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class SpoolStats:
    reports: int
    bytes: int
    oldest_seq: int | None
    newest_seq: int | None
    dropped_total: int


class SpoolError(Exception):
    """The spool file cannot be used (corrupt, not a database, unreadable)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"spool {path}: {reason}")
        self.path = path
        self.reason = reason


class Spool:
    """Reports keyed by seq, oldest dropped first when over `max_bytes`.

    Not for concurrent use, but safe to hand from one thread to another.
    """

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only before SQLite opens it: it would create the file 0644 minus the
            # umask, and it gives the -wal and -shm files the database file's mode.
            files.private_database(path, "spool")
            # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE), so
            # the write lock is taken before reading the counters they update.
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except ConfigError as e:
            raise SpoolError(path, e.reason) from e
        except (OSError, sqlite3.Error) as e:
            raise SpoolError(path, str(e)) from e
        try:
            self.instance_id = self._open()
        except sqlite3.Error as e:
            self._db.close()
            raise SpoolError(path, str(e)) from e

    def _open(self) -> str:
        db = self._db
        db.execute("PRAGMA busy_timeout = 5000")
        # Corruption shows up here rather than as a failed ack hours later.
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {check}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.DatabaseError(f"cannot switch to WAL (journal_mode={mode})")
        # FULL syncs the WAL on every commit: an acknowledged append survives power loss.
        db.execute("PRAGMA synchronous = FULL")
        with self._transaction():
            # executescript would COMMIT first; statements one by one stay in the transaction.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            row = db.execute("SELECT instance_id FROM spool_state WHERE id = 1").fetchone()
            if row is not None:
                return str(row[0])
            instance_id = uuid.uuid4().hex
            db.execute(
                "INSERT INTO spool_state VALUES (1, ?, 0, 0, 0)",
                (instance_id,),
            )
            return instance_id

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:  # SQLite already rolled back after some errors
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def append(self, build: Callable[[int, int], bytes]) -> int:
        """Store `build(seq, dropped_total)` under the next seq and return the seq.

        Then drops the oldest reports while the spool is over `max_bytes` (never the one
        just written); those drops show in the dropped_total the next append receives.
        If `build` raises, nothing is stored and the seq is not used.
        """
        with self._lock, self._guard(), self._transaction() as db:
            last_seq, dropped, total = db.execute(
                "SELECT last_seq, dropped_total, total_bytes FROM spool_state WHERE id = 1"
            ).fetchone()
            seq = last_seq + 1
            payload = build(seq, dropped)
            db.execute(
                "INSERT INTO reports (seq, size, payload) VALUES (?, ?, ?)",
                (seq, len(payload), payload),
            )
            total += len(payload)
            if total > self.max_bytes:
                victims = db.execute(
                    "SELECT seq, size FROM reports WHERE seq < ? ORDER BY seq", (seq,)
                )
                cut_seq = None
                for old_seq, size in victims:
                    if total <= self.max_bytes:
                        break
                    total -= size
                    dropped += 1
                    cut_seq = old_seq
                if cut_seq is not None:
                    db.execute("DELETE FROM reports WHERE seq <= ?", (cut_seq,))
            db.execute(
                "UPDATE spool_state SET last_seq = ?, dropped_total = ?, total_bytes = ? "
                "WHERE id = 1",
                (seq, dropped, total),
            )
            return int(seq)

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[tuple[int, bytes]]:
        """Up to `limit` stored reports with seq > `after_seq`, ascending."""
        with self._lock, self._guard():
            rows = self._db.execute(
                "SELECT seq, payload FROM reports WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [(int(seq), bytes(payload)) for seq, payload in rows]

    def ack(self, seq: int) -> int:
        """Delete every report with seq <= `seq`; return how many were deleted.

        Not synced to disk by itself (no fsync; the next `append`'s sync carries it): an
        ack lost to a power cut only means resending reports the collector has already
        applied, which it drops by seq. So an ack is a small write, fit for the event loop.
        """
        with self._lock, self._guard():
            self._db.execute("PRAGMA synchronous = NORMAL")
            try:
                with self._transaction() as db:
                    count, size = db.execute(
                        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM reports WHERE seq <= ?",
                        (seq,),
                    ).fetchone()
                    if count:
                        db.execute("DELETE FROM reports WHERE seq <= ?", (seq,))
                        db.execute(
                            "UPDATE spool_state SET total_bytes = total_bytes - ? WHERE id = 1",
                            (size,),
                        )
            finally:
                # appends stay FULL: a report append returned for survives a power cut
                self._db.execute("PRAGMA synchronous = FULL")
            return int(count)

    def stats(self) -> SpoolStats:
        with self._lock, self._guard():
            count, oldest, newest = self._db.execute(
                "SELECT COUNT(*), MIN(seq), MAX(seq) FROM reports"
            ).fetchone()
            total, dropped = self._db.execute(
                "SELECT total_bytes, dropped_total FROM spool_state WHERE id = 1"
            ).fetchone()
        return SpoolStats(
            reports=int(count),
            bytes=int(total),
            oldest_seq=oldest,
            newest_seq=newest,
            dropped_total=int(dropped),
        )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as e:
            raise SpoolError(self.path, str(e)) from e
