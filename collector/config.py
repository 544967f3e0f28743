"""Configuration: frozen dataclasses built in one place from file, environment and flags.

Precedence, lowest to highest: built-in defaults, the YAML config file, ``TRIPLINE_*``
environment variables, command-line flags. Nothing below this module reads
``os.environ``; everything else receives a finished config object.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alerts import calendar
from alerts.rules import parse_duration
from collector import entropy
from collector.routes import Route, RouteError, parse_routes


class ConfigError(ValueError):
    """Invalid configuration: names the key and the reason so a person can fix it."""

    def __init__(self, key: str, reason: str, source: str = "") -> None:
        self.key = key
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}config key '{key}': {reason}")


def parse_hostport(text: str, key: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[::1]:7700`` for IPv6); raise ConfigError naming ``key``."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(key, f"expected HOST:PORT, got {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(key, f"port must be a number, got {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise ConfigError(key, f"port must be 0..65535, got {port}")
    return host.strip("[]"), port


@dataclass(frozen=True)
class TicketSettings:
    reopen_window: float = 3600.0
    flap_count: int = 3
    flap_window: float = 6 * 3600.0
    escalate_tier1_after: float = 1800.0
    escalate_tier2_after: float = 3600.0


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
    tickets: TicketSettings = field(default_factory=TicketSettings)
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

    @property
    def effective_offline_after(self) -> float:
        return self.offline_after if self.offline_after is not None else 3 * self.interval

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'tripline.db'}"


@dataclass(frozen=True)
class AgentConfig:
    collector: str = "127.0.0.1:7700"
    enrollment_token: str | None = None
    state_dir: Path = Path("tripline-agent")
    site: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    # until the collector's Welcome says otherwise
    interval: float = 10.0
    inventory_interval: float = 3600.0
    spool_max_bytes: int = 64 * 2**20
    collect_processes: bool = True
    # top-process command lines in ticket context: false sends none at all; otherwise
    # they are redacted on the PC (agent/redact.py), these extra regexes included
    send_command_lines: bool = True
    redact_patterns: tuple[str, ...] = ()
    max_message_bytes: int = 4 * 2**20
    backoff_initial: float = 0.5
    backoff_max: float = 60.0
    # ping the collector after this much silence, give it up after keepalive_timeout
    # without an answer: how fast a connection cut without a reset is noticed
    keepalive_time: float = 30.0
    keepalive_timeout: float = 10.0
    # TLS to the collector: tls_ca unset trusts the system's CAs; tls_cert/tls_key for mTLS
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    plaintext: bool = False
    log_format: str = "json"
    log_level: str = "INFO"


# Path fields whose default is None, so the default's type cannot tell.
_PATH_KEYS = {"rules", "tls_cert", "tls_key", "tls_client_ca", "tls_ca"}

_DURATION_KEYS = {
    "interval",
    "inventory_interval",
    "offline_after",
    "evaluation_interval",
    "hello_timeout",
    "max_clock_skew",
    "reopen_window",
    "flap_window",
    "escalate_tier1_after",
    "escalate_tier2_after",
    "backoff_initial",
    "backoff_max",
    "delivery_park_after",
    "delivery_lease",
    "keepalive_time",
    "keepalive_timeout",
    "connection_idle_timeout",
    "http_header_timeout",
    "http_body_timeout",
    "http_keepalive_timeout",
}


def _coerce(cls: type, key: str, value: Any, source: str) -> Any:
    """Convert one raw value (YAML, env string or flag) to the type of field ``key``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        known = ", ".join(sorted(fields))
        raise ConfigError(key, f"unknown key (known: {known})", source)
    default = fields[key].default
    if default is dataclasses.MISSING and fields[key].default_factory is not dataclasses.MISSING:
        default = fields[key].default_factory()
    if value is None:
        return None
    try:
        if key == "always_on_tags":
            return _parse_tags(value)
        if key == "redact_patterns":
            return _parse_patterns(value)
        if key in _DURATION_KEYS:
            seconds = parse_duration(value)
            if seconds <= 0:
                raise ValueError("must be positive")
            return seconds
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"expected true or false, got {value!r}")
        if isinstance(default, int):
            return _positive_int(value)
        if isinstance(default, float):
            return _positive_float(value)
        if isinstance(default, Path) or key in _PATH_KEYS:
            return Path(str(value)).expanduser()
        if isinstance(default, Mapping):
            if isinstance(value, Mapping):
                return {str(k): str(v) for k, v in value.items()}
            raise ValueError(f"expected a mapping, got {value!r}")
        if dataclasses.is_dataclass(default):
            # Only the file can hold a nested section; an env string must not replace it.
            raise ValueError("set it as a mapping in the config file")
        if isinstance(value, (Mapping, list)):
            raise ValueError(f"expected a single value, got {value!r}")
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, str(exc), source) from None


