"""Owner-only directories and files for what holds secrets: the collector's data
directory and database, the agent's state directory, spool and identity.

Modes are set explicitly rather than left to the umask, so a service manager, a shell
with ``umask 000`` or a container runtime cannot widen them. A directory or file found
with group or other permissions is tightened at start, with a log line saying so.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from tripline.common.config import ConfigError

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
# SQLite creates these next to a database in WAL mode (with the database's own mode).
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")

log = logging.getLogger(__name__)


def private_dir(path: Path, key: str) -> None:
    """Create ``path`` (owner-only) if missing, else tighten it to 0700.

    Raises ConfigError naming ``key`` for a shared directory such as /tmp (sticky bit)
    or one whose mode this user may not change.
    """
    try:
        path.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        raise ConfigError(key, f"cannot create {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(key, f"{path} is not a directory")
    if info.st_mode & stat.S_ISVTX:
        raise ConfigError(
            key, f"{path} is a shared directory (sticky bit, like /tmp): use a dedicated one"
        )
    _tighten(path, info.st_mode, PRIVATE_DIR, key)


def private_file(path: Path, key: str) -> None:
    """Create ``path`` empty and owner-only if missing, else tighten it to 0600.

    Creating it first matters for SQLite: it would create the file 0644 minus the umask,
    and gives its -wal and -shm files the database file's mode.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), PRIVATE_FILE)
    except OSError as exc:
        raise ConfigError(key, f"cannot create {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    _tighten(path, info.st_mode, PRIVATE_FILE, key)


def private_database(path: Path, key: str) -> None:
    """A SQLite database file owner-only, and the side files it already has."""
    private_file(path, key)
    for suffix in SQLITE_SIDE_FILES:
        private_if_exists(path.with_name(path.name + suffix), key)


def private_if_exists(path: Path, key: str) -> None:
    """Tighten an existing file to 0600; a missing one is left missing."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(key, f"{path} is a symbolic link; expected a file")
    _tighten(path, info.st_mode, PRIVATE_FILE, key)


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL; None for other databases and memory."""
    scheme, sep, rest = url.partition(":///")
    if not sep or scheme.split("+")[0] != "sqlite":
        return None
    path = rest.split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _tighten(path: Path, mode: int, wanted: int, key: str) -> None:
    if os.name == "nt":  # Windows has ACLs, not modes; the installer sets those
        return
    current = stat.S_IMODE(mode)
    if current == wanted:
        return
    try:
        os.chmod(path, wanted)
    except OSError as exc:
        raise ConfigError(
            key, f"cannot make {path} private (mode {current:04o}): {exc.strerror}"
        ) from None
    if current & 0o077:
        log.warning(
            "tightened permissions",
            extra={"path": str(path), "mode_was": f"{current:04o}", "mode": f"{wanted:04o}"},
        )
