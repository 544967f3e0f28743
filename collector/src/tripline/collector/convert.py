"""Decode and validate agent messages into plain data (protobuf stays at this edge).

Everything an agent sends is untrusted, however it authenticated. Enroll, Hello and
Report pass through here before anything stores, evaluates or renders them:

* names are checked with full-match rules (``re.fullmatch``: ``$`` would let a trailing
  newline through) against the Prometheus data model; label names the collector or
  Prometheus set on every series (:data:`catalogue.RESERVED_LABELS`, ``exported_*``,
  ``__*``) are refused, so relabelling can never yield two labels of one name;
* a core family (:mod:`collector.catalogue`) accepts only its catalogue labels;
* free text (hostnames, OS strings, site, tags, agent version, process names, command
  lines, user names) has its control characters (C0, DEL, C1) escaped as ``\\xNN`` and is
  cut to a stated length; label values are escaped the same way and refused when longer
  than :data:`MAX_LABEL_VALUE`;
* numbers that become times must be finite and between :data:`MIN_TIME` and
  :data:`MAX_TIME`; counts and the process context are bounded.

A report is accepted whole or rejected whole: nothing from a rejected report is stored.
A rejection (:class:`InvalidMessage`) names the field and carries a ``reason`` (one per
class of defect) for ``tripline_collector_reports_rejected_total{reason}``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.json_format import MessageToDict

from tripline.common import catalogue, names
from tripline.common.labels import Labels
from tripline.v1 import tripline_pb2 as pb

# Name rules and bounds live in tripline.common.names: the agent checks what its
# textfile collector forwards against the same rules, so the edge never refuses a
# report for a PC script's bad line.
METRIC_NAME, LABEL_NAME = names.METRIC_NAME, names.LABEL_NAME
_lint_problem = names.lint_problem

# Spool instance ids are uuid4 hex on the agent; anything printable and short is accepted.
INSTANCE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_LABELS, MAX_LABEL_VALUE, MAX_NAME = names.MAX_LABELS, names.MAX_LABEL_VALUE, names.MAX_NAME
MAX_TOKEN = 512
# Agent times outside these are a broken clock or an attack: 2000-01-01 .. 2100-01-01 UTC.
MIN_TIME = 946_684_800.0
MAX_TIME = 4_102_444_800.0
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
# The process context of one report: per list, per field.
MAX_PROCESSES = 20
MAX_USERS = 32
MAX_PROCESS_NAME = 256
MAX_USERNAME = 128
MAX_CMDLINE = 1024
# Larger serialized contexts are re-encoded bounded at once, so a report's raw context
# held for a later ticket never costs more than about this.
MAX_CONTEXT_BYTES = 64 * 1024

# Reasons for tripline_collector_reports_rejected_total, one per class of defect.
REASONS = (
    "metric_name",
    "label_name",
    "label_reserved",
    "label_value",
    "core_labels",
    "value",
    "duplicate_series",
    "size",
    "time",
    "host",
    "instance_id",
    "seq",
    "context",
    "token",
    "series_table",
    "series_id",
    "series_redefined",
    "series_values",
)


class InvalidMessage(ValueError):
    """A message from an agent that cannot be applied.

    ``seq`` is set for reports; ``reason`` is the class of defect (one of
    :data:`REASONS`) counted in ``tripline_collector_reports_rejected_total``.
    """

    def __init__(self, message: str, seq: int | None = None, reason: str = "size") -> None:
        self.seq = seq
        self.reason = reason
        super().__init__(message)


# C0, DEL and C1: what a terminal, a log line or a mail header may act on.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPES = {c: f"\\x{c:02x}" for c in itertools.chain(range(0x20), range(0x7F, 0xA0))}


def clean_text(value: str, limit: int) -> str:
    """``value`` with control characters escaped as ``\\xNN``, cut to ``limit`` characters."""
    if _CONTROL.search(value) is not None:
        value = value.translate(_ESCAPES)
    return value[:limit]


def _shown(value: str, limit: int = 80) -> str:
    """A value quoted for an error message: escaped and short."""
    return repr(clean_text(value, limit))


def _check_time(value: float, field: str, seq: int | None = None) -> None:
    if not (math.isfinite(value) and MIN_TIME <= value <= MAX_TIME):
        raise InvalidMessage(
            f"{field} {value!r} is not a plausible unix time (finite, between "
            f"{MIN_TIME:.0f} and {MAX_TIME:.0f}): check the PC's clock",
            seq,
            "time",
        )


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


def check_series(
    name: str,
    raw_labels: Mapping[str, str],
    where: str,
    index: int,
    seq: int,
    kind: str = "sample",
) -> tuple[str, Labels]:
    """One series' name and labels validated at the edge: the name's Prometheus and
    promtool rules, label names (reserved ones refused), label values escaped and
    bounded, legacy names modernised, a core family's labels only. Returns the
    collector's (name, sorted labels); raises :class:`InvalidMessage`."""
    if name not in _GOOD_METRICS:
        _check_metric_name(name, where, index, seq, kind)
    name = catalogue.LEGACY_NAMES.get(name, name)
    labels: Labels = ()
    if raw_labels:
        items = sorted(raw_labels.items())
        if len(items) > MAX_LABELS:
            raise InvalidMessage(
                f"{where}, {kind} #{index} ({name}): {len(items)} labels, more than {MAX_LABELS}",
                seq,
                "size",
            )
        for position, (label, label_value) in enumerate(items):
            if label not in _GOOD_LABELS:
                _check_label_name(label, f"{where}, {kind} #{index} ({name})", seq)
            if _CONTROL.search(label_value) is not None:
                label_value = label_value.translate(_ESCAPES)
                items[position] = (label, label_value)
            if len(label_value) > MAX_LABEL_VALUE:
                raise InvalidMessage(
                    f"{where}, {kind} #{index} ({name}): label {label} is longer than "
                    f"{MAX_LABEL_VALUE} characters",
                    seq,
                    "label_value",
                )
        labels = tuple(items)
    if name in catalogue.LEGACY_SHAPES:
        name, labels = catalogue.modernize(name, labels)
    family = catalogue.BY_NAME.get(name)
    if family is not None and labels and not family.labels.issuperset(k for k, _ in labels):
        extra = sorted({k for k, _ in labels} - family.labels)
        raise InvalidMessage(
            f"{where}, {kind} #{index} ({name}): label(s) {', '.join(extra)} not allowed "
            f"on the core metric {name} (allowed: {', '.join(sorted(family.labels)) or 'none'}"
            "); send other dimensions under a metric name of your own",
            seq,
            "core_labels",
        )
    return name, labels


