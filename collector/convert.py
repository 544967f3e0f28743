"""Decode and validate agent messages into plain data (protobuf stays at this edge).

A report is accepted whole or rejected whole: nothing from a rejected report is stored.
Every rejection says what is wrong and where, so the agent's log tells a person what to fix.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict

from protos.tripline.v1 import tripline_pb2 as pb

Labels = tuple[tuple[str, str], ...]

METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_LABELS = 16
MAX_LABEL_VALUE = 1024
MAX_NAME = 200
# The store keeps seqs and counters in signed 64-bit columns; uint64 on the wire is wider.
MAX_INT64 = 2**63 - 1


class InvalidMessage(ValueError):
    """A message from an agent that cannot be applied. ``seq`` is set for reports."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        self.seq = seq
        super().__init__(message)


@dataclass(frozen=True)
class Hello:
    instance_id: str
    agent_version: str
    sent_at: float
    host: dict[str, Any]


@dataclass(frozen=True)
class Report:
    instance_id: str
    seq: int
    collected_at: float
    samples: tuple[tuple[str, Labels, float], ...]
    context: dict[str, Any]
    dropped_total: int
    host: dict[str, Any] | None


def host_dict(host: pb.HostInfo) -> dict[str, Any]:
    return MessageToDict(host, preserving_proto_field_name=True)


def decode_hello(msg: pb.Hello) -> Hello:
    if not msg.instance_id or len(msg.instance_id) > 64:
        raise InvalidMessage("Hello.instance_id must be 1..64 characters")
    if not math.isfinite(msg.sent_at_seconds):
        raise InvalidMessage("Hello.sent_at_seconds must be a finite unix time")
    return Hello(
        instance_id=msg.instance_id,
        agent_version=msg.agent_version[:64],
        sent_at=msg.sent_at_seconds,
        host=host_dict(msg.host),
    )


def decode_report(msg: pb.Report, *, instance_id: str, max_samples: int) -> Report:
    seq = msg.seq
    where = f"report seq {seq}"
    if seq <= 0:
        raise InvalidMessage("report seq must be >= 1", seq)
    if seq > MAX_INT64:
        raise InvalidMessage(f"{where}: seq must be at most {MAX_INT64}", seq)
    if msg.instance_id != instance_id:
        raise InvalidMessage(
            f"{where}: instance_id {msg.instance_id!r} differs from the Hello's {instance_id!r}",
            seq,
        )
    if not math.isfinite(msg.collected_at_seconds) or msg.collected_at_seconds <= 0:
        raise InvalidMessage(f"{where}: collected_at_seconds must be a positive unix time", seq)
    if msg.spool_dropped_reports_total > MAX_INT64:
        raise InvalidMessage(
            f"{where}: spool_dropped_reports_total must be at most {MAX_INT64}", seq
        )
    if len(msg.samples) > max_samples:
        raise InvalidMessage(
            f"{where}: {len(msg.samples)} samples, more than the limit of {max_samples}", seq
        )
    samples: list[tuple[str, Labels, float]] = []
    seen: set[tuple[str, Labels]] = set()
    for index, sample in enumerate(msg.samples):
        samples.append(_decode_sample(sample, f"{where}, sample #{index}", seq, seen))
    return Report(
        instance_id=msg.instance_id,
        seq=seq,
        collected_at=msg.collected_at_seconds,
        samples=tuple(samples),
        context=MessageToDict(msg.context, preserving_proto_field_name=True),
        dropped_total=msg.spool_dropped_reports_total,
        host=host_dict(msg.host) if msg.HasField("host") else None,
    )


def _decode_sample(
    sample: pb.Sample, where: str, seq: int, seen: set[tuple[str, Labels]]
) -> tuple[str, Labels, float]:
    name = sample.name
    if not METRIC_NAME.match(name) or len(name) > MAX_NAME:
        raise InvalidMessage(
            f"{where}: metric name {name[:80]!r} is not a valid Prometheus name "
            "([a-zA-Z_][a-zA-Z0-9_]*, at most 200 characters)",
            seq,
        )
    if not math.isfinite(sample.value):
        raise InvalidMessage(f"{where} ({name}): value {sample.value} is not finite", seq)
    if len(sample.labels) > MAX_LABELS:
        raise InvalidMessage(
            f"{where} ({name}): {len(sample.labels)} labels, more than {MAX_LABELS}", seq
        )
    for label, value in sample.labels.items():
        if not LABEL_NAME.match(label) or label.startswith("__"):
            raise InvalidMessage(
                f"{where} ({name}): label name {label[:80]!r} is not a valid Prometheus label name",
                seq,
            )
        if len(value) > MAX_LABEL_VALUE:
            raise InvalidMessage(
                f"{where} ({name}): label {label} is longer than {MAX_LABEL_VALUE}", seq
            )
    labels = tuple(sorted(sample.labels.items()))
    key = (name, labels)
    if key in seen:
        raise InvalidMessage(f"{where}: series {name}{dict(labels)} appears twice", seq)
    seen.add(key)
    return name, labels, sample.value
