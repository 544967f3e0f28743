"""The agent's encoders, checked by decoding what they write back into agent data."""

from __future__ import annotations

import json
import time
from typing import Any

from tripline.agent.convert import collection_to_dict, context_to_dict, host_info, report_bytes
from tripline.agent.inventory import Inventory, inventory
from tripline.agent.probes import Prober
from tripline.agent.samples import Collection, Context, ProcessSample, Sample
from tripline.v1 import tripline_pb2 as pb

INVENTORY = Inventory(
    hostname="pc-reception",
    os="Windows",
    os_release="10",
    architecture="AMD64",
    machine_id="6f1c0a7e-1111-2222-3333-444455556666",
    cpu_count=8,
    memory_total_bytes=16 * 2**30,
    boot_time_seconds=1_700_000_000.0,
    python_version="3.11.9",
)

PROC = ProcessSample(
    pid=4242,
    name="chrome.exe",
    username="ACME\\alice",
    cpu_ratio=1.75,
    memory_rss_bytes=3 * 2**30,
    cmdline='"C:\\Program Files\\Google\\Chrome\\chrome.exe" --type=renderer',
)

COLLECTION = Collection(
    collected_at=1_700_000_123.25,
    samples=(
        Sample("cpu_usage_ratio", (), 0.5),
        Sample("cpu_usage_ratio", (("cpu", "0"),), 0.25),
        Sample(
            "filesystem_used_ratio",
            (("device", "C:\\"), ("fstype", "NTFS"), ("mountpoint", 'C:\\ "quoted"\n')),
            0.9,
        ),
        Sample("network_receive_bytes_total", (("device", "Ethernet 2"),), 2.0**53),
        Sample("agent_probe_errors_total", (("probe", "filesystem"),), 3.0),
        Sample("agent_probe_errors_total", (("probe", "memory"),), 0.0),
    ),
    context=Context(top_cpu=(PROC,), top_memory=(PROC,), logged_in_users=("alice", "bob")),
    probe_errors={"filesystem": 3, "memory": 0},
)


# Decoders for the round trips below: the agent only encodes (the collector decodes
# with its own types, tested in test_collector_convert.py).


def context_from_pb(context: pb.Context) -> dict[str, Any]:
    """JSON-ready form of a report's context, same shape as `context_to_dict`."""
    return context_to_dict(_context_from_pb(context))


def collection_from_report(report: pb.Report) -> Collection:
    """The inverse of `report_bytes` for the collection part (seq, instance, host aside).

    Probe error counts travel only as agent_probe_errors_total samples and are read back
    from them.
    """
    samples = tuple(
        Sample(s.name, tuple(sorted(s.labels.items())), s.value) for s in report.samples
    )
    errors = {
        dict(s.labels).get("probe", ""): int(s.value)
        for s in samples
        if s.name == "agent_probe_errors_total"
    }
    return Collection(
        collected_at=report.collected_at_seconds,
        samples=samples,
        context=_context_from_pb(report.context),
        probe_errors=errors,
    )


def _context_from_pb(context: pb.Context) -> Context:
    return Context(
        top_cpu=tuple(_process_from_pb(p) for p in context.top_cpu),
        top_memory=tuple(_process_from_pb(p) for p in context.top_memory),
        logged_in_users=tuple(context.logged_in_users),
    )


def _process_from_pb(p: pb.ProcessInfo) -> ProcessSample:
    return ProcessSample(
        pid=p.pid,
        name=p.name,
        username=p.username,
        cpu_ratio=p.cpu_ratio,
        memory_rss_bytes=p.memory_rss_bytes,
        cmdline=p.cmdline,
    )


def parse(data: bytes) -> pb.Report:
    return pb.Report.FromString(data)


