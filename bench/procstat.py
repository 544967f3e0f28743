"""CPU time and memory of a running process, read from /proc (Linux only).

CPU comes from /proc/PID/stat (utime + stime of every thread, in clock ticks, so its
resolution is 1/CLK_TCK, 10 ms on Linux); memory from /proc/PID/status (VmRSS now,
VmHWM the peak since the process started); proportional and unique set sizes from
/proc/PID/smaps_rollup (see ``memory``).
"""

from __future__ import annotations

import os
import resource
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


@dataclass(frozen=True)
class Memory:
    """One process's memory in three measures, from /proc/PID/smaps_rollup (bytes).

    - ``rss``: resident pages mapped by the process, counted whole even when other
      processes map the same page (shared libraries: libpython, gRPC's core, libcrypto).
    - ``pss``: proportional set size, each resident page divided by the number of
      processes mapping it; summed over all processes it is the machine's real use.
    - ``uss``: unique set size, the pages only this process maps (private clean + dirty):
      what the machine gets back when the process exits.

    ``rss_anon``/``rss_file`` split RSS into anonymous memory (heap, stacks) and
    file-backed pages (mapped executables and libraries).
    """

    rss: int
    pss: int
    uss: int
    rss_anon: int
    rss_file: int


def memory(pid: int) -> Memory:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid) from None
    kib: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            kib[parts[0][:-1]] = int(parts[1]) * 1024
    anon = kib.get("Anonymous", 0)
    return Memory(
        rss=kib.get("Rss", 0),
        pss=kib.get("Pss", 0),
        uss=kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0),
        rss_anon=anon,
        rss_file=kib.get("Rss", 0) - anon,
    )


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds run so far by ``pid``'s live threads, summed per thread name (comm:
    gRPC names its own, ``event_engine``, ``grpc_global_tim``, ``lifeguard``; Python's
    threads are all ``python`` or the program's name). From /proc/PID/task/*/schedstat,
    in nanoseconds, so far finer than ``snapshot``'s 10 ms; a thread that exits takes its
    time with it, so compare the sum with ``snapshot`` before trusting the split."""
    out: dict[str, float] = {}
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except (FileNotFoundError, ProcessLookupError):
        raise ProcessGone(pid) from None
    for tid in tasks:
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            ran_ns = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue  # exited meanwhile
        out[name] = out.get(name, 0.0) + ran_ns / 1e9
    return out


def tree_pids(pid: int) -> list[int]:
    """``pid`` and every live descendant of it (from the ppid field of /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # exited meanwhile
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, ()))
    return found


def tree_snapshot(pid: int) -> Snapshot:
    """CPU and RSS summed over ``pid`` and its live descendants (a collector with worker
    processes is measured whole). CPU of a descendant that exited inside the window is
    missed, so measure a tree whose processes live through the window."""
    total = snapshot(pid)
    cpu, rss, peak = total.cpu_seconds, total.rss_bytes, total.peak_rss_bytes
    for child in tree_pids(pid)[1:]:
        try:
            snap = snapshot(child)
        except ProcessGone:
            continue
        cpu += snap.cpu_seconds
        rss += snap.rss_bytes
        peak += snap.peak_rss_bytes
    return Snapshot(total.at, cpu, rss, peak)


def raise_nofile_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit; returns the new soft
    limit. Children started afterwards inherit it. One socket per simulated PC on both
    ends of the benchmark passes the usual soft limit of 1024 at a thousand PCs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def socket_inodes(pids: list[int]) -> set[str]:
    """Inode numbers (as /proc/net/tcp prints them) of the sockets these processes hold."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue  # closed meanwhile
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    return inodes


def established_connections(port: int, pids: list[int]) -> int:
    """TCP connections in state ESTABLISHED on local port ``port`` held by ``pids`` (IPv4
    and IPv6, from /proc/net/tcp*): the server side of every client connection. Matching
    the socket's inode to the server's file descriptors keeps out another program's
    connection that happens to use the same port number on the other end."""
    inodes = socket_inodes(pids)
    count = 0
    local_suffix = f":{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if fields[3] == "01" and fields[1].endswith(local_suffix) and fields[9] in inodes:
                count += 1
    return count


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in first]
    idle = ticks[3] + ticks[4]  # idle + iowait
    # guest and guest_nice (fields 9, 10) are already inside user and nice
    total = sum(ticks[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


class Sampler:
    """Samples one process every ``period`` seconds on a thread, keeping the RSS maximum
    (with ``tree``, of the process and its descendants together) and, with ``history``,
    every sample."""

    def __init__(
        self, pid: int, period: float = 1.0, *, tree: bool = False, history: bool = False
    ) -> None:
        self.pid = pid
        # with ``history``: every (monotonic time, RSS) sampled, for an RSS-over-time trace
        self.history: list[tuple[float, int]] | None = [] if history else None
        self.tree = tree
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
            snap = tree_snapshot(self.pid) if self.tree else snapshot(self.pid)
        except ProcessGone:
            self._stop.set()
            return
        self.last = snap
        self.max_rss = max(self.max_rss, snap.rss_bytes)
        if self.history is not None:
            self.history.append((snap.at, snap.rss_bytes))

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()
