from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
import types
from collections import Counter, namedtuple
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import psutil
import pytest

from tripline.agent.inventory import inventory
from tripline.agent.probes import Prober, cpu_usage_ratio, real_filesystem, whole_disk
from tripline.agent.processes import CMDLINE_MAX_CHARS, process_cpu_ratio
from tripline.agent.redact import Redaction
from tripline.agent.samples import Collection
from tripline.common import catalogue

# The probes emit through the catalogue: every name they send is a core family there.
ALLOWED_NAMES = set(catalogue.BY_NAME)
PROBES = {
    "cpu",
    "load",
    "memory",
    "swap",
    "filesystem",
    "disk",
    "network",
    "uptime",
    "temperature",
    "battery",
    "users",
    "processes",
}

Times = namedtuple("Times", "user nice system idle iowait guest guest_nice")
WinTimes = namedtuple("WinTimes", "user system idle interrupt dpc")
# Shapes of psutil's own result tuples, for the fake module.
Partition = namedtuple("Partition", "device mountpoint fstype opts")
Temperature = namedtuple("Temperature", "label current high critical")
Battery = namedtuple("Battery", "percent secsleft power_plugged")


def values(c: Collection, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {s.labels: s.value for s in c.samples if s.name == name}


def one(c: Collection, name: str) -> float:
    found = values(c, name)
    assert list(found) == [()], f"{name}: {found}"
    return found[()]


def errors_sample(c: Collection, probe: str) -> float:
    return values(c, "agent_probe_errors_total")[(("probe", probe),)]


# --- pure maths -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (Times(0, 0, 0, 0, 0, 0, 0), Times(30, 0, 10, 60, 0, 0, 0), 0.4),
        # iowait is idle time, not work
        (Times(0, 0, 0, 0, 0, 0, 0), Times(20, 0, 0, 60, 20, 0, 0), 0.2),
        # guest time is already inside user on Linux and must not count twice
        (Times(0, 0, 0, 0, 0, 0, 0), Times(50, 0, 0, 50, 0, 30, 0), 0.5),
        # nothing elapsed
        (Times(5, 0, 5, 5, 0, 0, 0), Times(5, 0, 5, 5, 0, 0, 0), 0.0),
        # a counter stepping backwards is clamped rather than making usage negative
        (Times(10, 0, 0, 100, 0, 0, 0), Times(5, 0, 0, 110, 0, 0, 0), 0.0),
        (Times(0, 0, 0, 0, 0, 0, 0), Times(100, 0, 0, 0, 0, 0, 0), 1.0),
        (WinTimes(0, 0, 0, 0, 0), WinTimes(10, 10, 20, 0, 0), 0.5),
    ],
)
def test_cpu_usage_ratio(before: Any, after: Any, expected: float) -> None:
    assert cpu_usage_ratio(before, after) == pytest.approx(expected)


def test_cpu_usage_ratio_on_real_snapshots_is_a_ratio() -> None:
    a = psutil.cpu_times()
    b = psutil.cpu_times()
    assert 0.0 <= cpu_usage_ratio(a, b) <= 1.0


@pytest.mark.parametrize(
    ("before", "after", "elapsed", "expected"),
    [
        (10.0, 10.5, 1.0, 0.5),
        (10.0, 14.0, 2.0, 2.0),  # two cores busy
        (None, 0.25, 1.0, 0.25),  # started during the interval
        (50.0, 0.5, 1.0, 0.5),  # pid reused by a new process
        (10.0, 30.0, 1.0, 4.0),  # capped at the number of cores
        (10.0, 11.0, 0.0, 0.0),  # no time elapsed (clock went back)
    ],
)
def test_process_cpu_ratio(
    before: float | None, after: float, elapsed: float, expected: float
) -> None:
    assert process_cpu_ratio(before, after, elapsed, ceiling=4.0) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("fstype", "mountpoint", "opts", "real"),
    [
        ("ext4", "/", "rw,relatime", True),
        ("xfs", "/home", "rw", True),
        ("NTFS", "C:\\", "rw,fixed", True),
        ("apfs", "/System/Volumes/Data", "rw,local", True),
        ("tmpfs", "/run", "rw", False),
        ("devtmpfs", "/dev", "rw", False),
        ("overlay", "/", "rw", False),
        ("squashfs", "/snap/core/1", "ro", False),
        ("ext4", "/snap/foo/2", "ro", False),
        ("fuse.snapfuse", "/media/x", "ro", False),
        ("cgroup2", "/sys/fs/cgroup", "rw", False),
        ("nsfs", "/run/netns/x", "rw", False),
        ("CDFS", "D:\\", "ro,cdrom", False),
        ("", "E:\\", "removable", False),  # unready drive on Windows
    ],
)
def test_real_filesystem(fstype: str, mountpoint: str, opts: str, real: bool) -> None:
    assert real_filesystem(fstype, mountpoint, opts) is real


