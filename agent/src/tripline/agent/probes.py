"""Samples the machine's health with psutil and returns plain data.

psutil stays behind this module: everything it hands out is a frozen dataclass of
str/int/float. Rates are pure functions of two snapshots, so the first collection of a
`Prober` only takes baselines (no sleeping to get a CPU reading).
"""

from __future__ import annotations

import math
import os
import platform
import re
import socket
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import psutil

from tripline.agent import checks, procscan
from tripline.agent.checks import ProcessCheck
from tripline.agent.redact import Redaction
from tripline.agent.textfile import Textfile
from tripline.common.labels import Labels

CMDLINE_MAX_CHARS = 1024

# Filesystems that hold no user data or that mirror another one. disk_partitions(all=False)
# already drops most "nodev" ones on Linux, but snaps (squashfs, fuse.snapfuse) and a few
# container mounts get through.
_PSEUDO_FSTYPES = frozenset(
    {"tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "autofs", "nsfs", "devfs"}
    | {"fusectl", "fuse.snapfuse", "fuse.gvfsd-fuse", "fuse.portal", "fuse.lxcfs", "ramfs"}
    | {"securityfs", "debugfs", "tracefs", "pstore", "bpf", "mqueue", "hugetlbfs", "configfs"}
)
# Like node_exporter: whole disks only, so partitions are not counted twice; loop and RAM
# devices carry no real I/O.
_SKIP_DISK = re.compile(r"^(ram|loop|fd|zram|(h|s|v|xv)d[a-z]+\d|nvme\d+n\d+p|mmcblk\d+p)\d*$")
_LOOPBACK_NICS = frozenset({"lo", "lo0"})  # Linux, macOS/BSD
_WINDOWS = sys.platform == "win32"


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    name: str
    username: str
    cpu_ratio: float  # share of one core, 0..cpu_count
    memory_rss_bytes: int
    cmdline: str


@dataclass(frozen=True)
class Context:
    top_cpu: tuple[ProcessSample, ...]
    top_memory: tuple[ProcessSample, ...]
    logged_in_users: tuple[str, ...]


@dataclass(frozen=True)
class Inventory:
    hostname: str
    os: str
    os_release: str
    architecture: str
    machine_id: str
    cpu_count: int
    memory_total_bytes: int
    boot_time_seconds: float
    python_version: str


@dataclass(frozen=True)
class Collection:
    collected_at: float
    samples: tuple[Sample, ...]
    context: Context
    probe_errors: Mapping[str, int]  # cumulative failures per probe since the Prober started


class CpuTimesLike(Protocol):
    """A psutil scputimes namedtuple (fields differ per OS)."""

    @property
    def idle(self) -> float: ...

    def _asdict(self) -> dict[str, Any]: ...


def labels(**pairs: str) -> Labels:
    return tuple(sorted(pairs.items()))


def _total_time(fields: Mapping[str, float]) -> float:
    # Linux counts guest time inside user/nice as well; psutil's cpu_percent subtracts it too.
    return sum(fields.values()) - fields.get("guest", 0.0) - fields.get("guest_nice", 0.0)


def cpu_usage_ratio(before: CpuTimesLike, after: CpuTimesLike) -> float:
    """Busy share of the CPU time elapsed between two snapshots, 0..1."""
    a, b = before._asdict(), after._asdict()
    # Counters can step backwards on Linux (suspend, some hypervisors): clamp each field.
    delta = {k: max(0.0, float(b[k]) - float(a[k])) for k in b if k in a}
    total = _total_time(delta)
    if total <= 0:
        return 0.0
    # iowait is idle time spent waiting on a disk, not work (Linux only field).
    busy = total - delta.get("idle", 0.0) - delta.get("iowait", 0.0)
    return min(1.0, max(0.0, busy / total))


def process_cpu_ratio(before: float | None, after: float, elapsed: float, ceiling: float) -> float:
    """Share of one core a process used between two scans (user+system seconds)."""
    if elapsed <= 0:
        return 0.0
    # Absent before: the process started during the interval, so all its time is in it.
    # Smaller than before: the pid was reused by a new process, same reasoning.
    spent = after if before is None or after < before else after - before
    return min(ceiling, max(0.0, spent / elapsed))


class _ProbeFailedError(Exception):
    pass


class Prober:
    """Collects one `Collection` per call; keeps the previous snapshots for deltas."""

    def __init__(
        self,
        *,
        collect_processes: bool = True,
        top_n: int = 5,
        process_interval: float = 60.0,
        psutil_module: types.ModuleType = psutil,
        clock: Callable[[], float] = time.perf_counter,
        command_lines: bool = True,
        redaction: Redaction | None = None,
        process_checks: Sequence[ProcessCheck] = (),
        service_checks: Sequence[str] = (),
        textfile: Textfile | None = None,
    ) -> None:
        self._ps: Any = psutil_module
        # Linux with the real psutil: the context scan reads one /proc file per process
        self._fast_scan = procscan.default_scanner(psutil_module, psutil)
        self._process_checks = tuple(process_checks)
        self._service_checks = tuple(service_checks)
        self._textfile = textfile
        self._collect_processes = collect_processes
        # Command lines leave the PC in ticket context: none at all when the config says
        # so, else redacted here, before anything reaches the spool. `redaction` may be
        # replaced later (the agent learns its credential when it enrolls).
        self._command_lines = command_lines
        self.redaction = redaction or Redaction()
        # Scanning every process dominates a collection (~50-90 us per process), while
        # the top-5 lists only matter as ticket context: scan at most this often and
        # reuse the lists in between (their CPU ratios then average over the longer span).
        self._process_interval = process_interval
        self._last_top: tuple[tuple[ProcessSample, ...], tuple[ProcessSample, ...]] = ((), ())
        self._top_n = top_n
        self._clock = clock  # measures agent_collect_duration_seconds only
        self._prev_cpu: tuple[Any, list[Any]] | None = None
        self._prev_procs: tuple[float, dict[int, float]] | None = None
        self._probes: tuple[tuple[str, Callable[[list[Sample], float], None]], ...] = (
            ("cpu", self._cpu),
            ("load", self._load),
            ("memory", self._memory),
            ("swap", self._swap),
            ("filesystem", self._filesystems),
            ("disk", self._disks),
            ("network", self._network),
            ("uptime", self._uptime),
            ("temperature", self._temperatures),
            ("battery", self._battery),
        )
        if self._service_checks:
            self._probes += (("services", self._services),)
        if textfile is not None:
            self._probes += (("textfile", self._read_textfiles),)
        self._errors: dict[str, int] = {name: 0 for name, _ in self._probes}
        self._errors.update(users=0, processes=0)

    def collect(self, now: float) -> Collection:
        started = self._clock()
        out: list[Sample] = []
        for name, probe in self._probes:
            self._guard(name, probe, out, now)
        users: tuple[str, ...] = ()
        try:
            users = self._users(out)
        except (self._ps.Error, OSError):
            self._errors["users"] += 1
        top_cpu: tuple[ProcessSample, ...] = ()
        top_mem: tuple[ProcessSample, ...] = ()
        try:
            top_cpu, top_mem = self._processes(out, now)
        except (self._ps.Error, OSError):
            # The baseline is only replaced after a full scan, so the previous one (and its
            # time) stays valid: a partial scan would make every pid it missed look new.
            self._errors["processes"] += 1
        for probe_name, count in sorted(self._errors.items()):
            out.append(Sample("agent_probe_errors_total", labels(probe=probe_name), count))
        out.append(Sample("agent_collect_duration_seconds", (), self._clock() - started))
        return Collection(
            collected_at=now,
            # psutil hands out ints and the odd NaN (a broken sensor); the wire wants floats.
            samples=tuple(
                Sample(s.name, s.labels, float(s.value)) for s in out if math.isfinite(s.value)
            ),
            context=Context(top_cpu, top_mem, users),
            probe_errors=types.MappingProxyType(dict(self._errors)),
        )

    def _guard(
        self, name: str, probe: Callable[[list[Sample], float], None], out: list[Sample], now: float
    ) -> None:
        try:
            probe(out, now)
        except (self._ps.Error, OSError, _ProbeFailedError):
            self._errors[name] += 1  # what the probe appended before failing is kept

    def _cpu(self, out: list[Sample], now: float) -> None:
        total, per_cpu = self._ps.cpu_times(), self._ps.cpu_times(percpu=True)
        prev, self._prev_cpu = self._prev_cpu, (total, per_cpu)
        if prev is None:
            return  # first call: baseline only
        out.append(Sample("cpu_usage_ratio", (), cpu_usage_ratio(prev[0], total)))
        if len(prev[1]) == len(per_cpu):  # CPU hotplug changes the count: skip one round
            for i, (a, b) in enumerate(zip(prev[1], per_cpu, strict=True)):
                out.append(
                    Sample("cpu_core_usage_ratio", labels(cpu=str(i)), cpu_usage_ratio(a, b))
                )

    def _load(self, out: list[Sample], now: float) -> None:
        # Windows has no load average; psutil emulates one with a background thread whose
        # first reading is zeros, which would be a misleading series, so none is sent.
        if _WINDOWS or not hasattr(self._ps, "getloadavg"):
            return
        for name, value in zip(("load1", "load5", "load15"), self._ps.getloadavg(), strict=True):
            out.append(Sample(name, (), value))

    def _memory(self, out: list[Sample], now: float) -> None:
        vm = self._ps.virtual_memory()
        # psutil's "used" means something different on every OS (Linux excludes caches,
        # macOS adds wired); total - available is what a person means by "in use".
        used = vm.total - vm.available
        out.append(Sample("memory_total_bytes", (), vm.total))
        out.append(Sample("memory_available_bytes", (), vm.available))
        out.append(Sample("memory_used_bytes", (), used))
        out.append(Sample("memory_used_ratio", (), used / vm.total if vm.total else 0.0))

    def _swap(self, out: list[Sample], now: float) -> None:
        sw = self._ps.swap_memory()
        out.append(Sample("swap_total_bytes", (), sw.total))
        out.append(Sample("swap_used_bytes", (), sw.used))
        out.append(Sample("swap_used_ratio", (), sw.used / sw.total if sw.total else 0.0))

    def _filesystems(self, out: list[Sample], now: float) -> None:
        failed = False
        for part in self._ps.disk_partitions(all=False):
            if not real_filesystem(part.fstype, part.mountpoint, part.opts):
                continue
            try:
                self._filesystem(out, part)
            except (self._ps.Error, OSError):
                failed = True  # one stale network mount must not hide the local disks
        if failed:
            raise _ProbeFailedError

    def _filesystem(self, out: list[Sample], part: Any) -> None:
        lbl = labels(mountpoint=part.mountpoint, fstype=part.fstype, device=part.device)
        files: int | None = None
        files_free: int | None = None
        if hasattr(os, "statvfs"):
            # One statvfs gives what df shows: free includes root's reserved blocks, avail
            # does not. psutil.disk_usage reports avail as "free", so it is not used here.
            st = os.statvfs(part.mountpoint)
            size, free = st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize
            avail = st.f_bavail * st.f_frsize
            if st.f_files > 0:  # btrfs and some network filesystems report no inode limit
                files, files_free = st.f_files, st.f_ffree
        else:  # Windows: no reserved blocks and no inodes
            usage = self._ps.disk_usage(part.mountpoint)
            size, free, avail = usage.total, usage.free, usage.free
        used = size - free
        out.append(Sample("filesystem_size_bytes", lbl, size))
        out.append(Sample("filesystem_free_bytes", lbl, free))
        out.append(Sample("filesystem_avail_bytes", lbl, avail))
        out.append(
            Sample("filesystem_used_ratio", lbl, used / (used + avail) if used + avail else 0.0)
        )
        if files is not None and files_free is not None:
            out.append(Sample("filesystem_files", lbl, files))
            out.append(Sample("filesystem_files_free", lbl, files_free))

    def _disks(self, out: list[Sample], now: float) -> None:
        # None or {} when the kernel exposes no disk stats (some containers, macOS sandboxes).
        for dev, io in sorted((self._ps.disk_io_counters(perdisk=True) or {}).items()):
            if not whole_disk(dev):
                continue
            lbl = labels(device=dev)
            out.append(Sample("disk_read_bytes_total", lbl, io.read_bytes))
            out.append(Sample("disk_written_bytes_total", lbl, io.write_bytes))
            out.append(Sample("disk_reads_completed_total", lbl, io.read_count))
            out.append(Sample("disk_writes_completed_total", lbl, io.write_count))

    def _network(self, out: list[Sample], now: float) -> None:
        for nic, io in sorted(self._ps.net_io_counters(pernic=True).items()):
            # Windows names its loopback "Loopback Pseudo-Interface 1".
            if nic in _LOOPBACK_NICS or nic.startswith("Loopback Pseudo-Interface"):
                continue
            lbl = labels(device=nic)
            out.append(Sample("network_receive_bytes_total", lbl, io.bytes_recv))
            out.append(Sample("network_transmit_bytes_total", lbl, io.bytes_sent))
            out.append(Sample("network_receive_packets_total", lbl, io.packets_recv))
            out.append(Sample("network_transmit_packets_total", lbl, io.packets_sent))
            out.append(Sample("network_receive_errors_total", lbl, io.errin))
            out.append(Sample("network_transmit_errors_total", lbl, io.errout))

    def _uptime(self, out: list[Sample], now: float) -> None:
        boot = self._ps.boot_time()
        out.append(Sample("boot_time_seconds", (), boot))
        out.append(Sample("uptime_seconds", (), max(0.0, now - boot)))

    def _temperatures(self, out: list[Sample], now: float) -> None:
        if not hasattr(self._ps, "sensors_temperatures"):  # Windows and macOS lack it
            return
        # Labelled as node_exporter's hwmon collector: chip (psutil's key), sensor.
        for chip, entries in sorted(self._ps.sensors_temperatures().items()):
            seen: set[str] = set()
            for i, entry in enumerate(entries):
                # Unlabelled and duplicate readings would collide as one series.
                label = entry.label or f"temp{i + 1}"
                if label in seen:
                    label = f"{label} #{i + 1}"
                seen.add(label)
                out.append(
                    Sample("temperature_celsius", labels(chip=chip, sensor=label), entry.current)
                )

    def _battery(self, out: list[Sample], now: float) -> None:
        battery = self._ps.sensors_battery() if hasattr(self._ps, "sensors_battery") else None
        if battery is None:  # desktops, servers, VMs
            return
        out.append(Sample("battery_charge_ratio", (), battery.percent / 100.0))
        if battery.power_plugged is not None:  # None when the OS cannot tell
            out.append(Sample("battery_power_plugged", (), 1.0 if battery.power_plugged else 0.0))

    def _services(self, out: list[Sample], now: float) -> None:
        if not hasattr(self._ps, "win_service_get"):  # not Windows: the runner warned once
            return
        failed = False
        for service in self._service_checks:
            try:
                status = checks.query_service(self._ps, service)
            except checks.ServiceProbeError:
                failed = True  # one service we may not query must not hide the others
                continue
            out.extend(Sample(*series) for series in checks.service_series(status))
        if failed:
            raise _ProbeFailedError

    def _read_textfiles(self, out: list[Sample], now: float) -> None:
        assert self._textfile is not None
        out.extend(Sample(*series) for series in self._textfile.read(now))

    def _users(self, out: list[Sample]) -> tuple[str, ...]:
        sessions = self._ps.users()
        out.append(Sample("users_logged_in", (), len(sessions)))
        return tuple(sorted({u.name for u in sessions if u.name}))

    def _processes(
        self, out: list[Sample], now: float
    ) -> tuple[tuple[ProcessSample, ...], tuple[ProcessSample, ...]]:
        if self._collect_processes and (
            self._prev_procs is None or not 0 <= now - self._prev_procs[0] < self._process_interval
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
        return self._last_top if self._collect_processes else ((), ())

    def _iter_processes(self, attrs: list[str]) -> Iterable[tuple[Any, dict[str, Any]]]:
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

    def _scan(
        self, out: list[Sample], now: float
    ) -> tuple[tuple[ProcessSample, ...], tuple[ProcessSample, ...]]:
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
            return (), self._finish(by_mem, {})  # no baseline yet (or the clock went back)
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
        return self._finish(by_cpu, ratios), self._finish(by_mem, ratios)

    def _scan_proc(
        self, out: list[Sample], now: float, stats: list[procscan.ProcStat]
    ) -> tuple[tuple[ProcessSample, ...], tuple[ProcessSample, ...]]:
        """``_scan`` from /proc/PID/stat figures: the same lists, psutil asked only about
        the processes that make them."""
        out.append(Sample("processes", (), len(stats)))
        spent = {s.pid: s.cpu_seconds for s in stats}
        rss = {s.pid: s.rss_bytes for s in stats}
        prev, self._prev_procs = self._prev_procs, (now, spent)
        by_mem = sorted(rss, key=rss.__getitem__, reverse=True)
        mem_rows = sorted(self._top_rows(by_mem, rss), key=lambda r: _rss(r[1]), reverse=True)
        if prev is None or now <= prev[0]:
            return (), self._finish(mem_rows, {})
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
            self._finish(self._top_rows(by_cpu, rss), ratios),
            self._finish(mem_rows, ratios),
        )

    def _top_rows(
        self, pids: Iterable[int], rss: Mapping[int, int]
    ) -> list[tuple[Any, dict[str, Any]]]:
        """``(process, info)`` rows as process_iter gives them, for the first ``top_n`` of
        ``pids`` still running (one that exited since the scan makes room for the next)."""
        rows: list[tuple[Any, dict[str, Any]]] = []
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

    @property
    def psutil(self) -> Any:
        """The psutil module (or the test's stand-in) this prober samples."""
        return self._ps

    @property
    def collects_processes(self) -> bool:
        return self._collect_processes

    def describe_processes(
        self, rows: Iterable[tuple[Any, dict[str, Any]]], ratios: Mapping[int, float]
    ) -> tuple[ProcessSample, ...]:
        """Top-list entries for scanned ``(process, info)`` rows: usernames and command
        lines fetched, and redacted, exactly as for the periodic context."""
        return self._finish(rows, ratios)

    def filesystem_samples(self, now: float) -> tuple[list[Sample], bool]:
        """The filesystem probe alone: (samples, whether it failed part-way)."""
        out: list[Sample] = []
        try:
            self._filesystems(out, now)
        except (self._ps.Error, OSError, _ProbeFailedError):
            return out, True
        return out, False

    def _finish(
        self, rows: Iterable[tuple[Any, dict[str, Any]]], ratios: Mapping[int, float]
    ) -> tuple[ProcessSample, ...]:
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


def whole_disk(device: str) -> bool:
    return _SKIP_DISK.match(device) is None


def real_filesystem(fstype: str, mountpoint: str, opts: str) -> bool:
    """Whether a partition holds user data worth watching (not a pseudo or image mount)."""
    if fstype in _PSEUDO_FSTYPES or fstype.startswith("cgroup"):
        return False
    if mountpoint.startswith("/snap/"):  # one read-only image per installed snap
        return False
    # Windows: an empty drive (card reader) or unready drive has no fstype; a CD-ROM is not
    # a disk that can fill up.
    return fstype != "" and "cdrom" not in opts.split(",")


def inventory() -> Inventory:
    """Slow-changing facts about this machine."""
    return Inventory(
        hostname=socket.gethostname(),
        os=platform.system(),
        os_release=platform.release(),
        architecture=platform.machine(),
        machine_id=_machine_id(),
        cpu_count=psutil.cpu_count(logical=True) or 0,
        memory_total_bytes=psutil.virtual_memory().total,
        boot_time_seconds=psutil.boot_time(),
        python_version=platform.python_version(),
    )


def _machine_id() -> str:
    """The OS's stable machine id, or "" where there is none to read."""
    if sys.platform == "win32":  # spelled out so type checkers skip winreg elsewhere
        import winreg

        try:
            key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography")
            with key:
                return str(winreg.QueryValueEx(key, "MachineGuid")[0])
        except OSError:
            return ""
    # systemd writes /etc/machine-id; older and non-systemd distributions only have dbus's.
    # macOS has neither (its IOPlatformUUID needs ioreg, a subprocess not worth spawning).
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(candidate).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if value:
            return value
    return ""
