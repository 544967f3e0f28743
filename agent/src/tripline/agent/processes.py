"""The process table: its size, the local process checks, and the top-5 lists by CPU and
by memory that travel as ticket context.

A probe module: psutil (or a test's stand-in) is handed in by `probes.Prober` and read
here only (STYLE.md 4). CPU ratios are pure functions of two scans, so the first scan
only takes a baseline. Per-process errors (a process that exits, another user's
process) are caught per process; a failure of the whole scan propagates to the prober,
which counts it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tripline.agent import checks, procscan
from tripline.agent.checks import ProcessCheck
from tripline.agent.redact import Redaction
from tripline.agent.samples import ProcessSample, Sample, labels

CMDLINE_MAX_CHARS = 1024

TopLists = tuple[tuple[ProcessSample, ...], tuple[ProcessSample, ...]]
Row = tuple[Any, dict[str, Any]]  # (psutil Process, its info dict) as process_iter gives


def process_cpu_ratio(before: float | None, after: float, elapsed: float, ceiling: float) -> float:
    """Share of one core a process used between two scans (user+system seconds)."""
    if elapsed <= 0:
        return 0.0
    # Absent before: the process started during the interval, so all its time is in it.
    # Smaller than before: the pid was reused by a new process, same reasoning.
    spent = after if before is None or after < before else after - before
    return min(ceiling, max(0.0, spent / elapsed))


class ProcessProbe:
    """Appends ``processes`` (and ``processes_matching``) each call and returns the top
    lists, rescanning them at most every ``interval`` seconds."""

    def __init__(
        self,
        ps: Any,
        *,
        fast_scan: Callable[[], list[procscan.ProcStat]] | None,
        collect_processes: bool,
        top_n: int,
        interval: float,
        command_lines: bool,
        redaction: Redaction,
        process_checks: Sequence[ProcessCheck],
    ) -> None:
        self._ps = ps
        # Linux with the real psutil: the context scan reads one /proc file per process
        self._fast_scan = fast_scan
        self._process_checks = tuple(process_checks)
        self.collect_processes = collect_processes
        # Command lines leave the PC in ticket context: none at all when the config says
        # so, else redacted here, before anything reaches the spool. `redaction` may be
        # replaced later (the agent learns its credential when it enrolls).
        self._command_lines = command_lines
        self.redaction = redaction
        # Scanning every process dominates a collection (~50-90 us per process), while
        # the top-5 lists only matter as ticket context: scan at most this often and
        # reuse the lists in between (their CPU ratios then average over the longer span).
        self._interval = interval
        self._last_top: TopLists = ((), ())
        self._top_n = top_n
        self._prev_procs: tuple[float, dict[int, float]] | None = None

    def collect(self, out: list[Sample], now: float) -> TopLists:
        if self.collect_processes and (
            self._prev_procs is None or not 0 <= now - self._prev_procs[0] < self._interval
        ):
            self._last_top = self._scan(out, now)
            return self._last_top
        if self._process_checks:
            # The checks need names every interval: this scan replaces pids() rather than
            # adding a second walk of the process table.
            rows = [info for _, info in self._iter_processes(["pid", "name"])]
            out.append(Sample("processes", (), len(rows)))
            self._check_processes(out, rows)
        else:
            out.append(Sample("processes", (), len(self._ps.pids())))
        return self._last_top if self.collect_processes else ((), ())

    def _iter_processes(self, attrs: list[str]) -> Iterable[Row]:
        if checks.needs_cmdline(self._process_checks):
            attrs = [*attrs, "cmdline"]
        # process_iter skips processes that vanish; ad_value turns per-attribute
        # AccessDenied/ZombieProcess (other users' processes, Windows services) into None.
        for proc in self._ps.process_iter(attrs=attrs, ad_value=None):
            yield proc, proc.info

    def _check_processes(self, out: list[Sample], rows: Iterable[Mapping[str, Any]]) -> None:
        if not self._process_checks:
            return
        counts = checks.count_matches(
            self._process_checks, ((r["name"] or "", r.get("cmdline")) for r in rows)
        )
        for name, count in counts.items():
            out.append(Sample("processes_matching", labels(check=name), count))

    def _scan(self, out: list[Sample], now: float) -> TopLists:
        if self._fast_scan is not None and not self._process_checks:
            return self._scan_proc(out, now, self._fast_scan())
        # username costs a uid lookup per process: fetched for the top ones only.
        attrs = ["pid", "name", "cpu_times", "memory_info"]
        rows = list(self._iter_processes(attrs))
        out.append(Sample("processes", (), len(rows)))
        self._check_processes(out, (info for _, info in rows))
        spent = {
            info["pid"]: info["cpu_times"].user + info["cpu_times"].system
            for _, info in rows
            if info["cpu_times"] is not None
        }
        prev, self._prev_procs = self._prev_procs, (now, spent)
        by_mem = sorted(rows, key=lambda r: _rss(r[1]), reverse=True)[: self._top_n]
        if prev is None or now <= prev[0]:
            return (), self.describe(by_mem, {})  # no baseline yet (or the clock went back)
        ceiling = float(self._ps.cpu_count() or 1)
        ratios = {
            pid: process_cpu_ratio(prev[1].get(pid), after, now - prev[0], ceiling)
            for pid, after in spent.items()
        }
        by_cpu = sorted(
            (r for r in rows if ratios.get(r[1]["pid"], 0.0) > 0),  # idle ones are noise
            key=lambda r: ratios[r[1]["pid"]],
            reverse=True,
        )[: self._top_n]
        return self.describe(by_cpu, ratios), self.describe(by_mem, ratios)

    def _scan_proc(self, out: list[Sample], now: float, stats: list[procscan.ProcStat]) -> TopLists:
        """``_scan`` from /proc/PID/stat figures: the same lists, psutil asked only about
        the processes that make them."""
        out.append(Sample("processes", (), len(stats)))
        spent = {s.pid: s.cpu_seconds for s in stats}
        rss = {s.pid: s.rss_bytes for s in stats}
        prev, self._prev_procs = self._prev_procs, (now, spent)
        by_mem = sorted(rss, key=rss.__getitem__, reverse=True)
        mem_rows = sorted(self._top_rows(by_mem, rss), key=lambda r: _rss(r[1]), reverse=True)
        if prev is None or now <= prev[0]:
            return (), self.describe(mem_rows, {})
        ceiling = float(self._ps.cpu_count() or 1)
        ratios = {
            pid: process_cpu_ratio(prev[1].get(pid), after, now - prev[0], ceiling)
            for pid, after in spent.items()
        }
        by_cpu = sorted(
            (pid for pid in spent if ratios[pid] > 0),  # idle ones are noise
            key=ratios.__getitem__,
            reverse=True,
        )
        return (
            self.describe(self._top_rows(by_cpu, rss), ratios),
            self.describe(mem_rows, ratios),
        )

    def _top_rows(self, pids: Iterable[int], rss: Mapping[int, int]) -> list[Row]:
        """``(process, info)`` rows as process_iter gives them, for the first ``top_n`` of
        ``pids`` still running (one that exited since the scan makes room for the next)."""
        rows: list[Row] = []
        for pid in pids:
            if len(rows) == self._top_n:
                break
            try:
                proc = self._ps.Process(pid)
            except self._ps.NoSuchProcess:
                continue
            try:
                name = proc.name()
            except (self._ps.ZombieProcess, self._ps.AccessDenied):
                name = None  # as process_iter's ad_value=None
            except self._ps.NoSuchProcess:
                continue
            try:
                # stat's rss field is the kernel's approximate counter (it can trail statm's,
                # which psutil reads, by a few pages): good for ranking, not for the figure
                memory = proc.memory_info()
            except (self._ps.ZombieProcess, self._ps.AccessDenied):
                memory = _Rss(rss[pid])
            except self._ps.NoSuchProcess:
                continue
            rows.append((proc, {"pid": pid, "name": name, "memory_info": memory}))
        return rows

    def describe(
        self, rows: Iterable[Row], ratios: Mapping[int, float]
    ) -> tuple[ProcessSample, ...]:
        """Top-list entries for scanned rows: usernames and command lines fetched, and
        redacted."""
        result = []
        for proc, info in rows:
            cmdline = ""
            if self._command_lines:
                try:
                    argv = proc.cmdline()
                except (self._ps.NoSuchProcess, self._ps.AccessDenied, self._ps.ZombieProcess):
                    argv = []  # exited since the scan, or another user's process
                # Redacted whole, then cut: a cut first could split a secret so that no
                # rule recognises what is left of it. Rewritten process titles (postgres,
                # nginx) come padded with spaces; the join strips them.
                cmdline = self.redaction(argv)[:CMDLINE_MAX_CHARS]
            try:
                username = proc.username()
            except (self._ps.NoSuchProcess, self._ps.AccessDenied, self._ps.ZombieProcess):
                username = ""
            result.append(
                ProcessSample(
                    pid=info["pid"],
                    name=info["name"] or "",
                    username=username or "",
                    cpu_ratio=ratios.get(info["pid"], 0.0),
                    memory_rss_bytes=_rss(info),
                    cmdline=cmdline,
                )
            )
        return tuple(result)


@dataclass(frozen=True)
class _Rss:
    """What ``_rss`` reads of psutil's memory_info, for rows made from /proc/PID/stat."""

    rss: int


def _rss(info: Mapping[str, Any]) -> int:
    mem = info["memory_info"]
    return int(mem.rss) if mem is not None else 0