@pytest.mark.parametrize(
    ("device", "whole"),
    [
        ("sda", True),
        ("vda", True),
        ("nvme0n1", True),
        ("mmcblk0", True),
        ("PhysicalDrive0", True),
        ("disk0", True),
        ("sda1", False),
        ("vda2", False),
        ("nvme0n1p1", False),
        ("mmcblk0p1", False),
        ("loop0", False),
        ("ram0", False),
        ("zram0", False),
    ],
)
def test_whole_disk(device: str, whole: bool) -> None:
    assert whole_disk(device) is whole


# --- the real machine ------------------------------------------------------------------


def test_first_collection_takes_a_cpu_baseline_second_reports_usage() -> None:
    prober = Prober(collect_processes=False)
    first = prober.collect(now=time.time())
    assert values(first, "cpu_usage_ratio") == values(first, "cpu_core_usage_ratio") == {}
    second = prober.collect(now=time.time())
    usage = values(second, "cpu_usage_ratio")
    per_core = values(second, "cpu_core_usage_ratio")
    cores = psutil.cpu_count() or 0
    assert cores > 0
    # One name, one label set: the machine under its name, each CPU under its own.
    assert set(usage) == {()}
    assert set(per_core) == {(("cpu", str(i)),) for i in range(cores)}
    assert all(0.0 <= v <= 1.0 for v in [*usage.values(), *per_core.values()])


def test_real_collection_is_plausible() -> None:
    prober = Prober()
    now = time.time()
    prober.collect(now=now)
    c = prober.collect(now=now + 10)
    assert c.collected_at == now + 10
    names = {s.name for s in c.samples}
    assert names <= ALLOWED_NAMES
    always = {
        "cpu_usage_ratio",
        "memory_total_bytes",
        "memory_available_bytes",
        "memory_used_ratio",
        "swap_used_ratio",
        "filesystem_size_bytes",
        "filesystem_avail_bytes",
        "filesystem_used_ratio",
        "boot_time_seconds",
        "uptime_seconds",
        "processes",
        "agent_collect_duration_seconds",
        "agent_probe_errors_total",
    }
    assert always <= names
    if hasattr(os, "getloadavg"):
        assert {"load1", "load5", "load15"} <= names
    for s in c.samples:
        assert isinstance(s.value, float) and math.isfinite(s.value), s
        assert list(s.labels) == sorted(s.labels), s
        if s.name.endswith(("_ratio", "_plugged")):
            assert 0.0 <= s.value <= 1.0, s
        if s.name.endswith(("_total", "_bytes", "_count", "_seconds")):
            assert s.value >= 0, s
    series = Counter((s.name, s.labels) for s in c.samples)
    assert [k for k, n in series.items() if n > 1] == []
    assert one(c, "memory_used_bytes") <= one(c, "memory_total_bytes")
    assert one(c, "uptime_seconds") == pytest.approx(now + 10 - psutil.boot_time())
    assert set(c.probe_errors) == PROBES
    assert {k: v for k, v in c.probe_errors.items() if v} == {}


def test_root_filesystem_matches_df() -> None:
    c = Prober(collect_processes=False).collect(now=time.time())
    roots = [lbl for lbl in values(c, "filesystem_size_bytes") if ("mountpoint", "/") in lbl]
    assert len(roots) == 1
    lbl = roots[0]
    assert {k for k, _ in lbl} == {"mountpoint", "fstype", "device"}
    st = os.statvfs("/")
    size = values(c, "filesystem_size_bytes")[lbl]
    avail = values(c, "filesystem_avail_bytes")[lbl]
    free = values(c, "filesystem_free_bytes")[lbl]
    assert size == st.f_blocks * st.f_frsize
    assert 0 <= avail <= free <= size
    used = size - free
    assert values(c, "filesystem_used_ratio")[lbl] == pytest.approx(used / (used + avail))
    if st.f_files:
        assert values(c, "filesystem_files")[lbl] == st.f_files
    for other in values(c, "filesystem_size_bytes"):
        fstype = dict(other)["fstype"]
        assert fstype not in {"tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs"}


