"""Configuration: frozen dataclasses built in one place from file, environment and flags.

Precedence, lowest to highest: built-in defaults, the YAML config file, ``TRIPLINE_*``
environment variables, command-line flags. Nothing below this module reads
``os.environ``; everything else receives a finished config object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tripline.alerts import calendar
from tripline.collector import entropy
from tripline.collector.routes import Route, RouteError, parse_routes
from tripline.common.config import (
    ConfigError,
    Schema,
    build,
    check_logging,
    coerce,
    parse_hostport,
)


@dataclass(frozen=True)
class TicketSettings:
    reopen_window: float = 3600.0
    flap_count: int = 3
    flap_window: float = 6 * 3600.0
    escalate_tier1_after: float = 1800.0
    escalate_tier2_after: float = 3600.0


@dataclass(frozen=True)
class SiteOutageSettings:
    """When several PCs of one site go offline together, one site ticket (docs/tickets.md):
    at least `min_agents` PCs and at least `min_ratio` of the site's PCs within `within`."""

    enabled: bool = True
    min_agents: int = 3
    min_ratio: float = 0.5
    within: float = 120.0


# The SQLite file in data_dir when no database_url is given.
DATABASE_FILE = "tripline.db"


MAX_WORKERS = 64


@dataclass(frozen=True)
class CollectorConfig:
    listen: str = "127.0.0.1:7700"
    http_listen: str = "127.0.0.1:7701"
    data_dir: Path = Path("tripline-data")
    database_url: str | None = None
    rules: Path | None = None
    # customer -> enrollment token accepted from agents (stored hashed on start)
    customers: Mapping[str, str] = field(default_factory=dict)
    interval: float = 10.0
    inventory_interval: float = 3600.0
    # an agent is offline after this much silence; None means 3 intervals
    offline_after: float | None = None
    evaluation_interval: float = 1.0
    hello_timeout: float = 10.0
    # how far ahead of the collector's clock a report may be (after the offset measured
    # at Hello); later ones are refused
    max_clock_skew: float = 300.0
    max_message_bytes: int = 4 * 2**20
    max_samples_per_report: int = 10_000
    # distinct series an agent may have in live state; samples of new series past it are
    # dropped (the rest of the report is applied) and counted
    max_series_per_agent: int = 2000
    # bytes of /metrics text one agent's series may take; series past it are left out
    # of the page (kept for rules) and counted (docs/limits.md)
    max_metrics_bytes_per_agent: int = 256 * 1024
    # per agent token bucket: burst reports at once, then this many per second; at a 10 s
    # interval that replays a backlog 50x faster than it was collected (README "Limits")
    max_reports_per_second_per_agent: float = 5.0
    max_report_burst_per_agent: int = 50
    # concurrent agent Connect streams per collector; more are told to come back later
    max_streams: int = 50_000
    # new Connect streams (Hellos) per peer address (IP, port ignored) and per agent: token
    # buckets; a whole office behind one NAT reconnecting after a restart fits the burst
    max_connects_per_second_per_peer: float = 20.0
    max_connect_burst_per_peer: int = 200
    max_hellos_per_second_per_agent: float = 0.5
    max_hello_burst_per_agent: int = 10
    # a gRPC connection with no call open for this long is closed (an agent keeps one)
    connection_idle_timeout: float = 60.0
    # the HTTP port (/metrics, /readyz, the API): connections held at once (past it the
    # longest-idle one is closed, or the newcomer gets 503), and how long a client may take
    # to send a request's head, its body, and to stay idle between requests
    http_max_connections: int = 256
    http_header_timeout: float = 10.0
    http_body_timeout: float = 30.0
    http_keepalive_timeout: float = 5.0
    # diagnostic snapshots asked of agents when a rule goes pending or fires (and by
    # operators): at most one per agent per snapshot_min_interval, an answer awaited
    # at most snapshot_timeout (the agent measures CPU over 1.5 s of it)
    snapshot_min_interval: float = 60.0
    snapshot_timeout: float = 10.0
    # reports arriving within this tick of each other commit in one store transaction
    # (and are acknowledged once it commits); 0 commits each batch as soon as it can
    commit_window: float = 0.02
    tickets: TicketSettings = field(default_factory=TicketSettings)
    site_outage: SiteOutageSettings = field(default_factory=SiteOutageSettings)
    # where ticket events are delivered (webhook, e-mail, Alertmanager); file only
    routes: tuple[Route, ...] = ()
    # an event a receiver answered with failures (or a sink raised on) this many times, or
    # for this long, is parked and the route goes on; an unreachable receiver parks nothing
    delivery_max_attempts: int = 10
    delivery_park_after: float = 3600.0
    # collectors sharing a database take turns per route; a dead one's turn ends after this
    delivery_lease: float = 30.0
    # customer -> when its office PCs are expected to report (others: around the clock)
    business_hours: Mapping[str, calendar.Weekly] = field(default_factory=dict)
    # agent tags (key, value) watched around the clock whatever their customer's hours
    always_on_tags: tuple[tuple[str, str], ...] = ()
    # TLS on the gRPC port; a client CA turns on mutual TLS (certificate bound to agent id)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    # without TLS: only when explicitly enabled, for local development
    plaintext: bool = False
    log_format: str = "json"
    log_level: str = "INFO"
    # processes sharing the gRPC port, one /metrics (collector.workers); 1: one process
    workers: int = 1

    @property
    def effective_offline_after(self) -> float:
        return self.offline_after if self.offline_after is not None else 3 * self.interval

    @property
    def database_file(self) -> Path:
        """The SQLite file in data_dir (used when database_url is not set)."""
        return self.data_dir / DATABASE_FILE

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.database_file}"


