"""Prometheus exposition of every agent's series, built fresh at scrape time.

Each agent metric ``<name>`` becomes ``tripline_<name>`` with the target labels
``agent_id``, ``host``, ``customer`` and ``site`` (see :func:`exposed_name` for the few
names promtool would reject). An agent label that collides with a target label is kept
as ``exported_<label>``, as Prometheus does with honor_labels off.
prometheus_client escapes label values, so any hostname or mount point is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from collector.state import LiveState

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


class AgentSeriesCollector(Collector):
    """A prometheus_client collector over :class:`LiveState`.

    ``is_up(live)`` decides ``tripline_agent_up``; it is the same liveness the alerts
    engine uses, so a dashboard and a ticket never disagree about an agent.
    """

    def __init__(self, state: LiveState, is_up: Callable[[Any], bool]) -> None:
        self._state = state
        self._is_up = is_up

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        up = GaugeMetricFamily(
            "tripline_agent_up",
            "1 when the agent reported within its offline threshold.",
            labels=TARGET_LABELS,
        )
        last = GaugeMetricFamily(
            "tripline_agent_last_report_timestamp_seconds",
            "Collector time of the agent's last applied report.",
            labels=TARGET_LABELS,
        )
        dropped = CounterMetricFamily(
            "tripline_agent_spool_dropped_reports",
            "Reports the agent dropped from its full spool (an outage longer than it buffers).",
            labels=TARGET_LABELS,
        )
        for live in list(self._state.agents.values()):
            target = (live.agent_id, live.hostname, live.customer, live.site)
            up.add_metric(target, 1.0 if self._is_up(live) else 0.0)
            if live.last_seen is not None:
                last.add_metric(target, live.last_seen)
            dropped.add_metric(target, float(live.dropped_reports_total))
            for name, labels, value in live.latest():
                exposed, kind = exposed_name(name)
                if exposed in OWN_FAMILIES or exposed.startswith(OWN_PREFIX):
                    continue
                family = families.get(exposed)
                if family is None:
                    family = families[exposed] = _family(name, exposed, kind)
                elif family.type != kind:
                    continue  # `x` and `x_total` from agents: one family name, two types
                names = list(TARGET_LABELS)
                values = list(target)
                for label, label_value in labels:
                    names.append(f"exported_{label}" if label in RESERVED_LABELS else label)
                    values.append(label_value)
                # Families take one label-name list; samples carry their own names.
                family.samples.append(_sample(family, dict(zip(names, values, strict=True)), value))
        yield up
        yield last
        yield dropped
        yield from families.values()


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


def _family(name: str, exposed: str, kind: str) -> Metric:
    help_text = HELP.get(name, f"Agent metric {name}.")
    if kind == "counter":
        return CounterMetricFamily(exposed, help_text)
    return GaugeMetricFamily(exposed, help_text)


def _sample(family: Metric, labels: dict[str, str], value: float) -> Sample:
    suffix = "_total" if family.type == "counter" else ""
    return Sample(family.name + suffix, labels, value, None, None)
