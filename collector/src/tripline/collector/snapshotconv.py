"""Decode an agent's diagnostic Snapshot at the collector's edge: bounded and escaped.

A snapshot is agent input like any report: every list is cut to its bound, every
string escaped and cut (the process lists go through the same `bounded_context` as a
report's context), every number checked finite and in range. The agent's clock is
kept only as information; the ticket records when the collector received it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from google.protobuf.json_format import MessageToDict

from tripline.collector.convert import MAX_CPU_COUNT, MAX_INT64
from tripline.collector.reportcontext import bounded_context
from tripline.collector.seriescheck import MAX_LABEL_VALUE
from tripline.collector.wirecheck import InvalidMessage, clean_text
from tripline.v1 import tripline_pb2 as pb

MAX_FILESYSTEMS = 64
# The collector's own request ids (uuid4 hex); an answer naming anything else is refused.
REQUEST_ID = re.compile(r"[0-9a-f]{32}")


def _ratio(value: float, what: str, high: float = 1.0) -> float:
    if not (math.isfinite(value) and 0.0 <= value <= high):
        raise InvalidMessage(f"snapshot {what} {value!r} is not a number in 0..{high:g}")
    return value


def decode_snapshot(msg: pb.Snapshot) -> tuple[str, dict[str, Any]]:
    """(request id, JSON-ready snapshot); raises InvalidMessage (reason "context")."""
    if REQUEST_ID.fullmatch(msg.request_id) is None:
        raise InvalidMessage(
            f"snapshot request_id {clean_text(msg.request_id, 80)!r} is not one this "
            "collector issued",
            reason="context",
        )
    context = pb.Context(
        top_cpu=msg.top_cpu, top_memory=msg.top_memory, logged_in_users=msg.logged_in_users
    )
    for process in (*msg.top_cpu, *msg.top_memory):
        _ratio(process.cpu_ratio, "process cpu_ratio", MAX_CPU_COUNT)
    bounded = MessageToDict(bounded_context(context), preserving_proto_field_name=True)
    filesystems = []
    for fs in msg.filesystems[:MAX_FILESYSTEMS]:
        filesystems.append(
            {
                "mountpoint": clean_text(fs.mountpoint, MAX_LABEL_VALUE),
                "fstype": clean_text(fs.fstype, 64),
                "device": clean_text(fs.device, MAX_LABEL_VALUE),
                "size_bytes": min(fs.size_bytes, MAX_INT64),
                "avail_bytes": min(fs.avail_bytes, MAX_INT64),
                "used_ratio": round(_ratio(fs.used_ratio, "filesystem used_ratio"), 4),
            }
        )
    if not (math.isfinite(msg.uptime_seconds) and msg.uptime_seconds >= 0):
        raise InvalidMessage(f"snapshot uptime_seconds {msg.uptime_seconds!r} is not >= 0")
    span = msg.cpu_span_seconds
    if not (math.isfinite(span) and 0 <= span <= 60):
        raise InvalidMessage(f"snapshot cpu_span_seconds {span!r} is not in 0..60")
    return msg.request_id, {
        # MessageToDict writes uint64 as strings; ints are what the ticket shows
        "top_cpu": [_process(p) for p in bounded.get("top_cpu", [])],
        "top_memory": [_process(p) for p in bounded.get("top_memory", [])],
        "logged_in_users": bounded.get("logged_in_users", []),
        "filesystems": filesystems,
        "uptime_seconds": round(msg.uptime_seconds, 1),
        "cpu_usage_ratio": round(_ratio(msg.cpu_usage_ratio, "cpu_usage_ratio"), 4),
        "memory_used_ratio": round(_ratio(msg.memory_used_ratio, "memory_used_ratio"), 4),
        "processes": msg.processes,
        "cpu_span_seconds": round(span, 3),
    }


def _process(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "pid": int(p.get("pid", 0)),
        "name": p.get("name", ""),
        "username": p.get("username", ""),
        "cpu_ratio": round(float(p.get("cpu_ratio", 0.0)), 4),
        "memory_rss_bytes": int(p.get("memory_rss_bytes", 0)),
        "cmdline": p.get("cmdline", ""),
    }