def _parse_tags(value: Any) -> tuple[tuple[str, str], ...]:
    """`always_on_tags`: KEY=VALUE items, as a list or one comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f"expected a list of KEY=VALUE tags, got {value!r}")
    tags = []
    for item in items:
        key, sep, tag_value = str(item).strip().partition("=")
        if not sep or not key.strip() or not tag_value.strip():
            raise ValueError(f"expected KEY=VALUE (e.g. role=server), got {item!r}")
        tags.append((key.strip(), tag_value.strip()))
    return tuple(tags)


_BUSINESS_HOURS_KEYS = {"tz", "days", "hours", "schedule"}


def _parse_business_hours(raw: Any, source: str) -> dict[str, calendar.Weekly]:
    """`business_hours`: customer -> {tz, days (default Mon-Fri), hours} or {tz, schedule}."""
    if not isinstance(raw, dict):
        raise ConfigError("business_hours", "expected a mapping of customer to hours", source)
    out: dict[str, calendar.Weekly] = {}
    for customer, spec in raw.items():
        where = f"business_hours.{customer}"
        if not isinstance(spec, dict):
            raise ConfigError(where, "expected {tz, days, hours} or {tz, schedule}", source)
        unknown = set(spec) - _BUSINESS_HOURS_KEYS
        if unknown:
            raise ConfigError(where, f"unknown keys {sorted(unknown)}", source)
        if not spec.get("tz"):
            raise ConfigError(f"{where}.tz", "required, e.g. Europe/Berlin", source)
        if ("schedule" in spec) == ("hours" in spec):
            why = "give hours (with days) or a schedule, not both"
            raise ConfigError(where, f"{why}, e.g. hours: '08:00-18:00'", source)
        try:
            tz = calendar.zone(str(spec["tz"]))
        except calendar.CalendarError as exc:
            raise ConfigError(f"{where}.tz", str(exc), source) from None
        field_name = "schedule" if "schedule" in spec else "hours"
        text = (
            str(spec["schedule"])
            if "schedule" in spec
            else f"{spec.get('days', 'Mon-Fri')} {spec['hours']}"
        )
        try:
            out[str(customer)] = calendar.parse_weekly(text, tz)
        except calendar.CalendarError as exc:
            raise ConfigError(f"{where}.{field_name}", str(exc), source) from None
    return out


def _parse_tickets(raw: Any, source: str) -> TicketSettings:
    if not isinstance(raw, dict):
        raise ConfigError("tickets", "expected a mapping", source)
    return TicketSettings(
        **{key: coerce(TicketSettings, TICKETS, key, value, source) for key, value in raw.items()}
    )


def _parse_site_outage(raw: Any, source: str) -> SiteOutageSettings:
    if not isinstance(raw, dict):
        raise ConfigError("site_outage", "expected a mapping", source)
    values = {
        key: coerce(SiteOutageSettings, SITE_OUTAGE, key, value, source)
        for key, value in raw.items()
    }
    for key, value in values.items():
        if value is None:
            raise ConfigError(f"site_outage.{key}", "needs a value (or leave it out)", source)
    settings = SiteOutageSettings(**values)
    if not 2 <= settings.min_agents <= 100_000:
        raise ConfigError("site_outage.min_agents", "expected 2 to 100000 PCs", source)
    if not 0.0 <= settings.min_ratio <= 1.0:
        raise ConfigError("site_outage.min_ratio", "expected a share from 0 to 1, e.g. 0.5", source)
    if not 0.0 < settings.within <= 3600.0:
        raise ConfigError("site_outage.within", "expected more than 0s and at most 1h", source)
    return settings


def _parse_route_list(raw: Any, source: str) -> tuple[Route, ...]:
    try:
        return parse_routes(raw)
    except RouteError as exc:
        raise ConfigError(exc.key, str(exc).split(": ", 1)[1], source) from None


TICKETS = Schema(
    durations=frozenset(
        {
            "escalate_tier1_after",
            "escalate_tier2_after",
            "flap_window",
            "reopen_window",
        }
    )
)

SITE_OUTAGE = Schema(durations=frozenset({"within"}))

SCHEMA = Schema(
    durations=frozenset(
        {
            "interval",
            "inventory_interval",
            "offline_after",
            "evaluation_interval",
            "hello_timeout",
            "max_clock_skew",
            "delivery_park_after",
            "delivery_lease",
            "connection_idle_timeout",
            "http_header_timeout",
            "http_body_timeout",
            "http_keepalive_timeout",
            "snapshot_min_interval",
            "snapshot_timeout",
            "commit_window",
        }
    ),
    paths=frozenset({"rules", "tls_cert", "tls_key", "tls_client_ca"}),
    parsers={"always_on_tags": _parse_tags},
    sections={
        "tickets": _parse_tickets,
        "site_outage": _parse_site_outage,
        "routes": _parse_route_list,
        "business_hours": _parse_business_hours,
    },
)


def load_collector_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> CollectorConfig:
    config = build(
        CollectorConfig,
        SCHEMA,
        section="collector",
        path=path,
        environ=os.environ if environ is None else environ,
        flags=flags or {},
    )
    parse_hostport(config.listen, "listen")
    parse_hostport(config.http_listen, "http_listen")
    check_logging(config.log_format, config.log_level)
    if not 0 <= config.commit_window <= 1:
        raise ConfigError("commit_window", f"expected 0s..1s, got {config.commit_window:g}s")
    if not 1 <= config.workers <= MAX_WORKERS:
        raise ConfigError("workers", f"expected 1..{MAX_WORKERS}, got {config.workers}")
    for customer, token in config.customers.items():
        _check_token(f"customers.{customer}", token)
    return config


def _check_token(key: str, token: str) -> None:
    """A token an operator chose must be hard to guess (see `collector.entropy`)."""
    try:
        entropy.check(token)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


@dataclass(frozen=True)
class ApiClientConfig:
    """Where the CLI reaches a running collector's HTTP API (TRIPLINE_API_URL,
    TRIPLINE_API_TOKEN, or flags); url None means: use the data dir instead."""

    url: str | None = None
    token: str | None = field(default=None, repr=False)


def load_api_client_config(
    environ: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
) -> ApiClientConfig:
    config = build(
        ApiClientConfig,
        Schema(),
        section="api",
        path=None,
        environ=os.environ if environ is None else environ,
        flags=flags or {},
    )
    if config.url is not None and not config.url.startswith(("http://", "https://")):
        raise ConfigError("url", f"expected an http:// or https:// URL, got {config.url!r}")
    if config.token is not None:
        _check_token("token", config.token)
    return config
