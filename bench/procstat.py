"""CPU time and memory of a running process, read from /proc (Linux only).

CPU comes from /proc/PID/stat (utime + stime of every thread, in clock ticks, so its
resolution is 1/CLK_TCK, 10 ms on Linux); memory from /proc/PID/status (VmRSS now,
VmHWM the peak since the process started).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 2**20


class ProcessGone(Exception):
    """The process exited while it was being measured."""

    def __init__(self, pid: int) -> None:
        super().__init__(f"process {pid} is gone")
        self.pid = pid


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.monotonic()
    cpu_seconds: float  # user + system, all threads
    rss_bytes: int
    peak_rss_bytes: int


def snapshot(pid: int) -> Snapshot:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid) from None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss = peak = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return Snapshot(time.monotonic(), (utime + stime) / CLK_TCK, rss, peak)


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in first]
    idle = ticks[3] + ticks[4]  # idle + iowait
    # guest and guest_nice (fields 9, 10) are already inside user and nice
    total = sum(ticks[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


class Sampler:
    """Samples one process every ``period`` seconds on a thread, keeping the RSS maximum."""

    def __init__(self, pid: int, period: float = 1.0) -> None:
        self.pid = pid
        self.period = period
        self.max_rss = 0
        self.last: Snapshot | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"sampler-{pid}")

    def start(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def reset_max(self) -> None:
        self.max_rss = self.last.rss_bytes if self.last else 0

    def _sample(self) -> None:
        try:
            snap = snapshot(self.pid)
        except ProcessGone:
            self._stop.set()
            return
        self.last = snap
        self.max_rss = max(self.max_rss, snap.rss_bytes)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()
