"""Pure encoders from the agent's plain data to the wire (protobuf) or JSON.

The decoding side is the collector's (`tripline.collector.convert`); the agent reads no
reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tripline.agent.inventory import Inventory
from tripline.agent.samples import Collection, Context, ProcessSample, Sample
from tripline.agent.snapshot import MAX_REQUEST_ID, Snapshot
from tripline.v1 import tripline_pb2 as pb


def report_bytes(
    collection: Collection,
    *,
    instance_id: str,
    seq: int,
    dropped_total: int,
    inventory: Inventory | None = None,
    tags: Mapping[str, str] | None = None,
) -> bytes:
    """A serialized `pb.Report`; `inventory` (with `tags`) is sent as the report's host."""
    report = pb.Report(
        instance_id=instance_id,
        seq=seq,
        collected_at_seconds=collection.collected_at,
        samples=[_sample_pb(s) for s in collection.samples],
        context=context_pb(collection.context),
        spool_dropped_reports_total=dropped_total,
    )
    if inventory is not None:
        report.host.CopyFrom(host_info(inventory, tags or {}))
    return report.SerializeToString()


def host_info(inv: Inventory, tags: Mapping[str, str]) -> pb.HostInfo:
    return pb.HostInfo(
        hostname=inv.hostname,
        os=inv.os,
        os_release=inv.os_release,
        architecture=inv.architecture,
        machine_id=inv.machine_id,
        cpu_count=inv.cpu_count,
        memory_total_bytes=inv.memory_total_bytes,
        boot_time_seconds=inv.boot_time_seconds,
        python_version=inv.python_version,
        tags=dict(tags),
    )


def context_pb(context: Context) -> pb.Context:
    return pb.Context(
        top_cpu=[_process_pb(p) for p in context.top_cpu],
        top_memory=[_process_pb(p) for p in context.top_memory],
        logged_in_users=list(context.logged_in_users),
    )


def snapshot_pb(request_id: str, snapshot: Snapshot) -> pb.Snapshot:
    return pb.Snapshot(
        request_id=request_id[:MAX_REQUEST_ID],
        taken_at_seconds=snapshot.taken_at,
        cpu_span_seconds=snapshot.cpu_span_seconds,
        top_cpu=[_process_pb(p) for p in snapshot.top_cpu],
        top_memory=[_process_pb(p) for p in snapshot.top_memory],
        filesystems=[
            pb.FilesystemInfo(
                mountpoint=f.mountpoint,
                fstype=f.fstype,
                device=f.device,
                size_bytes=max(0, f.size_bytes),
                avail_bytes=max(0, f.avail_bytes),
                used_ratio=f.used_ratio,
            )
            for f in snapshot.filesystems
        ],
        logged_in_users=list(snapshot.logged_in_users),
        uptime_seconds=snapshot.uptime_seconds,
        cpu_usage_ratio=snapshot.cpu_usage_ratio,
        memory_used_ratio=snapshot.memory_used_ratio,
        processes=min(snapshot.processes, 2**32 - 1),
    )


def collection_to_dict(c: Collection) -> dict[str, Any]:
    """JSON-ready form of a collection (what `tripline agent --once --json` prints)."""
    return {
        "collected_at": c.collected_at,
        "samples": [
            {"name": s.name, "labels": dict(s.labels), "value": s.value} for s in c.samples
        ],
        "context": context_to_dict(c.context),
        "probe_errors": dict(c.probe_errors),
    }


def context_to_dict(context: Context) -> dict[str, Any]:
    return {
        "top_cpu": [_process_dict(p) for p in context.top_cpu],
        "top_memory": [_process_dict(p) for p in context.top_memory],
        "logged_in_users": list(context.logged_in_users),
    }


def _sample_pb(s: Sample) -> pb.Sample:
    return pb.Sample(name=s.name, labels=dict(s.labels), value=s.value)


def _process_pb(p: ProcessSample) -> pb.ProcessInfo:
    return pb.ProcessInfo(
        pid=p.pid,
        name=p.name,
        username=p.username,
        cpu_ratio=p.cpu_ratio,
        memory_rss_bytes=p.memory_rss_bytes,
        cmdline=p.cmdline,
    )


def _process_dict(p: ProcessSample) -> dict[str, Any]:
    return {
        "pid": p.pid,
        "name": p.name,
        "username": p.username,
        "cpu_ratio": p.cpu_ratio,
        "memory_rss_bytes": p.memory_rss_bytes,
        "cmdline": p.cmdline,
    }
