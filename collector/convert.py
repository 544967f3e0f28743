"""Decode and validate agent messages into plain data (protobuf stays at this edge).

A report is accepted whole or rejected whole: nothing from a rejected report is stored.
Every rejection says what is wrong and where, so the agent's log tells a person what to fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
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
    context: Mapping[str, Any]
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
        # The hot path of the collector: names are checked once per process, labels only
        # when a sample has any, and error text is built only for an error.
        name = sample.name
        if name not in _GOOD_METRICS:
            _check_metric_name(name, where, index, seq)
        value = sample.value
        if not math.isfinite(value):
            raise InvalidMessage(
                f"{where}, sample #{index} ({name}): value {value} is not finite", seq
            )
        labels: Labels = ()
        if sample.labels:
            items = sorted(sample.labels.items())
            if len(items) > MAX_LABELS:
                raise InvalidMessage(
                    f"{where}, sample #{index} ({name}): {len(items)} labels, "
                    f"more than {MAX_LABELS}",
                    seq,
                )
            for label, label_value in items:
                if label not in _GOOD_LABELS:
                    _check_label_name(label, f"{where}, sample #{index} ({name})", seq)
                if len(label_value) > MAX_LABEL_VALUE:
                    raise InvalidMessage(
                        f"{where}, sample #{index} ({name}): label {label} is longer than "
                        f"{MAX_LABEL_VALUE}",
                        seq,
                    )
            labels = tuple(items)
        key = (name, labels)
        if key in seen:
            raise InvalidMessage(
                f"{where}, sample #{index}: series {name}{dict(labels)} appears twice", seq
            )
        seen.add(key)
        samples.append((name, labels, value))
    return Report(
        instance_id=msg.instance_id,
        seq=seq,
        collected_at=msg.collected_at_seconds,
        samples=tuple(samples),
        context=LazyContext(msg.context.SerializeToString()),
        dropped_total=msg.spool_dropped_reports_total,
        host=host_dict(msg.host) if msg.HasField("host") else None,
    )


# Names already seen valid; bounded so a hostile agent cannot grow them without limit.
_GOOD_METRICS: set[str] = set()
_GOOD_LABELS: set[str] = set()
_KNOWN_NAMES_MAX = 10_000


def _check_metric_name(name: str, where: str, index: int, seq: int) -> None:
    if not METRIC_NAME.match(name) or len(name) > MAX_NAME:
        raise InvalidMessage(
            f"{where}, sample #{index}: metric name {name[:80]!r} is not a valid Prometheus "
            "name ([a-zA-Z_][a-zA-Z0-9_]*, at most 200 characters)",
            seq,
        )
    if len(_GOOD_METRICS) < _KNOWN_NAMES_MAX:
        _GOOD_METRICS.add(name)


def _check_label_name(label: str, where: str, seq: int) -> None:
    if not LABEL_NAME.match(label) or label.startswith("__") or len(label) > MAX_NAME:
        raise InvalidMessage(
            f"{where}: label name {label[:80]!r} is not a valid Prometheus label name", seq
        )
    if len(_GOOD_LABELS) < _KNOWN_NAMES_MAX:
        _GOOD_LABELS.add(label)


class LazyContext(Mapping[str, Any]):
    """A report's machine context, converted to a dict only when read.

    Most reports' context is never read: it matters only when a ticket opens. Holding
    the serialized bytes rather than the message keeps the parsed report collectable.
    """

    __slots__ = ("_data", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._data: dict[str, Any] | None = None

    def _dict(self) -> dict[str, Any]:
        if self._data is None:
            self._data = MessageToDict(
                pb.Context.FromString(self._raw), preserving_proto_field_name=True
            )
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())

    def __repr__(self) -> str:
        return f"LazyContext({self._dict()!r})"
