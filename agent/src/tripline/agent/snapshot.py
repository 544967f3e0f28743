"""Diagnostic snapshots the collector asks for while a problem holds.

The periodic context stays cheap (processes are scanned once a minute); a snapshot is
taken only when asked (a rule went pending or fired, or an operator asked) and measures
process CPU over a short span between two scans, so it names what burns the CPU *now*.
The scans run in a worker thread and the span is awaited on the event loop: reports
and acks keep flowing while a snapshot is measured.

Read-only: a request carries an id and nothing else; the answer holds the same kinds of
facts as the periodic context, command lines redacted by the same `Prober`. The agent
answers at most one request at a time and at most one per ``min_interval``, whatever
the collector asks.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tripline.agent.probes import Prober, cpu_usage_ratio
from tripline.agent.processes import process_cpu_ratio
from tripline.agent.samples import ProcessSample

# What a request id may be: the collector's own, echoed back; anything longer is cut.
MAX_REQUEST_ID = 64


@dataclass(frozen=True)
class FilesystemState:
    mountpoint: str
    fstype: str
    device: str
    size_bytes: int
    avail_bytes: int
    used_ratio: float


@dataclass(frozen=True)
class Snapshot:
    taken_at: float  # agent's wall clock at the end of the span
    cpu_span_seconds: float
    top_cpu: tuple[ProcessSample, ...]
    top_memory: tuple[ProcessSample, ...]
    filesystems: tuple[FilesystemState, ...]
    logged_in_users: tuple[str, ...]
    uptime_seconds: float
    cpu_usage_ratio: float
    memory_used_ratio: float
    processes: int
    failed: tuple[str, ...] = ()  # parts that could not be read (psutil errors)


@dataclass(frozen=True)
class _Baseline:
    at: float  # monotonic
    cpu: Any  # psutil scputimes, or None when unreadable
    spent: dict[int, float]  # pid -> user+system seconds


@dataclass
class SnapshotStats:
    answered: int = 0
    refused: int = 0  # busy, or asked again too soon
    failed: int = 0


class Snapshotter:
    """Takes snapshots with a `Prober`'s psutil and redaction."""

    def __init__(
        self,
        prober: Prober,
        *,
        span: float = 1.5,
        min_interval: float = 5.0,
        # Twice the periodic context's 5: taken rarely, and on a busy PC the culprit may
        # be sixth (the collector keeps up to convert.MAX_PROCESSES per list).
        top_n: int = 10,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] | None = None,  # asyncio.sleep
    ) -> None:
        self.prober = prober
        self.span = span
        self.min_interval = min_interval
        self.top_n = top_n
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.stats = SnapshotStats()
        self._busy = False
        self._last_started: float | None = None

    def accept(self) -> bool:
        """Whether a request arriving now is answered (one at a time, min_interval apart)."""
        now = self.monotonic()
        recent = self._last_started is not None and now - self._last_started < self.min_interval
        if self._busy or recent:
            self.stats.refused += 1
            return False
        self._busy = True
        self._last_started = now
        return True

    async def take(self) -> Snapshot:
        """Measure over `span` seconds; call after `accept` returned True."""
        # Imported here, not at the top: convert.py imports this module's types, and
        # `tripline-agent --once` must not pay for asyncio (tests/unit/project/test_cli_imports.py).
        import asyncio

        try:
            first = await asyncio.to_thread(self._baseline)
            await (self.sleep or asyncio.sleep)(self.span)
            snapshot = await asyncio.to_thread(self._finish, first)
        except BaseException:
            self.stats.failed += 1
            raise
        finally:
            self._busy = False
        self.stats.answered += 1
        return snapshot

    # -- the two scans (worker thread) ---------------------------------------------------

    def _process_times(self) -> tuple[list[tuple[Any, dict[str, Any]]], dict[int, float]]:
        ps = self.prober.psutil
        rows: list[tuple[Any, dict[str, Any]]] = []
        if not self.prober.collects_processes:
            return rows, {}
        attrs = ["pid", "name", "cpu_times", "memory_info"]
        for proc in ps.process_iter(attrs=attrs, ad_value=None):
            rows.append((proc, proc.info))
        spent = {
            info["pid"]: info["cpu_times"].user + info["cpu_times"].system
            for _, info in rows
            if info["cpu_times"] is not None
        }
        return rows, spent

    def _baseline(self) -> _Baseline:
        ps = self.prober.psutil
        try:
            cpu = ps.cpu_times()
        except (ps.Error, OSError):
            cpu = None
        try:
            _, spent = self._process_times()
        except (ps.Error, OSError):
            spent = {}
        return _Baseline(self.monotonic(), cpu, spent)

    def _finish(self, first: _Baseline) -> Snapshot:
        ps = self.prober.psutil
        failed: list[str] = []
        try:
            rows, spent = self._process_times()
        except (ps.Error, OSError):
            rows, spent = [], {}
            failed.append("processes")
        elapsed = self.monotonic() - first.at
        now = self.clock()
        ceiling = float(ps.cpu_count() or 1)
        ratios = (
            {
                pid: process_cpu_ratio(first.spent.get(pid), after, elapsed, ceiling)
                for pid, after in spent.items()
            }
            if first.spent
            else {}
        )  # no baseline scan: no process's share is known
        by_cpu = sorted(
            (r for r in rows if ratios.get(r[1]["pid"], 0.0) > 0),
            key=lambda r: ratios[r[1]["pid"]],
            reverse=True,
        )[: self.top_n]
        by_mem = sorted(rows, key=lambda r: _rss(r[1]), reverse=True)[: self.top_n]
        machine_cpu = 0.0
        try:
            if first.cpu is not None:
                machine_cpu = cpu_usage_ratio(first.cpu, ps.cpu_times())
        except (ps.Error, OSError):
            failed.append("cpu")
        users: tuple[str, ...] = ()
        try:
            users = tuple(sorted({u.name for u in ps.users() if u.name}))
        except (ps.Error, OSError):
            failed.append("users")
        uptime = memory = 0.0
        try:
            uptime = max(0.0, now - ps.boot_time())
            vm = ps.virtual_memory()
            memory = (vm.total - vm.available) / vm.total if vm.total else 0.0
        except (ps.Error, OSError):
            failed.append("memory")
        samples, fs_failed = self.prober.filesystem_samples(now)
        if fs_failed:
            failed.append("filesystem")
        return Snapshot(
            taken_at=now,
            cpu_span_seconds=elapsed,
            top_cpu=self.prober.describe_processes(by_cpu, ratios),
            top_memory=self.prober.describe_processes(by_mem, ratios),
            filesystems=_filesystems(samples),
            logged_in_users=users,
            uptime_seconds=uptime,
            cpu_usage_ratio=machine_cpu,
            memory_used_ratio=memory,
            processes=len(rows),
            failed=tuple(failed),
        )


def _rss(info: dict[str, Any]) -> int:
    mem = info["memory_info"]
    return int(mem.rss) if mem is not None else 0


def _filesystems(samples: list[Any]) -> tuple[FilesystemState, ...]:
    """One entry per filesystem from the filesystem probe's samples."""
    by_labels: dict[Any, dict[str, float]] = {}
    for s in samples:
        by_labels.setdefault(s.labels, {})[s.name] = s.value
    out = []
    for labels, values in sorted(by_labels.items()):
        lbl = dict(labels)
        out.append(
            FilesystemState(
                mountpoint=lbl.get("mountpoint", ""),
                fstype=lbl.get("fstype", ""),
                device=lbl.get("device", ""),
                size_bytes=int(values.get("filesystem_size_bytes", 0)),
                avail_bytes=int(values.get("filesystem_avail_bytes", 0)),
                used_ratio=float(values.get("filesystem_used_ratio", 0.0)),
            )
        )
    return tuple(out)