class SeriesTableLike(Protocol):
    """What :func:`decode_report` needs of a stream's series table."""

    def decode(
        self, msg: pb.Report, where: str, seq: int, named: set[tuple[str, Labels]] | None
    ) -> list[tuple[str, Labels, float]]: ...


def _context_bytes(context: pb.Context, where: str, seq: int) -> bytes:
    """The serialized context, re-encoded bounded when it is larger than allowed."""
    for process in itertools.chain(
        context.top_cpu[:MAX_PROCESSES], context.top_memory[:MAX_PROCESSES]
    ):
        if not (math.isfinite(process.cpu_ratio) and process.cpu_ratio >= 0):
            raise InvalidMessage(
                f"{where}: context process {_shown(process.name)} has cpu_ratio "
                f"{process.cpu_ratio!r}; it must be finite and >= 0",
                seq,
                "context",
            )
    if (
        len(context.top_cpu) > MAX_PROCESSES
        or len(context.top_memory) > MAX_PROCESSES
        or len(context.logged_in_users) > MAX_USERS
        or context.ByteSize() > MAX_CONTEXT_BYTES
    ):
        return bounded_context(context).SerializeToString()
    return context.SerializeToString()


def bounded_context(context: pb.Context) -> pb.Context:
    """At most MAX_PROCESSES processes per list and MAX_USERS users, every string
    escaped and cut to its bound."""
    out = pb.Context()
    for source, target in ((context.top_cpu, out.top_cpu), (context.top_memory, out.top_memory)):
        for process in source[:MAX_PROCESSES]:
            target.add(
                pid=process.pid,
                name=clean_text(process.name, MAX_PROCESS_NAME),
                username=clean_text(process.username, MAX_USERNAME),
                cpu_ratio=process.cpu_ratio,
                memory_rss_bytes=process.memory_rss_bytes,
                cmdline=clean_text(process.cmdline, MAX_CMDLINE),
            )
    out.logged_in_users.extend(
        clean_text(user, MAX_USERNAME) for user in context.logged_in_users[:MAX_USERS]
    )
    return out


# Names already seen valid; bounded so a hostile agent cannot grow them without limit.
_GOOD_METRICS: set[str] = set()
_GOOD_LABELS: set[str] = set()
_KNOWN_NAMES_MAX = 10_000


def _check_metric_name(name: str, where: str, index: int, seq: int, kind: str = "sample") -> None:
    if len(name) > MAX_NAME or METRIC_NAME.fullmatch(name) is None:
        raise InvalidMessage(
            f"{where}, {kind} #{index}: metric name {_shown(name)} is not a valid Prometheus "
            f"name ([a-z_][a-z0-9_]*, at most {MAX_NAME} characters)",
            seq,
            "metric_name",
        )
    problem = None if name in catalogue.BY_NAME else _lint_problem(name)
    if problem is not None:
        raise InvalidMessage(
            f"{where}, {kind} #{index}: metric name {name!r} would fail promtool check "
            f"metrics: {problem}",
            seq,
            "metric_name",
        )
    if len(_GOOD_METRICS) < _KNOWN_NAMES_MAX:
        _GOOD_METRICS.add(name)


def _check_label_name(label: str, where: str, seq: int) -> None:
    if len(label) > MAX_NAME or LABEL_NAME.fullmatch(label) is None:
        raise InvalidMessage(
            f"{where}: label name {_shown(label)} is not a valid Prometheus label name "
            f"([a-z_][a-z0-9_]*, at most {MAX_NAME} characters)",
            seq,
            "label_name",
        )
    if label in catalogue.RESERVED_LABELS or label.startswith(catalogue.RESERVED_LABEL_PREFIXES):
        raise InvalidMessage(
            f"{where}: label name {label!r} is reserved (the collector and Prometheus set "
            f"{', '.join(sorted(catalogue.RESERVED_LABELS))}, exported_* and __* on every "
            "series); rename it in the agent",
            seq,
            "label_reserved",
        )
    if len(_GOOD_LABELS) < _KNOWN_NAMES_MAX:
        _GOOD_LABELS.add(label)


class LazyContext(Mapping[str, Any]):
    """A report's machine context, converted to a dict only when read.

    Most reports' context is never read: it matters only when a ticket opens. Holding
    the serialized bytes rather than the message keeps the parsed report collectable.
    The dict is bounded and escaped (:func:`bounded_context`) whatever the bytes hold.
    """

    __slots__ = ("_data", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._data: dict[str, Any] | None = None

    def _dict(self) -> dict[str, Any]:
        if self._data is None:
            self._data = MessageToDict(
                bounded_context(pb.Context.FromString(self._raw)),
                preserving_proto_field_name=True,
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
