"""The metric catalogue: every core family the agent sends, with its fixed meaning.

The collector alone decides metric families. A family listed here is exposed as
``tripline_<name>`` with the type, help text and labels given here, whatever an agent
claims; a name not listed is an *extra* metric, exposed untyped under
:data:`EXTRA_PREFIX` so that it can never collide with a core family, its
``_total``/``_count``/``_sum``/``_bucket``/``_created``/``_info`` forms, or the
collector's own families (``tripline_agent_*``, ``tripline_collector_*``).

The agent's probes emit these names (a test runs the real probes and checks every name
they send is here), the collector's exposition reads them, and docs/metrics.md's table is
generated from them (``python -m tripline.common.catalogue``; a test keeps it equal).
One name carries one label set, so ``sum()`` and ``avg()`` mean something.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter"]

PREFIX = "tripline_"
# Extras live here. No core name starts with "x_" (checked below), so
# `tripline_x_<anything>` is never a core family nor one of its suffixed forms.
EXTRA_PREFIX = "tripline_x_"
EXTRA_KIND = "untyped"  # promtool lints no suffix or label of an untyped family

# Names older agents send for a core family; the edge maps them before anything
# stores them, so one family is exposed once.
LEGACY_NAMES: dict[str, str] = {"process_count": "processes"}
# Families whose shape changed (one name held two label sets; labels renamed): older
# agents' samples of these names go through :func:`modernize`.
LEGACY_SHAPES = frozenset({"cpu_usage_ratio", "temperature_celsius"})
_TEMPERATURE_LABELS = {"sensor": "chip", "label": "sensor"}

# Suffixes by which one family's samples can shadow another family's name.
SHADOW_SUFFIXES = ("_total", "_count", "_sum", "_bucket", "_created", "_info")

# Labels the collector (target labels) or Prometheus (job, instance, and exported_* when
# it renames clashing labels) puts on every series: an agent may not send them.
TARGET_LABELS = ("agent_id", "host", "customer", "site")
RESERVED_LABELS = frozenset({*TARGET_LABELS, "job", "instance"})
RESERVED_LABEL_PREFIXES = ("exported_", "__")


@dataclass(frozen=True)
class Family:
    """One core metric: agent-side ``name``, its type, unit, help and allowed labels."""

    name: str
    kind: Kind
    unit: str
    help: str
    labels: frozenset[str] = frozenset()

    @property
    def exposed(self) -> str:
        return PREFIX + self.name


def _f(name: str, kind: Kind, unit: str, help_text: str, *labels: str) -> Family:
    return Family(name, kind, unit, help_text, frozenset(labels))


_FS = ("mountpoint", "fstype", "device")

FAMILIES: tuple[Family, ...] = (
    _f("cpu_usage_ratio", "gauge", "ratio", "Whole-machine CPU busy time ratio (0-1)."),
    _f("cpu_core_usage_ratio", "gauge", "ratio", "Busy time ratio (0-1) of one CPU.", "cpu"),
    _f("load1", "gauge", "", "1-minute load average."),
    _f("load5", "gauge", "", "5-minute load average."),
    _f("load15", "gauge", "", "15-minute load average."),
    _f("memory_total_bytes", "gauge", "bytes", "Physical memory in bytes."),
    _f("memory_available_bytes", "gauge", "bytes", "Memory available to new processes in bytes."),
    _f("memory_used_bytes", "gauge", "bytes", "Memory in use in bytes."),
    _f("memory_used_ratio", "gauge", "ratio", "Memory in use as a ratio (0-1)."),
    _f("swap_total_bytes", "gauge", "bytes", "Swap space in bytes."),
    _f("swap_used_bytes", "gauge", "bytes", "Swap in use in bytes."),
    _f("swap_used_ratio", "gauge", "ratio", "Swap in use as a ratio (0-1)."),
    _f("filesystem_size_bytes", "gauge", "bytes", "Filesystem size in bytes.", *_FS),
    _f(
        "filesystem_free_bytes",
        "gauge",
        "bytes",
        "Filesystem free bytes, including root-reserved blocks.",
        *_FS,
    ),
    _f(
        "filesystem_avail_bytes",
        "gauge",
        "bytes",
        "Filesystem bytes available to unprivileged users.",
        *_FS,
    ),
    _f(
        "filesystem_used_ratio",
        "gauge",
        "ratio",
        "Filesystem used ratio (0-1), as df computes it.",
        *_FS,
    ),
    _f("filesystem_files", "gauge", "", "Filesystem inodes.", *_FS),
    _f("filesystem_files_free", "gauge", "", "Filesystem free inodes.", *_FS),
    _f("disk_read_bytes_total", "counter", "bytes", "Bytes read from the disk.", "device"),
    _f("disk_written_bytes_total", "counter", "bytes", "Bytes written to the disk.", "device"),
    _f("disk_reads_completed_total", "counter", "", "Reads completed by the disk.", "device"),
    _f("disk_writes_completed_total", "counter", "", "Writes completed by the disk.", "device"),
    _f(
        "network_receive_bytes_total",
        "counter",
        "bytes",
        "Bytes received on the interface.",
        "device",
    ),
    _f(
        "network_transmit_bytes_total",
        "counter",
        "bytes",
        "Bytes sent on the interface.",
        "device",
    ),
    _f(
        "network_receive_packets_total",
        "counter",
        "",
        "Packets received on the interface.",
        "device",
    ),
    _f(
        "network_transmit_packets_total",
        "counter",
        "",
        "Packets sent on the interface.",
        "device",
    ),
    _f(
        "network_receive_errors_total",
        "counter",
        "",
        "Receive errors on the interface.",
        "device",
    ),
    _f(
        "network_transmit_errors_total",
        "counter",
        "",
        "Transmit errors on the interface.",
        "device",
    ),
    _f("boot_time_seconds", "gauge", "seconds", "Boot time as a unix timestamp."),
    _f("uptime_seconds", "gauge", "seconds", "Seconds since boot."),
    _f("processes", "gauge", "", "Number of processes."),
    _f("users_logged_in", "gauge", "", "Number of logged-in user sessions."),
    _f(
        "temperature_celsius",
        "gauge",
        "celsius",
        "Hardware sensor temperature in degrees Celsius (labels as node_exporter's hwmon).",
        "chip",
        "sensor",
    ),
    _f("battery_charge_ratio", "gauge", "ratio", "Battery charge as a ratio (0-1)."),
    _f("battery_power_plugged", "gauge", "", "1 when on mains power, 0 on battery."),
    _f(
        "processes_matching",
        "gauge",
        "",
        "Processes matching the agent's process check (name and/or command-line pattern).",
        "check",
    ),
    _f(
        "service_state",
        "gauge",
        "",
        "1 for the Windows service's current state, 0 for the others (as windows_exporter); "
        "all 0 when the service is not installed.",
        "service",
        "state",
    ),
    _f(
        "service_start_mode",
        "gauge",
        "",
        "1 for the Windows service's start mode, 0 for the others; all 0 when not installed.",
        "service",
        "start_mode",
    ),
    _f(
        "agent_collect_duration_seconds",
        "gauge",
        "seconds",
        "Time the agent took for its last collection.",
    ),
    _f(
        "agent_probe_errors_total", "counter", "", "Probe failures in the agent, by probe.", "probe"
    ),
    _f("agent_spool_reports", "gauge", "", "Reports waiting in the agent's spool."),
    _f("agent_spool_bytes", "gauge", "bytes", "Size of the agent's spool in bytes."),
    _f(
        "agent_reconnects_total",
        "counter",
        "",
        "Connections the agent reopened to a collector (the first is not counted).",
    ),
    _f(
        "agent_textfile_files_skipped_total",
        "counter",
        "",
        "Textfile collector files skipped (malformed, stale, too large...), by reason.",
        "reason",
    ),
    _f(
        "agent_textfile_age_seconds",
        "gauge",
        "seconds",
        "Seconds since the textfile collector file was last written, stale ones included.",
        "file",
    ),
    _f(
        "agent_reports_rejected_total",
        "counter",
        "",
        "Reports the collector rejected as invalid (dropped from the agent's spool).",
    ),
    _f(
        "agent_snapshots_total",
        "counter",
        "",
        "Diagnostic snapshots the collector asked for, by result (answered, refused: busy "
        "or asked too soon, failed).",
        "result",
    ),
)

# Sent by the agent but exposed by the collector from the report itself
# (tripline_agent_spool_dropped_reports_total, one series per agent): not exposed twice.
NOT_EXPOSED = frozenset({"agent_spool_dropped_reports_total"})

BY_NAME: dict[str, Family] = {family.name: family for family in FAMILIES}


def exposed(name: str) -> tuple[str, str, str]:
    """Exposed sample name, TYPE and HELP of agent metric ``name`` (already validated).

    A core family keeps its catalogue type and help; any other name is an extra.
    """
    family = BY_NAME.get(name)
    if family is not None:
        return family.exposed, family.kind, family.help
    return EXTRA_PREFIX + name, EXTRA_KIND, f"Extra agent metric {name} (not in the catalogue)."


def modernize(
    name: str, labels: tuple[tuple[str, str], ...]
) -> tuple[str, tuple[tuple[str, str], ...]]:
    """A sample of ``name`` (in :data:`LEGACY_SHAPES`) as an older agent sent it, in
    today's shape: per-CPU ``cpu_usage_ratio{cpu}`` is ``cpu_core_usage_ratio``, and
    ``temperature_celsius{sensor, label}`` is ``{chip, sensor}``. Accepted for one release.
    """
    if name == "cpu_usage_ratio" and any(key == "cpu" for key, _ in labels):
        return "cpu_core_usage_ratio", labels
    if name == "temperature_celsius" and any(key == "label" for key, _ in labels):
        return name, tuple(sorted((_TEMPERATURE_LABELS.get(k, k), v) for k, v in labels))
    return name, labels


def markdown_table() -> str:
    """docs/metrics.md's table of core metrics, generated from :data:`FAMILIES`."""
    rows = [
        "| metric (exposed as `tripline_<name>`) | type | unit | labels | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for family in FAMILIES:
        labels = ", ".join(f"`{label}`" for label in sorted(family.labels)) or "—"
        unit = family.unit or "—"
        rows.append(f"| `{family.name}` | {family.kind} | {unit} | {labels} | {family.help} |")
    return "\n".join(rows) + "\n"


def _check() -> None:
    """The namespace promises of the module docstring, checked at import: a catalogue
    edit that breaks one fails at once, in every test and at start."""
    names = {f.exposed for f in FAMILIES}
    for family in FAMILIES:
        problems = [
            family.name.startswith("x_") and "starts with x_ (the extras' namespace)",
            (family.kind == "counter") != family.name.endswith("_total")
            and "a counter must end in _total and only a counter may",
            family.kind == "gauge"
            and family.name.endswith(SHADOW_SUFFIXES)
            and "a gauge may not end in a shadowing suffix",
            bool(family.labels & RESERVED_LABELS) and "uses a reserved label",
            any(family.exposed + suffix in names for suffix in SHADOW_SUFFIXES)
            and "another family is this one plus a suffix",
        ]
        for problem in problems:
            if problem:
                raise ValueError(f"metric catalogue: {family.name} {problem}")
    if set(LEGACY_NAMES) & set(BY_NAME) or NOT_EXPOSED & set(BY_NAME):
        raise ValueError("metric catalogue: a legacy name is also a core name")


_check()

if __name__ == "__main__":
    print(markdown_table(), end="")
