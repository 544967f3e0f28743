from __future__ import annotations

import dataclasses
import json
import time

import pytest

from tripline.agent.inventory import Inventory, inventory
from tripline.agent.probes import Prober
from tripline.agent.render import human_bytes, human_duration, render_json, render_table
from tripline.agent.samples import Collection, Context, ProcessSample, Sample

INVENTORY = Inventory(
    hostname="pc-reception",
    os="Linux",
    os_release="6.8.0",
    architecture="x86_64",
    machine_id="",
    cpu_count=2,
    memory_total_bytes=8 * 2**30,
    boot_time_seconds=1_700_000_000.0,
    python_version="3.11.9",
)
FS = (("device", "/dev/sda1"), ("fstype", "ext4"), ("mountpoint", "/"))
DATA = (("device", "/dev/sdb1"), ("fstype", "xfs"), ("mountpoint", "/data"))
PROCS = (
    ProcessSample(11, "backup", "root", 1.5, 512 * 2**20, "/usr/bin/backup --all\n--verbose"),
    ProcessSample(12, "firefox", "alice", 0.25, 2 * 2**30, "firefox " + "x" * 100),
)


def synthetic(samples: tuple[Sample, ...], errors: dict[str, int] | None = None) -> Collection:
    return Collection(
        collected_at=1_700_003_600.0,
        samples=samples,
        context=Context(top_cpu=PROCS, top_memory=PROCS[::-1], logged_in_users=("alice",)),
        probe_errors=errors or {},
    )


FULL = (
    Sample("cpu_usage_ratio", (), 0.625),
    Sample("cpu_core_usage_ratio", (("cpu", "0"),), 0.5),
    Sample("cpu_core_usage_ratio", (("cpu", "1"),), 0.75),
    Sample("load1", (), 1.5),
    Sample("load5", (), 1.25),
    Sample("load15", (), 0.5),
    Sample("memory_total_bytes", (), 8 * 2**30),
    Sample("memory_available_bytes", (), 2 * 2**30),
    Sample("memory_used_bytes", (), 6 * 2**30),
    Sample("memory_used_ratio", (), 0.75),
    Sample("swap_total_bytes", (), 2**30),
    Sample("swap_used_bytes", (), 2**29),
    Sample("swap_used_ratio", (), 0.5),
    Sample("filesystem_size_bytes", FS, 100 * 2**30),
    Sample("filesystem_free_bytes", FS, 10 * 2**30),
    Sample("filesystem_avail_bytes", FS, 5 * 2**30),
    Sample("filesystem_used_ratio", FS, 90 / 95),
    Sample("filesystem_files", FS, 1000),
    Sample("filesystem_files_free", FS, 750),
    Sample("filesystem_size_bytes", DATA, 2**40),
    Sample("filesystem_free_bytes", DATA, 2**39),
    Sample("filesystem_avail_bytes", DATA, 2**39),
    Sample("filesystem_used_ratio", DATA, 0.5),
    Sample("disk_read_bytes_total", (("device", "sda"),), 3 * 2**20),
    Sample("disk_written_bytes_total", (("device", "sda"),), 2**20),
    Sample("disk_reads_completed_total", (("device", "sda"),), 1234),
    Sample("disk_writes_completed_total", (("device", "sda"),), 56),
    Sample("network_receive_bytes_total", (("device", "eth0"),), 1536),
    Sample("network_transmit_bytes_total", (("device", "eth0"),), 512),
    Sample("network_receive_packets_total", (("device", "eth0"),), 10),
    Sample("network_transmit_packets_total", (("device", "eth0"),), 5),
    Sample("network_receive_errors_total", (("device", "eth0"),), 1),
    Sample("network_transmit_errors_total", (("device", "eth0"),), 0),
    Sample("uptime_seconds", (), 3 * 86400 + 4 * 3600 + 5 * 60 + 6),
    Sample("temperature_celsius", (("chip", "coretemp"), ("sensor", "Core 0")), 61.0),
    Sample("battery_charge_ratio", (), 0.8),
    Sample("battery_power_plugged", (), 1.0),
    Sample("agent_collect_duration_seconds", (), 0.0123),
)


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * 2**30, "5.0 GiB"), (2**50, "1.0 PiB")],
)
def test_human_bytes(n: float, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(59, "0m"), (61, "1m"), (3 * 3600 + 120, "3h 2m"), (200000, "2d 7h 33m")]
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_synthetic_table() -> None:
    text = render_table(synthetic(FULL, {"filesystem": 2, "memory": 0}), INVENTORY)
    lines = text.splitlines()
    assert lines[0] == "HOST pc-reception"
    assert "Linux 6.8.0 x86_64, 2 CPUs, 8.0 GiB RAM" in text
    assert "up 3d 4h 5m, collected 2023-11-14 23:13:20 UTC" in text
    assert "logged in: alice" in text
    assert "usage 62.5%   per core  0: 50.0%  1: 75.0%" in text
    assert "load  1.50 1.25 0.50" in text
    assert "used 6.0 GiB of 8.0 GiB (75.0%), available 2.0 GiB" in text
    assert "swap 512.0 MiB of 1.0 GiB (50.0%)" in text
    fs = text[text.index("FILESYSTEMS") : text.index("DISKS")].splitlines()
    header = ["Mounted", "on", "Type", "Device", "Size", "Used", "Avail", "Use%", "Inodes%"]
    assert fs[1].split() == header
    root = ["/", "ext4", "/dev/sda1", "100.0", "GiB", "90.0", "GiB", "5.0", "GiB", "94.7%"]
    assert fs[2].split() == [*root, "25.0%"]
    assert fs[3].split()[-2:] == ["50.0%", "-"]  # no inode counts for /data
    disks = text[text.index("DISKS") :].splitlines()
    assert disks[2].split() == ["sda", "3.0", "MiB", "1.0", "MiB", "1234", "56"]
    net = text[text.index("NETWORK") :].splitlines()
    assert net[2].split() == ["eth0", "1.5", "KiB", "512", "B", "10", "5", "1", "0"]
    assert "coretemp Core 0: 61.0 °C" in text
    assert "battery 80.0%, plugged in" in text
    cpu = text[text.index("TOP PROCESSES BY CPU") :].splitlines()
    # cpu_ratio is a share of one core (0..cpu_count): shown in cores, not as a percentage
    assert cpu[1].split()[:4] == ["PID", "User", "CPU", "cores"]
    assert cpu[2].split()[:5] == ["11", "root", "1.50", "512.0", "MiB"]
    assert "/usr/bin/backup --all --verbose" in cpu[2]  # newline flattened
    assert cpu[3].endswith("x" * 49 + "...")
    mem = text[text.index("TOP PROCESSES BY MEMORY") :].splitlines()
    assert mem[2].split()[0] == "12"
    assert "collect took 12 ms, probe errors: filesystem 2" in text
    assert text.endswith("\n")


