"""The collector's own health metrics (``tripline_collector_*``).

Registered on a registry passed in, never the global one, so tests and several
collectors in one process stay apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reports_received = Counter(
            "tripline_collector_reports_received_total",
            "Reports received from agents, before validation.",
            registry=registry,
        )
        self.reports_applied = Counter(
            "tripline_collector_reports_applied_total",
            "Reports applied and acknowledged.",
            registry=registry,
        )
        self.reports_duplicate = Counter(
            "tripline_collector_reports_duplicate_total",
            "Reports acknowledged without applying because their seq was already applied.",
            registry=registry,
        )
        self.reports_rejected = Counter(
            "tripline_collector_reports_rejected_total",
            "Messages rejected, by reason.",
            ["reason"],
            registry=registry,
        )
        self.samples_received = Counter(
            "tripline_collector_samples_received_total",
            "Samples in applied reports.",
            registry=registry,
        )
        self.streams_open = Gauge(
            "tripline_collector_streams_open",
            "Agent Connect streams currently open.",
            registry=registry,
        )
        self.enrollments = Counter(
            "tripline_collector_enrollments_total",
            "Enrollment attempts, by result.",
            ["result"],
            registry=registry,
        )
        self.enrollments_throttled = Counter(
            "tripline_collector_enrollments_throttled_total",
            "Enroll attempts refused unexamined while their peer address or token waits "
            "after repeated failures, by scope (address, token).",
            ["scope"],
            registry=registry,
        )
        self.store_errors = Counter(
            "tripline_collector_store_errors_total",
            "Store transactions that failed (reports stay unacknowledged and are resent).",
            registry=registry,
        )
        self.evaluation_errors = Counter(
            "tripline_collector_evaluation_errors_total",
            "Unexpected failures in the evaluation loop (logged with a traceback).",
            registry=registry,
        )
        self.rule_reloads = Counter(
            "tripline_collector_rule_reloads_total",
            "Rule file reloads, by result.",
            ["result"],
            registry=registry,
        )
        self.ticket_transitions = Counter(
            "tripline_collector_ticket_transitions_total",
            "Ticket changes made by the engine, by kind.",
            ["kind"],
            registry=registry,
        )
        self.deliveries = Counter(
            "tripline_collector_deliveries_total",
            "Ticket events handed to delivery routes, by route and result "
            "(delivered, retry, failed).",
            ["route", "result"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "tripline_collector_commit_duration_seconds",
            "Time to commit one batch of reports' effects to the store.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.limit_hits = Counter(
            "tripline_collector_limit_hits_total",
            "Agent messages that hit a configured limit, by limit (reports_per_second, "
            "streams, series_per_agent).",
            ["limit"],
            registry=registry,
        )
        self.series_dropped = Counter(
            "tripline_collector_series_dropped_total",
            "Samples of new series dropped because their agent has max_series_per_agent.",
            registry=registry,
        )
        for reason in (
            "invalid_argument",
            "unauthenticated",
            "failed_precondition",
            "resource_exhausted",
            "report_time_future",
            "report_time_backwards",
        ):
            self.reports_rejected.labels(reason)
        for scope in ("address", "token"):
            self.enrollments_throttled.labels(scope)
        for limit in ("reports_per_second", "streams", "series_per_agent"):
            self.limit_hits.labels(limit)


class TicketCountCollector(Collector):
    """``tripline_collector_tickets`` by status, severity and tier, read at scrape time."""

    def __init__(self, counts: Callable[[], Mapping[tuple[str, str, int], int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "tripline_collector_tickets",
            "Tickets in the store by status, severity and support tier.",
            labels=["status", "severity", "tier"],
        )
        for (status, severity, tier), count in sorted(self._counts().items()):
            family.add_metric([status, severity, str(tier)], float(count))
        yield family
