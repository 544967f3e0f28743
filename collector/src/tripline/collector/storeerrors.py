"""The store's named errors: the base every storage module's errors derive from, and the
outages (locked, read-only, full, unreachable, file gone, corrupt) any transaction may meet.

Their own module so the per-table storage modules (`enrollment`, `agents_store`, ...) can
derive from `StoreError` without importing the engine in `store`.
"""

from __future__ import annotations

from pathlib import Path


class StoreError(Exception):
    """Base of the store's named errors."""


class StoreUnavailable(StoreError):
    """The database is locked, read-only, full or unreachable: answer UNAVAILABLE, retry later."""


class StoreContended(StoreUnavailable):
    """The write lock stayed busy past the busy timeout while other writers kept
    committing (another worker of ``--workers N`` at saturation): back-pressure, not an
    outage. The store stays healthy; retry (the committer does)."""


class StoreFileGone(StoreUnavailable):
    """The SQLite file was deleted or replaced under the running collector. Nothing more is
    committed (it would go into a file nobody will ever read) until the original file is
    back at its path; reports are answered UNAVAILABLE and stay in the agents' spools."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"{detail} while the collector had it open: {path}. Nothing more is written or "
            f"acknowledged; stop the collector, put the database back at that path (from "
            f"your backup, or move the original file back), then start the collector again"
        )
        self.path = path


class StoreCorrupt(StoreUnavailable):
    """The SQLite file is damaged or is not a SQLite database at all."""

    def __init__(self, path: Path | None, detail: str) -> None:
        where = str(path) if path is not None else "the database"
        super().__init__(
            f"database {where} is corrupt or not a Tripline database ({detail}): restore it "
            f"from a backup, or salvage it with `sqlite3 {where} .recover | sqlite3 "
            f"{where}.recovered` and start the collector on the recovered file"
        )
        self.path = path
