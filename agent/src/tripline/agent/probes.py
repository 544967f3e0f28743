"""Samples the machine's health with psutil and returns plain data.

psutil stays behind the probe modules (this one; `processes.py` for the process table
and its checks; `inventory.py`): everything they hand out is a frozen dataclass of
str/int/float (`samples.py`). Rates are pure functions of two snapshots, so the first
collection of a `Prober` only takes baselines (no sleeping to get a CPU reading).
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import psutil

from tripline.agent import checks, procscan
from tripline.agent.checks import ProcessCheck
from tripline.agent.processes import ProcessProbe, Row
from tripline.agent.redact import Redaction
from tripline.agent.samples import Collection, Context, ProcessSample, Sample, labels
from tripline.agent.textfile import Textfile

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


class CpuTimesLike(Protocol):
    """A psutil scputimes namedtuple (fields differ per OS)."""

    @property
    def idle(self) -> float: ...

    def _asdict(self) -> dict[str, Any]: ...


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
        self._service_checks = tuple(service_checks)
        self._textfile = textfile
        self._clock = clock  # measures agent_collect_duration_seconds only
        self._prev_cpu: tuple[Any, list[Any]] | None = None
        self._processes = ProcessProbe(
            self._ps,
            # Linux with the real psutil: the context scan reads one /proc file per process
            fast_scan=procscan.default_scanner(psutil_module, psutil),
            collect_processes=collect_processes,
            top_n=top_n,
            interval=process_interval,
            command_lines=command_lines,
            redaction=redaction or Redaction(),
            process_checks=process_checks,
        )
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
            top_cpu, top_mem = self._processes.collect(out, now)
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

    @property
    def psutil(self) -> Any:
        """The psutil module (or the test's stand-in) this prober samples."""
        return self._ps

    @property
    def collects_processes(self) -> bool:
        return self._processes.collect_processes

    @property
    def redaction(self) -> Redaction:
        """What command lines are redacted with; replaced when the agent enrolls."""
        return self._processes.redaction

    @redaction.setter
    def redaction(self, value: Redaction) -> None:
        self._processes.redaction = value

    def describe_processes(
        self, rows: Iterable[Row], ratios: Mapping[int, float]
    ) -> tuple[ProcessSample, ...]:
        """Top-list entries for scanned ``(process, info)`` rows: usernames and command
        lines fetched, and redacted, exactly as for the periodic context."""
        return self._processes.describe(rows, ratios)

    def filesystem_samples(self, now: float) -> tuple[list[Sample], bool]:
        """The filesystem probe alone: (samples, whether it failed part-way)."""
        out: list[Sample] = []
        try:
            self._filesystems(out, now)
        except (self._ps.Error, OSError, _ProbeFailedError):
            return out, True
        return out, False


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
