"""Prometheus exposition of every agent's series, prepared as each report arrives.

Each agent metric ``<name>`` becomes ``tripline_<name>`` with the target labels
``agent_id``, ``host``, ``customer`` and ``site`` (see :func:`exposed_name` for the few
names promtool would reject). An agent label that collides with a target label is kept
as ``exported_<label>``, as Prometheus does with honor_labels off.
Label values are escaped as the text format requires, so any hostname or mount point
is safe (promtool check metrics is part of the tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from collector.state import AgentLive, Labels, LiveState

TARGET_LABELS = ("agent_id", "host", "customer", "site")
# promtool rejects `le` and `quantile` on anything but histograms and summaries.
RESERVED_LABELS = (*TARGET_LABELS, "le", "quantile")
# ...and the suffixes `_count`, `_sum` and `_bucket` likewise.
RESERVED_SUFFIXES = ("_count", "_sum", "_bucket")
RENAMED = {"process_count": "processes"}
# Written by the collector for every agent (or by selfmetrics): an agent series of the
# same exposed name would be a second family of that name and break the whole scrape.
OWN_FAMILIES = frozenset(
    {
        "tripline_agent_up",
        "tripline_agent_last_report_timestamp_seconds",
        "tripline_agent_spool_dropped_reports",
    }
)
OWN_PREFIX = "tripline_collector_"

# HELP text for the names the agent sends; an unknown name still gets a generic help.
HELP: dict[str, str] = {
    "cpu_usage_ratio": "CPU busy time ratio (0-1), total or per cpu.",
    "load1": "1-minute load average.",
    "load5": "5-minute load average.",
    "load15": "15-minute load average.",
    "memory_total_bytes": "Physical memory in bytes.",
    "memory_available_bytes": "Memory available to new processes in bytes.",
    "memory_used_bytes": "Memory in use in bytes.",
    "memory_used_ratio": "Memory in use as a ratio (0-1).",
    "swap_total_bytes": "Swap space in bytes.",
    "swap_used_bytes": "Swap in use in bytes.",
    "swap_used_ratio": "Swap in use as a ratio (0-1).",
    "filesystem_size_bytes": "Filesystem size in bytes.",
    "filesystem_free_bytes": "Filesystem free bytes, including root-reserved blocks.",
    "filesystem_avail_bytes": "Filesystem bytes available to unprivileged users.",
    "filesystem_used_ratio": "Filesystem used ratio (0-1), as df computes it.",
    "filesystem_files": "Filesystem inodes.",
    "filesystem_files_free": "Filesystem free inodes.",
    "disk_read_bytes_total": "Bytes read from the disk.",
    "disk_written_bytes_total": "Bytes written to the disk.",
    "disk_reads_completed_total": "Reads completed by the disk.",
    "disk_writes_completed_total": "Writes completed by the disk.",
    "network_receive_bytes_total": "Bytes received on the interface.",
    "network_transmit_bytes_total": "Bytes sent on the interface.",
    "network_receive_packets_total": "Packets received on the interface.",
    "network_transmit_packets_total": "Packets sent on the interface.",
    "network_receive_errors_total": "Receive errors on the interface.",
    "network_transmit_errors_total": "Transmit errors on the interface.",
    "boot_time_seconds": "Boot time as a unix timestamp.",
    "uptime_seconds": "Seconds since boot.",
    "process_count": "Number of processes.",
    "users_logged_in": "Number of logged-in user sessions.",
    "temperature_celsius": "Hardware sensor temperature in degrees Celsius.",
    "battery_charge_ratio": "Battery charge as a ratio (0-1).",
    "battery_power_plugged": "1 when on mains power, 0 on battery.",
    "agent_collect_duration_seconds": "Time the agent took for its last collection.",
    "agent_probe_errors_total": "Probe failures in the agent, by probe.",
}


def escape_label_value(value: str) -> str:
    """Text-format escaping: backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labelset(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in pairs)


class _AgentLines:
    """One agent's rendered text: its series grouped by exposed family.

    Rebuilt as a whole after each report and swapped in by reference, so a scrape can
    join the pieces without copying or locking. Series prefixes (name and escaped label
    set) are cached: between reports only the values change.
    """

    __slots__ = ("chunks", "prefixes", "target", "target_key")

    def __init__(self, target_key: tuple[str, str, str, str]) -> None:
        self.target_key = target_key
        self.target = _labelset(zip(TARGET_LABELS, target_key, strict=True))
        self.prefixes: dict[tuple[str, Labels], tuple[str, str] | None] = {}
        self.chunks: dict[str, str] = {}


