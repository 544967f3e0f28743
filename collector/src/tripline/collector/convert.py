"""Decode and validate agent messages into plain data (protobuf stays at this edge).

Everything an agent sends is untrusted, however it authenticated. Enroll, Hello and
Report pass through here before anything stores, evaluates or renders them:

* names are checked with full-match rules (``re.fullmatch``: ``$`` would let a trailing
  newline through) against the Prometheus data model; label names the collector or
  Prometheus set on every series (:data:`catalogue.RESERVED_LABELS`, ``exported_*``,
  ``__*``) are refused, so relabelling can never yield two labels of one name;
* a core family (:mod:`tripline.common.catalogue`) accepts only its catalogue labels;
* free text (hostnames, OS strings, site, tags, agent version, process names, command
  lines, user names) has its control characters (C0, DEL, C1) escaped as ``\\xNN`` and is
  cut to a stated length; label values are escaped the same way and refused when longer
  than :data:`.seriescheck.MAX_LABEL_VALUE`;
* numbers that become times must be finite and between :data:`.wirecheck.MIN_TIME`
  and :data:`.wirecheck.MAX_TIME`; counts and the process context are bounded.

A report is accepted whole or rejected whole: nothing from a rejected report is stored.
A rejection (:class:`InvalidMessage`) names the field and carries a ``reason`` (one per
class of defect) for ``tripline_collector_reports_rejected_total{reason}``.

This module decodes the messages; a series' name and labels are checked in
:mod:`.seriescheck` (named samples and series-table entries alike), the process context
in :mod:`.reportcontext`, and what every check shares (the rejection, escaping, times)
is in :mod:`.wirecheck`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.json_format import MessageToDict

from tripline.collector.reportcontext import LazyContext, _context_bytes
from tripline.collector.seriescheck import check_series

# The decoders' error, named here too: their callers catch convert.InvalidMessage.
from tripline.collector.wirecheck import InvalidMessage as InvalidMessage
from tripline.collector.wirecheck import _check_time, _shown, clean_text
from tripline.common.labels import Labels
from tripline.v1 import tripline_pb2 as pb

# Spool instance ids are uuid4 hex on the agent; anything printable and short is accepted.
INSTANCE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_TOKEN = 512
# The store keeps seqs and counters in signed 64-bit columns; uint64 on the wire is wider.
MAX_INT64 = 2**63 - 1

# Free-text bounds (characters, after escaping).
MAX_HOSTNAME = 253  # a DNS name
MAX_SITE = 128
MAX_VERSION = 64
MAX_TAGS = 32
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 256
HOST_TEXT_FIELDS = {
    "hostname": MAX_HOSTNAME,
    "os": 64,
    "os_release": 256,
    "architecture": 64,
    "machine_id": 128,
    "python_version": 64,
}
MAX_CPU_COUNT = 65_536


@dataclass(frozen=True)
class Enrollment:
    token: str
    hostname: str
    site: str
    host: dict[str, Any]
    tags: dict[str, str]


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


def decode_host(host: pb.HostInfo, where: str, seq: int | None = None) -> dict[str, Any]:
    """The host facts as a dict, every string escaped and bounded, numbers checked."""
    if not 0 <= host.cpu_count <= MAX_CPU_COUNT:
        raise InvalidMessage(
            f"{where}.cpu_count {host.cpu_count} is not in 0..{MAX_CPU_COUNT}", seq, "host"
        )
    if host.memory_total_bytes > MAX_INT64:
        raise InvalidMessage(f"{where}.memory_total_bytes must be at most {MAX_INT64}", seq, "host")
    if host.boot_time_seconds != 0.0:  # 0: not known
        _check_time(host.boot_time_seconds, f"{where}.boot_time_seconds", seq)
    if len(host.tags) > MAX_TAGS:
        raise InvalidMessage(
            f"{where}.tags: {len(host.tags)} tags, more than {MAX_TAGS}", seq, "host"
        )
    clean = pb.HostInfo()
    clean.CopyFrom(host)
    for name, limit in HOST_TEXT_FIELDS.items():
        text = getattr(host, name)
        if text:
            setattr(clean, name, clean_text(text, limit))
    if host.tags:
        clean.ClearField("tags")
        for key, value in sorted(host.tags.items()):
            clean.tags[clean_text(key, MAX_TAG_KEY)] = clean_text(value, MAX_TAG_VALUE)
    return MessageToDict(clean, preserving_proto_field_name=True)


def host_dict(host: pb.HostInfo) -> dict[str, Any]:
    """Host facts as a dict, bounded like :func:`decode_host` (raises InvalidMessage)."""
    return decode_host(host, "host")


def decode_enroll(msg: pb.EnrollRequest) -> Enrollment:
    token = msg.enrollment_token
    if not token:
        raise InvalidMessage(
            "enrollment_token is empty: pass the customer's token "
            "(tripline tokens create --customer NAME)",
            reason="token",
        )
    if len(token) > MAX_TOKEN:
        raise InvalidMessage(
            f"enrollment_token is longer than {MAX_TOKEN} characters", reason="token"
        )
    host = decode_host(msg.host, "EnrollRequest.host")
    return Enrollment(
        token=token,
        hostname=str(host.get("hostname") or "unknown"),
        site=clean_text(msg.site, MAX_SITE),
        host=host,
        tags=dict(host.get("tags") or {}),
    )


def decode_hello(msg: pb.Hello) -> Hello:
    if INSTANCE_ID.fullmatch(msg.instance_id) is None:
        raise InvalidMessage(
            f"Hello.instance_id {_shown(msg.instance_id)} must be 1..64 characters of "
            "A-Z a-z 0-9 . _ : -",
            reason="instance_id",
        )
    if not math.isfinite(msg.sent_at_seconds):
        raise InvalidMessage("Hello.sent_at_seconds must be a finite unix time", reason="time")
    _check_time(msg.sent_at_seconds, "Hello.sent_at_seconds")
    return Hello(
        instance_id=msg.instance_id,
        agent_version=clean_text(msg.agent_version, MAX_VERSION),
        sent_at=msg.sent_at_seconds,
        host=decode_host(msg.host, "Hello.host"),
    )


def decode_report(
    msg: pb.Report, *, instance_id: str, max_samples: int, table: SeriesTableLike | None = None
) -> Report:
    """The report validated whole, or :class:`InvalidMessage`.

    ``table`` is the stream's series table when the collector offered one
    (:class:`tripline.collector.seriestable.SeriesTable`): definitions in the report are
    added to it only when the whole report decodes.
    """
    seq = msg.seq
    where = f"report seq {seq}"
    if seq <= 0:
        raise InvalidMessage("report seq must be >= 1", seq, "seq")
    if seq > MAX_INT64:
        raise InvalidMessage(f"{where}: seq must be at most {MAX_INT64}", seq, "seq")
    if msg.instance_id != instance_id:
        raise InvalidMessage(
            f"{where}: instance_id {_shown(msg.instance_id)} differs from the Hello's "
            f"{instance_id!r}",
            seq,
            "instance_id",
        )
    if not math.isfinite(msg.collected_at_seconds) or msg.collected_at_seconds <= 0:
        raise InvalidMessage(
            f"{where}: collected_at_seconds must be a positive unix time", seq, "time"
        )
    _check_time(msg.collected_at_seconds, f"{where}: collected_at_seconds", seq)
    if msg.spool_dropped_reports_total > MAX_INT64:
        raise InvalidMessage(
            f"{where}: spool_dropped_reports_total must be at most {MAX_INT64}", seq, "size"
        )
    count = len(msg.samples) + len(msg.series_values)
    if count > max_samples:
        raise InvalidMessage(
            f"{where}: {count} samples, more than the limit of {max_samples}",
            seq,
            "size",
        )
    samples: list[tuple[str, Labels, float]] = []
    seen: set[tuple[str, Labels]] = set()
    for index, sample in enumerate(msg.samples):
        # The hot path for agents sending named samples: names are checked once per
        # process, labels only when a sample has any, error text built only for an error.
        value = sample.value
        name, labels = check_series(sample.name, sample.labels, where, index, seq)
        if not math.isfinite(value):
            raise InvalidMessage(
                f"{where}, sample #{index} ({name}): value {value} is not finite", seq, "value"
            )
        key = (name, labels)
        if key in seen:
            raise InvalidMessage(
                f"{where}, sample #{index}: series {clean_text(f'{name}{dict(labels)}', 200)} "
                "appears twice",
                seq,
                "duplicate_series",
            )
        seen.add(key)
        samples.append((name, labels, value))
    interned = bool(msg.series_defs or msg.series_ids or msg.series_values)
    if interned and table is None:
        raise InvalidMessage(
            f"{where}: carries a series table, which this collector did not offer "
            "(Welcome.series_table_max was 0): send named samples",
            seq,
            "series_table",
        )
    context = LazyContext(_context_bytes(msg.context, where, seq))
    host = decode_host(msg.host, f"{where}: host", seq) if msg.HasField("host") else None
    if interned and table is not None:
        # Last: the table takes the report's definitions only when nothing else refuses it.
        samples.extend(table.decode(msg, where, seq, seen if samples else None))
    return Report(
        instance_id=msg.instance_id,
        seq=seq,
        collected_at=msg.collected_at_seconds,
        samples=tuple(samples),
        context=context,
        dropped_total=msg.spool_dropped_reports_total,
        host=host,
    )


class SeriesTableLike(Protocol):
    """What :func:`decode_report` needs of a stream's series table."""

    def decode(
        self, msg: pb.Report, where: str, seq: int, named: set[tuple[str, Labels]] | None
    ) -> list[tuple[str, Labels, float]]: ...
