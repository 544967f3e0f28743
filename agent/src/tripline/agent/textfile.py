"""The textfile collector: metrics the PC's own scripts write to ``*.prom`` files.

As node_exporter's textfile collector: a backup job, a SMART check run by Task
Scheduler or cron writes the text exposition format to a file in ``textfile_dir`` (to
a temporary name, then renamed, so the agent never reads half a file); the agent reads
every ``*.prom`` there at each collection and forwards the samples. They are *extras*:
the collector exposes them untyped as ``tripline_x_<name>`` and rules use them by name.
The agent runs nothing: it only reads files.

A file is taken whole or skipped whole, and every skip is counted in
``agent_textfile_files_skipped_total{reason}`` (at each collection it is skipped) and
logged once per version of the file. What the collector's edge would refuse (a bad
name, a reserved label, a core family's name, a duplicate series) is refused here, per
file, so one script's mistake never costs the whole report. Everything is bounded:
files, bytes per file, series per file and in total, names and labels. A file is
parsed again only when its mtime, size or inode changes.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tripline.common import catalogue, names
from tripline.common.labels import Labels
from tripline.common.terminal import escape

log = logging.getLogger(__name__)

MAX_FILES = 100
MAX_FILE_BYTES = 256 * 1024
MAX_SERIES_PER_FILE = 200
# Shorter than the collector's 1024: a script's label is a status or a job name.
MAX_LABEL_VALUE = 256
# File names become the `file` label of agent_textfile_age_seconds: kept plain.
FILE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,120}\.prom")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Names a script may not publish: the agent's own families keep their one meaning.
_RESERVED_NAMES = (
    frozenset(catalogue.BY_NAME) | set(catalogue.LEGACY_NAMES) | set(catalogue.NOT_EXPOSED)
)

REASONS = (
    "file_name",
    "too_many_files",
    "too_large",
    "stale",
    "unreadable",
    "malformed",
    "too_many_series",
    "duplicate_series",
)

Series = tuple[str, Labels, float]


class TextfileError(ValueError):
    """Why one file is skipped: ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def parse(text: str) -> tuple[Series, ...]:
    """The samples of one file in the text exposition format, checked as the collector's
    edge checks them; raises TextfileError("malformed" | "too_many_series")."""
    if text and not text.endswith("\n"):
        # The format ends every line with a line feed; a file that does not is still
        # being written (or was cut short) and its last value may be cut too.
        raise TextfileError("malformed", "does not end with a newline (half-written?)")
    # Imported on first use: prometheus_client brings http.server, urllib, multiprocessing
    # and more (~2-3 MiB of the agent's heap), and most PCs set no textfile_dir.
    from prometheus_client.parser import text_string_to_metric_families

    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError, KeyError) as exc:
        # The parser's errors for malformed input (IndexError: found by fuzzing it).
        raise TextfileError("malformed", f"not the text exposition format: {exc}") from None
    out: list[Series] = []
    seen: set[tuple[str, Labels]] = set()
    for family in families:
        for sample in family.samples:
            if sample.timestamp is not None:
                # As node_exporter: the collector stamps reports itself.
                raise TextfileError("malformed", f"{sample.name}: timestamps are not supported")
            labels = _labels(sample.name, sample.labels)
            _check_name(sample.name)
            if not math.isfinite(sample.value):
                continue  # the collector refuses NaN and infinities; the rest of the file is fine
            key = (sample.name, labels)
            if key in seen:
                raise TextfileError("malformed", f"{sample.name}: the same series twice")
            seen.add(key)
            out.append((sample.name, labels, float(sample.value)))
            if len(out) > MAX_SERIES_PER_FILE:
                raise TextfileError(
                    "too_many_series", f"more than {MAX_SERIES_PER_FILE} series in one file"
                )
    return tuple(out)


def _check_name(name: str) -> None:
    problem = names.metric_name_problem(name)
    if problem is not None:
        raise TextfileError("malformed", f"metric name {name[:80]!r}: {problem}")
    if name in _RESERVED_NAMES:
        raise TextfileError("malformed", f"{name} is one of the agent's own metrics")


def _labels(name: str, pairs: dict[str, str]) -> Labels:
    if len(pairs) > names.MAX_LABELS:
        raise TextfileError("malformed", f"{name}: more than {names.MAX_LABELS} labels")
    for label, value in pairs.items():
        problem = names.label_name_problem(label)
        if problem is not None:
            raise TextfileError("malformed", f"{name}: label {label[:80]!r}: {problem}")
        if len(value) > MAX_LABEL_VALUE or _CONTROL.search(value) is not None:
            raise TextfileError(
                "malformed",
                f"{name}: label {label} is longer than {MAX_LABEL_VALUE} characters or "
                "holds control characters",
            )
    return tuple(sorted(pairs.items()))


@dataclass(frozen=True)
class _Version:
    """One file as last read: its identity and what came of it."""

    key: tuple[int, int, int]  # mtime_ns, size, inode
    series: tuple[Series, ...]
    error: TextfileError | None