def test_report_carries_every_field() -> None:
    report = parse(report_bytes(COLLECTION, instance_id="abc", seq=42, dropped_total=7))
    assert report.instance_id == "abc"
    assert report.seq == 42
    assert report.spool_dropped_reports_total == 7
    assert report.collected_at_seconds == 1_700_000_123.25
    assert not report.HasField("host")
    fs = report.samples[2]
    assert fs.name == "filesystem_used_ratio"
    assert dict(fs.labels) == {"device": "C:\\", "fstype": "NTFS", "mountpoint": 'C:\\ "quoted"\n'}
    assert fs.value == 0.9
    assert report.samples[3].value == 2.0**53
    assert list(report.context.logged_in_users) == ["alice", "bob"]
    top = report.context.top_cpu[0]
    assert (top.pid, top.name, top.username, top.cpu_ratio) == (
        4242,
        "chrome.exe",
        PROC.username,
        1.75,
    )
    assert top.memory_rss_bytes == 3 * 2**30 and top.cmdline == PROC.cmdline


def test_report_round_trips_to_the_same_collection() -> None:
    data = report_bytes(COLLECTION, instance_id="abc", seq=1, dropped_total=0)
    assert collection_from_report(parse(data)) == COLLECTION


def test_real_collection_round_trips() -> None:
    prober = Prober()
    prober.collect(now=time.time())
    c = prober.collect(now=time.time())
    data = report_bytes(c, instance_id="i", seq=9, dropped_total=0, inventory=inventory())
    back = collection_from_report(parse(data))
    assert back.samples == c.samples
    assert back.context == c.context
    assert dict(back.probe_errors) == dict(c.probe_errors)
    assert collection_to_dict(back) == collection_to_dict(c)


def test_inventory_travels_as_host_with_tags() -> None:
    data = report_bytes(
        COLLECTION,
        instance_id="abc",
        seq=1,
        dropped_total=0,
        inventory=INVENTORY,
        tags={"site": "branch-2"},
    )
    report = parse(data)
    assert report.HasField("host")
    assert report.host == host_info(INVENTORY, {"site": "branch-2"})


def test_host_info_fields() -> None:
    host = host_info(INVENTORY, {"room": "front desk", "role": "reception"})
    assert host.hostname == "pc-reception"
    assert (host.os, host.os_release, host.architecture) == ("Windows", "10", "AMD64")
    assert host.machine_id == INVENTORY.machine_id
    assert host.cpu_count == 8
    assert host.memory_total_bytes == 16 * 2**30
    assert host.boot_time_seconds == 1_700_000_000.0
    assert host.python_version == "3.11.9"
    assert dict(host.tags) == {"room": "front desk", "role": "reception"}


def test_collection_to_dict_is_json_ready() -> None:
    d = collection_to_dict(COLLECTION)
    assert json.loads(json.dumps(d)) == d
    assert d["collected_at"] == 1_700_000_123.25
    assert d["samples"][1] == {"name": "cpu_usage_ratio", "labels": {"cpu": "0"}, "value": 0.25}
    assert d["probe_errors"] == {"filesystem": 3, "memory": 0}
    assert d["context"]["top_memory"][0] == {
        "pid": 4242,
        "name": "chrome.exe",
        "username": "ACME\\alice",
        "cpu_ratio": 1.75,
        "memory_rss_bytes": 3 * 2**30,
        "cmdline": PROC.cmdline,
    }


def test_context_from_pb_matches_the_agent_side_dict() -> None:
    report = parse(report_bytes(COLLECTION, instance_id="a", seq=1, dropped_total=0))
    context = context_from_pb(report.context)
    assert context == collection_to_dict(COLLECTION)["context"]
    assert json.loads(json.dumps(context)) == context


def test_empty_context_and_no_samples() -> None:
    empty = Collection(
        collected_at=5.0,
        samples=(),
        context=Context(top_cpu=(), top_memory=(), logged_in_users=()),
        probe_errors={},
    )
    report = parse(report_bytes(empty, instance_id="a", seq=1, dropped_total=0))
    assert context_from_pb(report.context) == {
        "top_cpu": [],
        "top_memory": [],
        "logged_in_users": [],
    }
    assert collection_from_report(report) == empty
