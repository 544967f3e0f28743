"""One collector per SQLite database: an exclusive lock file held for the process's life.

`flock` on `<database>.lock`, not a SQLite-level lock: SQLite's exclusive locking mode
would also shut out the CLI (`tripline tickets`, `tokens`...), which must keep reading
and writing the same file while the collector runs. The kernel drops a flock when its
holder dies, SIGKILL included, so a crashed collector never leaves a stale lock behind;
the pid written into the file only names the holder in the refusal message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirLocked(Exception):
    """Another process holds the lock: it owns the database."""

    def __init__(self, database: Path, lock_path: Path, holder: str) -> None:
        super().__init__(
            f"another collector ({holder}) already uses the database {database} "
            f"(lock file {lock_path}): stop it first, or give this collector its own "
            f"--data-dir; two collectors on one SQLite file would each think it theirs"
        )
        self.database = database
        self.lock_path = lock_path
        self.holder = holder


def lock_path_for(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


class DataDirLock:
    """Held from `acquire` until `release` or the process's end."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.path = lock_path_for(database)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise DataDirLocked naming the holder's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataDirLocked(self.database, self.path, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            # The file stays: unlinking it would let a starting process lock a new inode
            # while another still waits on the old one.
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f"pid {text}" if text.isdigit() else "pid unknown"