class Textfile:
    """Reads ``directory``'s ``*.prom`` files; files older than ``max_age`` seconds are
    dropped, at most ``max_series`` series are taken from all files together."""

    def __init__(self, directory: Path, *, max_age: float, max_series: int) -> None:
        self.directory = directory
        self.max_age = max_age
        self.max_series = max_series
        self.skipped = dict.fromkeys(REASONS, 0)
        self._versions: dict[str, _Version] = {}
        self._logged: set[tuple[str, tuple[int, int, int] | None, str]] = set()

    def read(self, now: float) -> list[Series]:
        """This collection's samples, the age of every file and the skip counters.
        Raises OSError when the directory cannot be listed."""
        out: list[Series] = []
        taken: list[Series] = []
        seen: set[tuple[str, Labels]] = set()
        versions: dict[str, _Version] = {}
        with os.scandir(self.directory) as entries:
            # Temporary names (backup.prom.tmp, .backup.prom.123) are not *.prom: the
            # write-then-rename convention keeps half-written files out of sight.
            candidates = sorted((e for e in entries if e.name.endswith(".prom")), key=_name)
        for index, entry in enumerate(candidates):
            if FILE_NAME.fullmatch(entry.name) is None:
                self._skip(entry.name, None, TextfileError("file_name", "name is not plain"))
                continue
            if index >= MAX_FILES:
                self._skip(entry.name, None, TextfileError("too_many_files", f"> {MAX_FILES}"))
                continue
            try:
                version = self._version(entry, versions)
            except TextfileError as exc:
                self._skip(entry.name, None, exc)
                continue
            age = max(0.0, now - version.key[0] / 1e9)
            out.append(("agent_textfile_age_seconds", (("file", entry.name),), age))
            error = version.error
            if error is None and age > self.max_age:
                error = TextfileError("stale", f"last written {age:.0f}s ago")
            if error is None:
                error = self._conflict(version.series, seen, len(taken))
            if error is not None:
                self._skip(entry.name, version.key, error)
                continue
            seen.update((name, labels) for name, labels, _ in version.series)
            taken.extend(version.series)
        self._versions = versions  # forget files that are gone
        for reason, count in self.skipped.items():
            out.append(("agent_textfile_files_skipped_total", (("reason", reason),), count))
        return taken + out

    def _version(self, entry: os.DirEntry[str], versions: dict[str, _Version]) -> _Version:
        try:
            if not entry.is_file():
                raise TextfileError("unreadable", "not a regular file")
            st = entry.stat()
        except OSError as exc:
            raise TextfileError("unreadable", f"cannot stat: {exc.strerror}") from None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        known = self._versions.get(entry.name)
        if known is not None and known.key == key:
            versions[entry.name] = known
            return known
        version = _Version(key, *self._load(Path(entry.path), st.st_size))
        versions[entry.name] = version
        return version

    def _load(self, path: Path, size: int) -> tuple[tuple[Series, ...], TextfileError | None]:
        if size > MAX_FILE_BYTES:
            return (), TextfileError("too_large", f"{size} bytes, more than {MAX_FILE_BYTES}")
        try:
            with path.open("rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)  # it may have grown since the stat
        except OSError as exc:
            return (), TextfileError("unreadable", f"cannot read: {exc.strerror}")
        if len(data) > MAX_FILE_BYTES:
            return (), TextfileError("too_large", f"more than {MAX_FILE_BYTES} bytes")
        try:
            return parse(data.decode("utf-8")), None
        except UnicodeDecodeError:
            return (), TextfileError("malformed", "not UTF-8 text")
        except TextfileError as exc:
            return (), exc
        except Exception as exc:  # a third-party parser on untrusted text
            # Whatever else the parser raises, one file must not stop the collection:
            # the traceback is logged and the file counted as malformed.
            log.exception("textfile parser failed", extra={"file": escape(path.name)})
            return (), TextfileError("malformed", f"parser failed: {type(exc).__name__}")

    def _conflict(
        self, series: Iterable[Series], seen: set[tuple[str, Labels]], taken: int
    ) -> TextfileError | None:
        batch = list(series)
        for name, labels, _ in batch:
            if (name, labels) in seen:
                return TextfileError("duplicate_series", f"{name} is in an earlier file too")
        if taken + len(batch) > self.max_series:
            return TextfileError(
                "too_many_series", f"textfile_max_series ({self.max_series}) reached"
            )
        return None

    def _skip(self, file: str, key: tuple[int, int, int] | None, error: TextfileError) -> None:
        self.skipped[error.reason] += 1
        # Once per version of a file, not at every collection.
        marker = (file, key, error.reason)
        if marker in self._logged:
            return
        if len(self._logged) > 4 * MAX_FILES:
            self._logged.clear()
        self._logged.add(marker)
        log.warning(
            "textfile skipped",
            extra={
                "file": escape(file),
                "reason": error.reason,
                "error": escape(str(error)),
                "directory": escape(str(self.directory)),
            },
        )


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name