def test_network_skips_loopback_and_disks_skip_partitions() -> None:
    c = Prober(collect_processes=False).collect(now=time.time())
    nics = {dict(lbl)["device"] for lbl in values(c, "network_receive_bytes_total")}
    assert "lo" not in nics
    assert nics == {n for n in psutil.net_io_counters(pernic=True) if n != "lo"}
    disks = {dict(lbl)["device"] for lbl in values(c, "disk_read_bytes_total")}
    assert all(whole_disk(d) for d in disks)


def test_inventory_describes_this_machine() -> None:
    inv = inventory()
    assert inv.hostname == socket.gethostname()
    assert inv.cpu_count == psutil.cpu_count()
    assert inv.memory_total_bytes == psutil.virtual_memory().total
    assert 0 < inv.boot_time_seconds < time.time()
    assert inv.os and inv.architecture and inv.python_version.startswith("3.")
    if sys.platform.startswith("linux") and os.path.exists("/etc/machine-id"):
        assert inv.machine_id == Path("/etc/machine-id").read_text().strip()


@pytest.fixture
def busy_child() -> Iterator[subprocess.Popen[bytes]]:
    """A process that burns CPU and holds 200 MiB resident, marked in its command line."""
    code = "import sys; ballast = b'x' * (200 << 20); print('ready', flush=True)\nwhile 1: pass"
    child = subprocess.Popen(
        [sys.executable, "-c", code, "tripline-busy-marker"], stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()


def _cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def test_top_processes_find_a_busy_process(busy_child: subprocess.Popen[bytes]) -> None:
    prober = Prober(top_n=10, process_interval=0)
    first = prober.collect(now=1000.0)
    assert first.context.top_cpu == ()  # no per-process baseline yet
    start = _cpu_seconds(busy_child.pid)
    while _cpu_seconds(busy_child.pid) < start + 0.3:  # wait for work, not for time
        time.sleep(0.02)
    # The prober's elapsed time is the difference of the `now` values it is given.
    c = prober.collect(now=1001.0)
    top = {p.pid: p for p in c.context.top_cpu}
    assert busy_child.pid in top
    busy = top[busy_child.pid]
    assert busy.cpu_ratio >= 0.3 - 1e-9  # float sums of ticks
    assert "tripline-busy-marker" in busy.cmdline
    assert busy.name.startswith("python")
    ratios = [p.cpu_ratio for p in c.context.top_cpu]
    assert ratios == sorted(ratios, reverse=True)
    by_mem = {p.pid: p for p in c.context.top_memory}
    assert by_mem[busy_child.pid].memory_rss_bytes >= 200 << 20
    rss = [p.memory_rss_bytes for p in c.context.top_memory]
    assert rss == sorted(rss, reverse=True)


def test_processes_are_scanned_at_most_once_per_process_interval() -> None:
    scans = 0

    def process_iter(**kwargs: Any) -> Iterator[Any]:
        nonlocal scans
        scans += 1
        yield from psutil.process_iter(**kwargs)

    prober = Prober(psutil_module=fake_psutil(process_iter=process_iter), process_interval=60)
    first = prober.collect(now=0.0)
    second = prober.collect(now=10.0)
    assert scans == 1
    assert second.context.top_memory == first.context.top_memory  # reused in between
    count = [s.value for s in second.samples if s.name == "processes"]
    assert len(count) == 1 and count[0] > 0  # still counted every collection (cheaply)
    prober.collect(now=60.0)
    assert scans == 2


def test_collect_processes_false_skips_the_scan() -> None:
    prober = Prober(collect_processes=False)
    prober.collect(now=1.0)
    c = prober.collect(now=2.0)
    assert c.context.top_cpu == () and c.context.top_memory == ()
    assert one(c, "processes") > 0


# --- failures, with a fake psutil module -------------------------------------------------


def fake_psutil(**overrides: Callable[..., Any]) -> types.ModuleType:
    """The real psutil with some functions replaced."""
    module = types.ModuleType("fake_psutil")
    module.__dict__.update({k: v for k, v in vars(psutil).items() if not k.startswith("__")})
    module.__dict__.update(overrides)
    return module


def raise_(exc: BaseException) -> Callable[..., Any]:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise exc

    return fail


def test_a_failing_probe_keeps_the_others_and_counts_cumulatively() -> None:
    ps = fake_psutil(disk_partitions=raise_(psutil.AccessDenied(pid=None, msg="denied")))
    prober = Prober(psutil_module=ps, collect_processes=False)
    first = prober.collect(now=time.time())
    second = prober.collect(now=time.time())
    assert values(second, "filesystem_size_bytes") == {}
    assert one(second, "memory_total_bytes") > 0
    assert values(second, "cpu_usage_ratio")
    assert first.probe_errors["filesystem"] == 1
    assert second.probe_errors["filesystem"] == 2
    assert errors_sample(second, "filesystem") == 2.0
    assert errors_sample(second, "memory") == 0.0
    assert {k: v for k, v in second.probe_errors.items() if v} == {"filesystem": 2}


@pytest.mark.parametrize(
    ("function", "probe", "gone"),
    [
        ("virtual_memory", "memory", "memory_total_bytes"),
        ("swap_memory", "swap", "swap_used_ratio"),
        ("net_io_counters", "network", "network_receive_bytes_total"),
        ("boot_time", "uptime", "uptime_seconds"),
        ("users", "users", "users_logged_in"),
        ("pids", "processes", "processes"),
        ("cpu_times", "cpu", "cpu_usage_ratio"),
    ],
)
def test_each_probe_fails_alone(function: str, probe: str, gone: str) -> None:
    ps = fake_psutil(**{function: raise_(OSError(5, "I/O error"))})
    prober = Prober(psutil_module=ps, collect_processes=False)
    prober.collect(now=1.0)
    c = prober.collect(now=2.0)
    assert values(c, gone) == {}
    assert {k: v for k, v in c.probe_errors.items() if v} == {probe: 2}
    assert values(c, "filesystem_size_bytes")  # the rest still arrives
    assert values(c, "agent_collect_duration_seconds")


def test_one_bad_mount_keeps_the_good_ones() -> None:
    missing = Partition("/dev/gone", "/nonexistent-tripline", "ext4", "rw")

    def partitions(all: bool = False) -> list[Any]:
        return [*psutil.disk_partitions(all=all), missing]

    c = Prober(psutil_module=fake_psutil(disk_partitions=partitions)).collect(now=1.0)
    mounts = {dict(lbl)["mountpoint"] for lbl in values(c, "filesystem_size_bytes")}
    assert "/" in mounts and "/nonexistent-tripline" not in mounts
    assert c.probe_errors["filesystem"] == 1


def test_pseudo_filesystems_are_skipped_in_collect() -> None:
    tmp = Partition("tmpfs", "/", "tmpfs", "rw")
    c = Prober(psutil_module=fake_psutil(disk_partitions=lambda all=False: [tmp])).collect(1.0)
    assert values(c, "filesystem_size_bytes") == {}
    assert c.probe_errors["filesystem"] == 0


def test_a_scan_failing_midway_counts_and_keeps_the_other_probes() -> None:
    def process_iter(**kwargs: Any) -> Iterator[Any]:
        yield from list(psutil.process_iter(**kwargs))[:3]
        raise psutil.AccessDenied(pid=None, msg="scan interrupted")

    prober = Prober(psutil_module=fake_psutil(process_iter=process_iter))
    prober.collect(now=1.0)
    c = prober.collect(now=2.0)
    assert c.probe_errors["processes"] == 2
    assert values(c, "processes") == {}
    assert c.context.top_cpu == () and c.context.top_memory == ()
    assert values(c, "memory_total_bytes")


@pytest.mark.parametrize(
    "exc",
    [
        psutil.NoSuchProcess(pid=1),
        psutil.AccessDenied(pid=1),
        psutil.ZombieProcess(pid=1),
    ],
)
def test_per_process_errors_are_caught_per_process(exc: psutil.Error) -> None:
    class Vanishing:
        """A real process whose command line can no longer be read."""

        def __init__(self, proc: psutil.Process) -> None:
            self.info = proc.info

        def cmdline(self) -> list[str]:
            raise exc

        def username(self) -> str:
            raise exc

    vanished: set[int] = set()

    def process_iter(**kwargs: Any) -> Iterator[Any]:
        for i, proc in enumerate(psutil.process_iter(**kwargs)):
            if i % 2:
                vanished.add(proc.pid)
                yield Vanishing(proc)
            else:
                yield proc

    c = Prober(psutil_module=fake_psutil(process_iter=process_iter), top_n=50).collect(1.0)
    assert c.probe_errors["processes"] == 0
    top = c.context.top_memory
    assert {p.pid for p in top} & vanished
    assert all(p.cmdline == "" for p in top if p.pid in vanished)
    assert any(p.cmdline for p in top if p.pid not in vanished)


def test_sensor_readings_become_labelled_series() -> None:
    shwtemp = Temperature
    battery = Battery(percent=42.0, secsleft=100, power_plugged=False)
    ps = fake_psutil(
        sensors_temperatures=lambda: {
            "coretemp": [shwtemp("Core 0", 51.0, 80, 90), shwtemp("Core 0", 52.0, 80, 90)],
            "acpitz": [shwtemp("", 40.0, None, None), shwtemp("", float("nan"), None, None)],
        },
        sensors_battery=lambda: battery,
    )
    c = Prober(psutil_module=ps, collect_processes=False).collect(now=1.0)
    assert values(c, "temperature_celsius") == {
        (("chip", "coretemp"), ("sensor", "Core 0")): 51.0,
        (("chip", "coretemp"), ("sensor", "Core 0 #2")): 52.0,
        (("chip", "acpitz"), ("sensor", "temp1")): 40.0,  # NaN reading dropped
    }
    assert one(c, "battery_charge_ratio") == pytest.approx(0.42)
    assert one(c, "battery_power_plugged") == 0.0


def test_a_failed_scan_keeps_the_previous_baseline(busy_child: subprocess.Popen[bytes]) -> None:
    calls = 0

    def process_iter(**kwargs: Any) -> Iterator[Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise psutil.AccessDenied(pid=None, msg="scan refused")
        yield from psutil.process_iter(**kwargs)

    prober = Prober(
        psutil_module=fake_psutil(process_iter=process_iter), top_n=10, process_interval=0
    )
    prober.collect(now=100.0)
    start = _cpu_seconds(busy_child.pid)
    assert prober.collect(now=101.0).probe_errors["processes"] == 1
    while _cpu_seconds(busy_child.pid) < start + 0.2:
        time.sleep(0.02)
    third = prober.collect(now=104.0)
    busy = {p.pid: p for p in third.context.top_cpu}[busy_child.pid]
    # Measured against the first scan, over the 4 seconds since it.
    spent = _cpu_seconds(busy_child.pid)
    assert 0.2 / 4 - 1e-9 <= busy.cpu_ratio <= spent / 4 + 1e-9  # float sums of ticks


@pytest.fixture
def secret_child() -> Iterator[subprocess.Popen[bytes]]:
    """A process with secrets in its command line, holding 300 MiB resident."""
    code = "import time; ballast = b'x' * (300 << 20); print('ready', flush=True); time.sleep(600)"
    argv = [sys.executable, "-c", code, "tripline-secret-marker", "--password", "hunter2"]
    argv += ["db_password=swordfish", "https://u:letmein@h.example/", "tle_known_secret_1"]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()


def test_command_lines_are_redacted_in_the_probe(secret_child: subprocess.Popen[bytes]) -> None:
    redaction = Redaction().with_secrets("tle_known_secret_1")
    c = Prober(top_n=50, redaction=redaction).collect(now=1.0)
    found = {p.pid: p for p in c.context.top_memory}[secret_child.pid]
    assert "tripline-secret-marker --password *** db_password=***" in found.cmdline
    assert "https://u:***@h.example/ ***" in found.cmdline
    for secret in ("hunter2", "swordfish", "letmein", "tle_known_secret_1"):
        assert secret not in found.cmdline


def test_no_command_lines_at_all_when_configured_so(
    secret_child: subprocess.Popen[bytes],
) -> None:
    c = Prober(top_n=50, command_lines=False).collect(now=1.0)
    found = {p.pid: p for p in c.context.top_memory}[secret_child.pid]
    assert found.cmdline == "" and found.name.startswith("python")
    assert all(p.cmdline == "" for p in c.context.top_memory)


def test_a_secret_is_redacted_before_the_line_is_cut() -> None:
    class LongLine:
        info: ClassVar[dict[str, Any]] = {
            "pid": 7,
            "name": "app",
            "cpu_times": None,
            "memory_info": None,
        }

        def cmdline(self) -> list[str]:
            # the URL's password ends after the cut: cut first, no rule would see it
            return ["app", "x" * (CMDLINE_MAX_CHARS - 20), "https://user:password123456@host"]

        def username(self) -> str:
            return "u"

    ps = fake_psutil(process_iter=lambda **kwargs: iter([LongLine()]))
    c = Prober(psutil_module=ps).collect(now=1.0)
    (process,) = c.context.top_memory
    assert "password123" not in process.cmdline and "passw" not in process.cmdline
    assert len(process.cmdline) <= CMDLINE_MAX_CHARS
