"""The collector's own health metrics (``tripline_collector_*``).

Registered on a registry passed in, never the global one, so tests and several
collectors in one process stay apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tripline.collector.wirecheck import REASONS as REJECT_REASONS

SNAPSHOT_RESULTS = (
    "requested",
    "answered",
    "rate_limited",
    "not_connected",
    "timeout",
    "invalid",
    "unsolicited",
)


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
        self.store_contended = Counter(
            "tripline_collector_store_contended_total",
            "Commits that waited past the busy timeout while other writers (the other "
            "workers) kept committing; retried, not failed: acknowledgements slow down.",
            registry=registry,
        )
        self.store_lock_wait = Histogram(
            "tripline_collector_store_lock_wait_seconds",
            "Seconds each SQLite write transaction waited for the write lock (other "
            "writers: the other workers, the CLI). Not observed on PostgreSQL.",
            buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0),
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
        self.delivery_parked = Counter(
            "tripline_collector_delivery_parked_total",
            "Ticket events a route gave up on after its retries (listed and retried through "
            "the API and 'tripline deliveries'), by route.",
            ["route"],
            registry=registry,
        )
        self.delivery_errors = Counter(
            "tripline_collector_delivery_errors_total",
            "Unexpected exceptions rendering or sending one event (logged with a traceback; "
            "the event is retried, then parked), by route.",
            ["route"],
            registry=registry,
        )
        self.delivery_restarts = Counter(
            "tripline_collector_delivery_restarts_total",
            "Delivery route tasks that died and were restarted (logged with a traceback), "
            "by route.",
            ["route"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "tripline_collector_commit_duration_seconds",
            "Time to commit one batch of reports' effects to the store.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.commit_batch_units = Histogram(
            "tripline_collector_commit_batch_units",
            "Units of work (mostly reports) committed in one store transaction; see commit_window.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 500),
            registry=registry,
        )
        self.store_healthy = Gauge(
            "tripline_collector_store_healthy",
            "1 while the store takes writes (the last write that changed rows succeeded and "
            "none failed since), else 0; /readyz and gRPC health follow it.",
            registry=registry,
        )
        self.store_health_changes = Counter(
            "tripline_collector_store_health_changes_total",
            "Store health transitions, by the state entered (healthy, unhealthy).",
            ["to"],
            registry=registry,
        )
        self.store_probes = Counter(
            "tripline_collector_store_probes_total",
            "Probe writes made while the store was unhealthy, by result (ok, failed).",
            ["result"],
            registry=registry,
        )
        self.limit_hits = Counter(
            "tripline_collector_limit_hits_total",
            "Agent messages that hit a configured limit, by limit (reports_per_second, "
            "streams, series_per_agent, connects_per_peer, hellos_per_agent).",
            ["limit"],
            registry=registry,
        )
        self.series_dropped = Counter(
            "tripline_collector_series_dropped_total",
            "Samples of new series dropped because their agent has max_series_per_agent.",
            registry=registry,
        )
        self.exposition_series_left_out = Counter(
            "tripline_collector_exposition_series_left_out_total",
            "Series left out of /metrics because their agent's text passed "
            "max_metrics_bytes_per_agent.",
            registry=registry,
        )
        self.accept_errors = Counter(
            "tripline_collector_accept_errors_total",
            "Connections the kernel could not hand over (out of file descriptors or "
            "memory), by port (grpc, http); logged at most once per 10 s.",
            ["port"],
            registry=registry,
        )
        self.http_connections_closed = Counter(
            "tripline_collector_http_connections_closed_total",
            "HTTP connections the collector closed to protect the port, by reason "
            "(full: 503 at http_max_connections, evicted_idle, header_timeout, body_timeout).",
            ["reason"],
            registry=registry,
        )
        self.service_reports = Counter(
            "tripline_collector_service_reports_total",
            "Service reports asked of the API, by format and outcome (served, refused: bad "
            "input or another customer's, failed).",
            ["format", "outcome"],
            registry=registry,
        )
        self.web_refusals = Counter(
            "tripline_collector_web_refusals_total",
            "Logins and forms the ticket page (/ui) refused, by reason (login: unknown "
            "token; csrf; origin: sent from another site; too_large; bad_form).",
            ["reason"],
            registry=registry,
        )
        self.ticket_count_errors = Counter(
            "tripline_collector_ticket_count_errors_total",
            "Unexpected failures refreshing the ticket counts /metrics shows (logged with a "
            "traceback; the previous counts stay).",
            registry=registry,
        )
        self.worker_metrics_errors = Counter(
            "tripline_collector_worker_metrics_errors_total",
            "Scrapes (with --workers) in which another worker's metrics could not be "
            "fetched and were left out of the page (logged).",
            registry=registry,
        )
        self.open_files_limit = Gauge(
            "tripline_collector_open_files_limit",
            "The process's open-file limit after start (raised to the hard limit).",
            registry=registry,
        )
        self.snapshots = Counter(
            "tripline_collector_snapshots_total",
            "Diagnostic snapshot requests and answers, by result (requested, answered, "
            "rate_limited, not_connected, timeout, invalid, unsolicited).",
            ["result"],
            registry=registry,
        )
        for result in SNAPSHOT_RESULTS:
            self.snapshots.labels(result)
        for port in ("grpc", "http"):
            self.accept_errors.labels(port)
        for why in ("login", "csrf", "origin", "too_large", "bad_form"):
            self.web_refusals.labels(why)
        for why in ("full", "evicted_idle", "header_timeout", "body_timeout"):
            self.http_connections_closed.labels(why)
        for reason in (
            "invalid_argument",
            "unauthenticated",
            "failed_precondition",
            "resource_exhausted",
            *REJECT_REASONS,
            "report_time_future",
            "report_time_backwards",
        ):
            self.reports_rejected.labels(reason)
        for scope in ("address", "token"):
            self.enrollments_throttled.labels(scope)
        for limit in (
            "reports_per_second",
            "streams",
            "series_per_agent",
            "metrics_bytes_per_agent",
            "connects_per_peer",
            "hellos_per_agent",
        ):
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