class SeriesExposition:
    """Every agent's series as Prometheus text, rendered incrementally.

    :meth:`update` renders one agent's lines when its report is applied; a scrape
    (:meth:`render`) only joins the prepared pieces and adds the per-agent liveness
    families, so its cost grows with the bytes served, not with formatting work.
    ``is_up(live)`` is the liveness the alerts engine uses, so a dashboard and a ticket
    never disagree about an agent; an agent that is not up exposes only its liveness.
    """

    def __init__(self, state: LiveState, is_up: Callable[[AgentLive], bool]) -> None:
        self._state = state
        self._is_up = is_up
        self._agents: dict[str, _AgentLines] = {}
        # exposed family -> (type, help): the first agent to send a name fixes its type
        self._families: dict[str, tuple[str, str]] = {}

    def update(
        self, live: AgentLive, samples: Iterable[tuple[str, Labels, float]] | None = None
    ) -> None:
        """Render the agent's current series; ``samples`` (its latest report) saves a lookup."""
        key = (live.agent_id, live.hostname, live.customer, live.site)
        lines = self._agents.get(live.agent_id)
        if lines is None or lines.target_key != key:
            lines = _AgentLines(key)
        grouped: dict[str, list[str]] = {}
        for name, labels, value in live.latest() if samples is None else samples:
            cached = lines.prefixes.get((name, labels), False)
            if cached is False:
                cached = lines.prefixes[(name, labels)] = self._prefix(lines, name, labels)
            if cached is None:
                continue
            family, prefix = cached
            grouped.setdefault(family, []).append(f"{prefix}{value!r}\n")
        chunks = {family: "".join(parts) for family, parts in grouped.items()}
        if len(lines.prefixes) > 4 * max(1, len(live.current)):
            lines.prefixes.clear()  # series come and go (USB disks): keep the cache bounded
        lines.chunks = chunks
        self._agents[live.agent_id] = lines

    def forget(self, agent_id: str) -> None:
        self._agents.pop(agent_id, None)

    def _prefix(self, lines: _AgentLines, name: str, labels: Labels) -> tuple[str, str] | None:
        exposed, kind = exposed_name(name)
        if exposed in OWN_FAMILIES or exposed.startswith(OWN_PREFIX):
            return None
        known = self._families.get(exposed)
        if known is None:
            self._families[exposed] = (kind, HELP.get(name, f"Agent metric {name}."))
        elif known[0] != kind:
            return None  # `x` and `x_total` from agents: one family name, two types
        extra = _labelset(
            (f"exported_{label}" if label in RESERVED_LABELS else label, value)
            for label, value in labels
        )
        sample = exposed + ("_total" if kind == "counter" else "")
        return exposed, f"{sample}{{{lines.target}{',' + extra if extra else ''}}} "

    def render(self) -> bytes:
        up: list[str] = []
        last: list[str] = []
        dropped: list[str] = []
        per_family: dict[str, list[str]] = {}
        for live in list(self._state.agents.values()):
            lines = self._agents.get(live.agent_id)
            key = (live.agent_id, live.hostname, live.customer, live.site)
            target = (
                lines.target
                if lines is not None and lines.target_key == key
                else (_labelset(zip(TARGET_LABELS, key, strict=True)))
            )
            alive = self._is_up(live)
            up.append(f"tripline_agent_up{{{target}}} {1.0 if alive else 0.0}\n")
            if live.last_seen is not None:
                last.append(
                    f"tripline_agent_last_report_timestamp_seconds{{{target}}} {live.last_seen!r}\n"
                )
            dropped.append(
                f"tripline_agent_spool_dropped_reports_total{{{target}}} "
                f"{float(live.dropped_reports_total)!r}\n"
            )
            if alive and lines is not None:
                for family, text in lines.chunks.items():
                    per_family.setdefault(family, []).append(text)
        out = [
            _header("tripline_agent_up", "gauge", UP_HELP),
            *up,
            _header("tripline_agent_last_report_timestamp_seconds", "gauge", LAST_HELP),
            *last,
            _header("tripline_agent_spool_dropped_reports_total", "counter", DROPPED_HELP),
            *dropped,
        ]
        for family in sorted(per_family):
            kind, help_text = self._families[family]
            name = family + ("_total" if kind == "counter" else "")
            out.append(_header(name, kind, help_text))
            out.extend(per_family[family])
        return "".join(out).encode()


UP_HELP = "1 when the agent reported within its offline threshold."
LAST_HELP = "Collector time of the agent's last applied report."
DROPPED_HELP = "Reports the agent dropped from its full spool (an outage longer than it buffers)."


def _header(name: str, kind: str, help_text: str) -> str:
    help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


def exposed_name(name: str) -> tuple[str, str]:
    """The exposed family name of agent metric ``name`` and its type.

    ``<name>_total`` is the counter ``tripline_<name>`` (its samples keep ``_total``);
    anything else is the gauge ``tripline_<name>``, except that a gauge may not end in a
    histogram/summary suffix: ``process_count`` is ``tripline_processes`` and any other
    such name gets ``_value`` appended.
    """
    if name.endswith("_total"):
        return f"tripline_{name[: -len('_total')]}", "counter"
    name = RENAMED.get(name, name)
    if name.endswith(RESERVED_SUFFIXES):
        name = f"{name}_value"
    return f"tripline_{name}", "gauge"