def test_first_collection_and_missing_sections() -> None:
    sparse = (Sample("memory_total_bytes", (), 2**30), Sample("swap_total_bytes", (), 0))
    c = Collection(
        collected_at=0.0,
        samples=sparse,
        context=Context((), (), ()),
        probe_errors={"cpu": 0},
    )
    text = render_table(c, INVENTORY)
    assert "needs two collections" in text
    assert "swap none" in text
    for absent in ("FILESYSTEMS", "DISKS", "NETWORK", "SENSORS", "TOP PROCESSES", "load"):
        assert absent not in text
    assert "probe errors" not in text
    assert "up ?" in text
    assert "logged in" not in text


def test_json_has_host_and_collection() -> None:
    doc = json.loads(render_json(synthetic(FULL), INVENTORY))
    assert doc["host"]["hostname"] == "pc-reception"
    assert doc["host"]["memory_total_bytes"] == 8 * 2**30
    assert doc["collected_at"] == 1_700_003_600.0
    assert {"name": "load1", "labels": {}, "value": 1.5} in doc["samples"]
    assert doc["context"]["top_cpu"][0]["pid"] == 11


def test_real_collection_renders() -> None:
    prober = Prober()
    prober.collect(now=time.time())
    c = prober.collect(now=time.time())
    inv = inventory()
    text = render_table(c, inv)
    assert text.startswith(f"HOST {inv.hostname}\n")
    for section in ("CPU", "MEMORY", "FILESYSTEMS", "AGENT"):
        assert f"\n\n{section}" in text
    assert "usage " in text and "needs two collections" not in text
    fs = text[text.index("FILESYSTEMS") :].split("\n\n")[0].splitlines()
    assert any(line.split()[0] == "/" for line in fs[2:])
    doc = json.loads(render_json(c, inv))
    assert len(doc["samples"]) == len(c.samples)


def test_hostile_names_and_command_lines_are_escaped() -> None:
    osc52 = "\x1b]52;c;cm0gLXJmIH4K\x07"
    hostile = (
        ProcessSample(13, f"ev\x9bil{osc52}", "mallory", 0.5, 2**20, f"run {osc52}\u202etxt"),
    )
    collection = Collection(
        collected_at=1_700_003_600.0,
        samples=(Sample("filesystem_size_bytes", (("mountpoint", "/mnt/\x1b[2J"),), 2**30),),
        context=Context(top_cpu=hostile, top_memory=(), logged_in_users=("eve\x1b[31m",)),
        probe_errors={},
    )
    inv = dataclasses.replace(INVENTORY, hostname="pc\n| forged")
    text = render_table(collection, inv)
    for char in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert char not in text
    assert text.startswith("HOST pc\\n| forged\n")
    assert "ev\\x9bil\\x1b]52;c;" in text
    assert "logged in: eve\\x1b[31m" in text
