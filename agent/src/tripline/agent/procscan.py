"""Linux: every process's CPU time and resident memory from one read of /proc/PID/stat.

The top-5 context scan needs only these two numbers per process; psutil's
``process_iter(attrs=[...])`` reads about three files per process for them (stat, statm,
and stat again to check the pid was not reused) and wraps each in a Process object. This
reads one, which makes a scan about 2-3 times cheaper (bench/README.md). The values are
the ones psutil reads: ``cpu_times()`` is utime + stime of /proc/PID/stat in clock ticks,
and ``memory_info().rss`` is the resident page count that /proc/PID/statm and stat's rss
field both print. Names, users and command lines are still read through psutil, for the
few processes that make the top lists.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class ProcStat:
    pid: int
    cpu_seconds: float  # user + system, since the process started
    rss_bytes: int


def scan(proc: str = "/proc") -> list[ProcStat]:
    """Every process now visible in ``proc``; one that exits while being read is left out,
    as psutil's process_iter leaves it out. Raises OSError when ``proc`` cannot be listed."""
    found = []
    # in pid order, as psutil's process_iter yields them (ties in the top lists stay alike)
    for pid in sorted(int(name) for name in os.listdir(proc) if name.isdigit()):
        try:
            with open(f"{proc}/{pid}/stat", "rb") as f:
                data = f.read()
        except OSError:  # gone meanwhile (ENOENT, ESRCH) or hidden from us
            continue
        # The command name (field 2) may hold spaces and parentheses: split after the last
        # ')'. Then field 3 (state) is index 0: utime 14, stime 15, rss 24 (in pages).
        fields = data[data.rfind(b")") + 2 :].split()
        if len(fields) < 22:
            continue  # not the stat format (cannot happen on Linux; never guess)
        found.append(
            ProcStat(
                pid=pid,
                cpu_seconds=(int(fields[11]) + int(fields[12])) / CLK_TCK,
                rss_bytes=int(fields[21]) * PAGE_SIZE,
            )
        )
    return found


def default_scanner(
    psutil_module: object, real_psutil: object
) -> Callable[[], list[ProcStat]] | None:
    """``scan`` on Linux with the real psutil; None elsewhere (Windows, macOS, and tests
    that hand the prober a psutil stand-in), where the prober scans through psutil."""
    linux = sys.platform.startswith("linux") and os.path.isdir("/proc/self")
    return scan if linux and psutil_module is real_psutil else None
