"""One simulated office PC: its host facts, and Reports of about 60 plausible samples.

Each PC gets a fixed shape (Windows or Linux, 2-8 cores, three filesystems, two disks,
two network interfaces) and values that move the way a real PC's do: counters only grow,
uptime grows with the clock, ratios wander inside their range. The Report message is
built once and only its values change per collection, so the generator spends its CPU on
the wire, not on building protobufs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from tripline.v1 import tripline_pb2 as pb

GIB = 2**30
# Only filesystem_used_ratio moves when a PC "fills up": its avail bytes stay put, so
# FilesystemFillingUp's linear prediction does not fire alongside FilesystemAlmostFull.
FULL_RATIO = 0.97

_PROCESSES = (
    ("chrome.exe", "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe --type=renderer"),
    ("OUTLOOK.EXE", "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE"),
    ("MsMpEng.exe", "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\MsMpEng.exe"),
    ("Teams.exe", "C:\\Users\\anna\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe"),
    ("explorer.exe", "C:\\Windows\\explorer.exe"),
    ("WINWORD.EXE", "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE /n"),
    ("svchost.exe", "C:\\Windows\\system32\\svchost.exe -k netsvcs -p"),
)


@dataclass
class _Counter:
    index: int
    rate: float  # per second


@dataclass
class FakeHost:
    """A PC numbered ``number``, booted some hours before ``started`` (unix seconds)."""

    number: int
    rng: random.Random
    started: float
    host: pb.HostInfo = field(init=False)
    report: pb.Report = field(init=False)
    fs_ratio_index: int = field(init=False)  # the system drive's used ratio
    _gauges: list[tuple[int, float, float]] = field(init=False)  # index, low, high
    _counters: list[_Counter] = field(init=False)
    _uptime_index: int = field(init=False)
    _boot_time: float = field(init=False)
    full: bool = False

    def __post_init__(self) -> None:
        rng = self.rng
        windows = self.number % 2 == 0
        cores = rng.choice((2, 4, 4, 8))
        memory = rng.choice((8, 16, 16, 32)) * GIB
        self._boot_time = self.started - rng.uniform(3_600, 10 * 86_400)
        hostname = f"{'DESKTOP' if windows else 'ws'}-{self.number:05d}"
        self.host = pb.HostInfo(
            hostname=hostname,
            os="Windows" if windows else "Linux",
            os_release="10.0.19045" if windows else "6.1.0-18-amd64",
            architecture="AMD64" if windows else "x86_64",
            machine_id=f"{self.number:032x}",
            cpu_count=cores,
            memory_total_bytes=memory,
            boot_time_seconds=self._boot_time,
            python_version="3.11.9",
        )
        report = pb.Report()
        self._gauges = []
        self._counters = []

        def add(name: str, value: float, **labels: str) -> int:
            sample = report.samples.add(name=name, value=value)
            for key, label in labels.items():
                sample.labels[key] = label
            return len(report.samples) - 1

        def gauge(name: str, low: float, high: float, **labels: str) -> None:
            self._gauges.append((add(name, rng.uniform(low, high), **labels), low, high))

        def counter(name: str, start: float, rate: float, **labels: str) -> None:
            self._counters.append(_Counter(add(name, start, **labels), rate))

        gauge("cpu_usage_ratio", 0.02, 0.6)
        for cpu in range(min(cores, 4)):
            gauge("cpu_core_usage_ratio", 0.0, 0.8, cpu=str(cpu))
        if not windows:
            for name in ("load1", "load5", "load15"):
                gauge(name, 0.0, cores * 0.5)
        used = rng.uniform(0.3, 0.8)
        add("memory_total_bytes", memory)
        gauge("memory_available_bytes", memory * (1 - used) * 0.9, memory * (1 - used))
        gauge("memory_used_bytes", memory * used, memory * used * 1.1)
        gauge("memory_used_ratio", used, min(0.9, used * 1.1))
        add("swap_total_bytes", 4 * GIB)
        gauge("swap_used_bytes", 0, 0.4 * GIB)
        gauge("swap_used_ratio", 0.0, 0.1)
        mounts = (
            [("C:\\", "NTFS", "C:\\"), ("D:\\", "NTFS", "D:\\"), ("E:\\", "exFAT", "E:\\")]
            if windows
            else [
                ("/", "ext4", "/dev/nvme0n1p2"),
                ("/boot/efi", "vfat", "/dev/nvme0n1p1"),
                ("/home", "ext4", "/dev/nvme0n1p3"),
            ]
        )
        self.fs_ratio_index = -1
        for position, (mountpoint, fstype, device) in enumerate(mounts):
            size = rng.choice((256, 512, 1024)) * GIB if position != 1 else 64 * GIB
            fill = rng.uniform(0.2, 0.8)
            labels = {"mountpoint": mountpoint, "fstype": fstype, "device": device}
            add("filesystem_size_bytes", size, **labels)
            add("filesystem_free_bytes", size * (1 - fill) * 1.05, **labels)
            add("filesystem_avail_bytes", size * (1 - fill), **labels)
            index = add("filesystem_used_ratio", fill, **labels)
            if position == 0:
                self.fs_ratio_index = index
            add("filesystem_files", size / 4096, **labels)
            add("filesystem_files_free", size * (1 - fill) / 4096, **labels)
        for disk in ("PhysicalDrive0", "PhysicalDrive1") if windows else ("nvme0n1", "sda"):
            counter("disk_read_bytes_total", rng.uniform(1, 50) * GIB, 2e5, device=disk)
            counter("disk_written_bytes_total", rng.uniform(1, 50) * GIB, 1e5, device=disk)
            counter("disk_reads_completed_total", rng.uniform(1e5, 1e6), 20, device=disk)
            counter("disk_writes_completed_total", rng.uniform(1e5, 1e6), 10, device=disk)
        for nic in ("Ethernet", "Wi-Fi") if windows else ("enp3s0", "wlp2s0"):
            counter("network_receive_bytes_total", rng.uniform(1, 20) * GIB, 5e4, device=nic)
            counter("network_transmit_bytes_total", rng.uniform(1, 5) * GIB, 1e4, device=nic)
            counter("network_receive_packets_total", rng.uniform(1e6, 1e7), 40, device=nic)
            counter("network_transmit_packets_total", rng.uniform(1e6, 1e7), 20, device=nic)
            counter("network_receive_errors_total", 0, 0, device=nic)
            counter("network_transmit_errors_total", 0, 0, device=nic)
        add("boot_time_seconds", self._boot_time)
        self._uptime_index = add("uptime_seconds", 0.0)
        gauge("processes", 150, 260)
        add("users_logged_in", 1)
        gauge("agent_collect_duration_seconds", 0.004, 0.02)
        for probe in ("temperatures", "battery"):
            add("agent_probe_errors_total", 0, probe=probe)
        self._fill_context(report.context)
        self.report = report

    def _fill_context(self, context: pb.Context) -> None:
        user = f"user{self.number % 50}"
        context.logged_in_users.append(user)
        picks = self.rng.sample(_PROCESSES, 5)
        for rank, (name, cmdline) in enumerate(picks):
            info = dict(pid=1000 + 37 * rank, name=name, username=user, cmdline=cmdline[:1024])
            context.top_cpu.add(cpu_ratio=0.4 / (rank + 1), memory_rss_bytes=2**27, **info)
            context.top_memory.add(cpu_ratio=0.01, memory_rss_bytes=2**30 // (rank + 1), **info)

    def collect(
        self,
        *,
        instance_id: str,
        seq: int,
        now: float,
        elapsed: float,
        table: bool | None = None,
    ) -> bytes:
        """The next report, serialized: values moved on by ``elapsed`` seconds.

        ``table`` None: named samples; False: the series table's definitions and the
        values by id (a stream's first report); True: values by id only, as the agent
        sends once its stream's table holds every series."""
        samples = self.report.samples
        uniform = self.rng.uniform
        for index, low, high in self._gauges:
            value = samples[index].value + uniform(-0.05, 0.05) * (high - low)
            samples[index].value = min(high, max(low, value))
        for counter in self._counters:
            samples[counter.index].value += counter.rate * elapsed * uniform(0.5, 1.5)
        samples[self._uptime_index].value = now - self._boot_time
        if self.full:
            samples[self.fs_ratio_index].value = FULL_RATIO
        self.report.instance_id = instance_id
        self.report.seq = seq
        self.report.collected_at_seconds = now
        if table is None:
            return pb.AgentMessage(report=self.report).SerializeToString()
        interned = pb.Report(
            instance_id=instance_id,
            seq=seq,
            collected_at_seconds=now,
            context=self.report.context,
            series_ids=range(len(samples)),
            series_values=[sample.value for sample in samples],
        )
        if not table:
            for series_id, sample in enumerate(samples):
                interned.series_defs.add(id=series_id, name=sample.name, labels=sample.labels)
        return pb.AgentMessage(report=interned).SerializeToString()