def _positive_int(value: Any) -> int:
    # bool is an int subclass and int(1.5) truncates: both would pass silently.
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected a positive whole number, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a positive whole number, got {value!r}") from None
    if number <= 0:
        raise ValueError("must be positive")
    return number


def _positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a positive number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a positive number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"expected a positive number, got {value!r}")
    return number


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


def _parse_patterns(value: Any) -> tuple[str, ...]:
    """`redact_patterns`: regular expressions, as a list (an env string is one pattern)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(p, str) and p for p in items):
        raise ValueError(f"expected a list of regular expressions, got {value!r}")
    for pattern in items:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{pattern!r} is not a valid regular expression: {exc}") from None
    return tuple(items)


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


def _read_file(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror}", str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError("config", f"not valid YAML: {exc}", str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", "the file must hold a mapping of keys", str(path))
    return data


def _build(
    cls: type,
    *,
    section: str,
    path: Path | None,
    environ: Mapping[str, str],
    flags: Mapping[str, Any],
) -> Any:
    values: dict[str, Any] = {}
    raw = _read_file(path)
    file_values = raw.get(section, raw)
    source = str(path) if path else ""
    if file_values is None:
        file_values = {}
    if not isinstance(file_values, dict):
        raise ConfigError(section, "expected a mapping of keys", source)
    tickets_raw: dict[str, Any] = {}
    for key, value in file_values.items():
        if key == "tickets" and cls is CollectorConfig:
            if not isinstance(value, dict):
                raise ConfigError("tickets", "expected a mapping", source)
            tickets_raw = value
            continue
        if key == "routes" and cls is CollectorConfig:
            try:
                values["routes"] = parse_routes(value)
            except RouteError as exc:
                raise ConfigError(exc.key, str(exc).split(": ", 1)[1], source) from None
            continue
        if key == "business_hours" and cls is CollectorConfig:
            values["business_hours"] = _parse_business_hours(value, source)
            continue
        values[key] = _coerce(cls, key, value, source)
    prefix = f"TRIPLINE_{section.upper()}_"
    for name, value in environ.items():
        if name.startswith(prefix):
            key = name[len(prefix) :].lower()
            values[key] = _coerce(cls, key, value, f"environment {name}")
    for key, value in flags.items():
        if value is not None:
            values[key] = _coerce(cls, key, value, "command line")
    if tickets_raw:
        tickets = {k: _coerce(TicketSettings, k, v, source) for k, v in tickets_raw.items()}
        values["tickets"] = TicketSettings(**tickets)
    return cls(**values)


def load_collector_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> CollectorConfig:
    config: CollectorConfig = _build(
        CollectorConfig,
        section="collector",
        path=path,
        environ=os.environ if environ is None else environ,
        flags=flags or {},
    )
    parse_hostport(config.listen, "listen")
    parse_hostport(config.http_listen, "http_listen")
    _check_logging(config.log_format, config.log_level)
    for customer, token in config.customers.items():
        _check_token(f"customers.{customer}", token)
    return config


def _check_token(key: str, token: str) -> None:
    """A token an operator chose must be hard to guess (see `collector.entropy`)."""
    try:
        entropy.check(token)
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def load_agent_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> AgentConfig:
    config: AgentConfig = _build(
        AgentConfig,
        section="agent",
        path=path,
        environ=os.environ if environ is None else environ,
        flags=flags or {},
    )
    parse_hostport(config.collector, "collector")
    _check_logging(config.log_format, config.log_level)
    return config


@dataclass(frozen=True)
class ApiClientConfig:
    """Where the CLI reaches a running collector's HTTP API (TRIPLINE_API_URL,
    TRIPLINE_API_TOKEN, or flags); url None means: use the data dir instead."""

    url: str | None = None
    token: str | None = field(default=None, repr=False)


def load_api_client_config(
    environ: Mapping[str, str] | None = None, flags: Mapping[str, Any] | None = None
) -> ApiClientConfig:
    config: ApiClientConfig = _build(
        ApiClientConfig,
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


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _check_logging(log_format: str, log_level: str) -> None:
    if log_format not in {"json", "text"}:
        raise ConfigError("log_format", f"expected json or text, got {log_format!r}")
    if log_level.upper() not in _LOG_LEVELS:
        levels = ", ".join(_LOG_LEVELS)
        raise ConfigError("log_level", f"expected one of {levels}, got {log_level!r}")
