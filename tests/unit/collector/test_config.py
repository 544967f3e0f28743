"""collector/config.py: precedence, durations, and the errors a person sees for bad input."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tripline.agent.config import AgentConfig, load_agent_config
from tripline.collector import entropy
from tripline.collector.config import (
    CollectorConfig,
    ConfigError,
    TicketSettings,
    load_api_client_config,
    load_collector_config,
    parse_hostport,
)

COLLECTOR_KEYS = (
    "always_on_tags, business_hours, commit_window, connection_idle_timeout, customers, data_dir, "
    "database_url, delivery_lease, delivery_max_attempts, delivery_park_after, "
    "evaluation_interval, hello_timeout, http_body_timeout, http_header_timeout, "
    "http_keepalive_timeout, http_listen, http_max_connections, interval, "
    "inventory_interval, listen, log_format, log_level, max_clock_skew, "
    "max_connect_burst_per_peer, max_connects_per_second_per_peer, "
    "max_hello_burst_per_agent, max_hellos_per_second_per_agent, max_message_bytes, "
    "max_metrics_bytes_per_agent, "
    "max_report_burst_per_agent, max_reports_per_second_per_agent, max_samples_per_report, "
    "max_series_per_agent, max_streams, offline_after, plaintext, routes, rules, "
    "site_outage, snapshot_min_interval, snapshot_timeout, tickets, "
    "tls_cert, "
    "tls_client_ca, tls_key, workers"
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tripline.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- precedence -------------------------------------------------------------------------


def test_defaults_without_file_env_or_flags() -> None:
    config = load_collector_config(None, environ={}, flags={})
    assert config == CollectorConfig()
    assert config.effective_offline_after == 30.0
    assert config.effective_database_url == "sqlite:///tripline-data/tripline.db"
    assert load_agent_config(None, environ={}, flags={}) == AgentConfig()


def test_file_beats_defaults_env_beats_file_flags_beat_env(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "interval: 20s\nhello_timeout: 3\nlisten: 0.0.0.0:7000\nlog_level: DEBUG\n",
    )
    environ = {
        "TRIPLINE_COLLECTOR_HELLO_TIMEOUT": "4s",
        "TRIPLINE_COLLECTOR_LISTEN": "0.0.0.0:7100",
        # another component's variables are not the collector's business
        "TRIPLINE_AGENT_SITE": "hq",
        "PATH": "/usr/bin",
    }
    config = load_collector_config(path, environ=environ, flags={"listen": "127.0.0.1:7200"})
    assert config.interval == 20.0  # file only
    assert config.hello_timeout == 4.0  # env over file
    assert config.listen == "127.0.0.1:7200"  # flag over env and file
    assert config.log_level == "DEBUG"  # file only
    assert config.http_listen == "127.0.0.1:7701"  # default


def test_a_flag_left_unset_does_not_hide_env_or_file(tmp_path: Path) -> None:
    path = write(tmp_path, "interval: 5m\n")
    config = load_collector_config(
        path,
        environ={"TRIPLINE_COLLECTOR_OFFLINE_AFTER": "2m"},
        flags={"interval": None, "offline_after": None, "data_dir": None},
    )
    assert config.interval == 300.0
    assert config.offline_after == 120.0
    assert config.data_dir == Path("tripline-data")


def test_one_file_with_a_section_per_component(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "collector:\n"
        "  interval: 15s\n"
        "  customers: {acme: tle_acme_Udq8BVVJGeVsfYvp4_szZf6GakVRmn9xk8k}\n"
        "  tickets: {reopen_window: 10m, flap_count: 5}\n"
        "agent:\n"
        "  collector: collector.example:7700\n"
        "  site: branch-2\n"
        "  tags: {room: 101}\n"
        "  collect_processes: 'no'\n"
        "  spool_max_bytes: 1048576\n",
    )
    collector = load_collector_config(path, environ={})
    assert collector.interval == 15.0
    assert collector.customers == {"acme": "tle_acme_Udq8BVVJGeVsfYvp4_szZf6GakVRmn9xk8k"}
    assert collector.tickets == TicketSettings(reopen_window=600.0, flap_count=5)
    agent = load_agent_config(path, environ={"TRIPLINE_AGENT_SITE": "branch-3"})
    assert agent.collector == "collector.example:7700"
    assert agent.site == "branch-3"
    assert agent.tags == {"room": "101"}
    assert agent.collect_processes is False
    assert agent.spool_max_bytes == 2**20


def test_empty_file_and_empty_section_mean_defaults(tmp_path: Path) -> None:
    assert load_collector_config(write(tmp_path, ""), environ={}) == CollectorConfig()
    assert load_collector_config(write(tmp_path, "collector:\n"), environ={}) == CollectorConfig()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300.0), ("90s", 90.0), ("1h30m", 5400.0), ("2d", 172800.0), ("500ms", 0.5),
     ("12", 12.0), (7, 7.0), (2.5, 2.5)],
)  # fmt: skip
def test_durations(text: object, seconds: float) -> None:
    assert load_collector_config(None, environ={}, flags={"interval": text}).interval == seconds


def test_offline_after_defaults_to_three_intervals() -> None:
    config = load_collector_config(None, environ={"TRIPLINE_COLLECTOR_INTERVAL": "1m"})
    assert config.offline_after is None
    assert config.effective_offline_after == 180.0


def test_paths_expand_home_and_database_url_wins(tmp_path: Path) -> None:
    config = load_collector_config(
        None,
        environ={"HOME": str(tmp_path)},
        flags={"data_dir": "~/data", "rules": "rules.yaml"},
    )
    assert config.rules == Path("rules.yaml")
    assert config.data_dir.is_absolute()
    url = "postgresql+psycopg://tripline@db/tripline"
    config = load_collector_config(None, environ={"TRIPLINE_COLLECTOR_DATABASE_URL": url})
    assert config.effective_database_url == url


def test_ipv6_listen_address() -> None:
    assert parse_hostport("[::1]:7700", "listen") == ("::1", 7700)


# -- errors: (where the value comes from, exact message) --------------------------------

# Each case: file text (or None), environment, flags, the exact message.
BROKEN: list[tuple[str, str | None, dict[str, str], dict[str, Any], str]] = [
    (
        "unknown key in the file",
        "intervall: 5m\n",
        {},
        {},
        f"{{file}}: config key 'intervall': unknown key (known: {COLLECTOR_KEYS})",
    ),
    (
        "unknown key in the environment",
        None,
        {"TRIPLINE_COLLECTOR_LISTEN_ADDR": "x"},
        {},
        "environment TRIPLINE_COLLECTOR_LISTEN_ADDR: config key 'listen_addr': "
        f"unknown key (known: {COLLECTOR_KEYS})",
    ),
    (
        "unknown ticket setting",
        "tickets: {reopen: 1h}\n",
        {},
        {},
        "{file}: config key 'reopen': unknown key (known: escalate_tier1_after, "
        "escalate_tier2_after, flap_count, flap_window, reopen_window)",
    ),
    (
        "duration in words",
        "interval: 5 minutes\n",
        {},
        {},
        "{file}: config key 'interval': expected a duration like '90s', '5m', '1h30m' or "
        "'2d' (units: w, d, h, m, s, ms), got '5 minutes'",
    ),
    (
        "units out of order",
        None,
        {"TRIPLINE_COLLECTOR_OFFLINE_AFTER": "30s5m"},
        {},
        "environment TRIPLINE_COLLECTOR_OFFLINE_AFTER: config key 'offline_after': units in "
        "a duration must be largest first and each used once, got '30s5m'",
    ),
    (
        "zero interval",
        None,
        {},
        {"interval": "0s"},
        "command line: config key 'interval': must be positive",
    ),
    (
        "negative duration",
        "hello_timeout: -5\n",
        {},
        {},
        "{file}: config key 'hello_timeout': expected a non-negative, finite duration, got -5",
    ),
    (
        "boolean as a duration",
        "evaluation_interval: yes\n",
        {},
        {},
        "{file}: config key 'evaluation_interval': expected a duration like '90s', '5m' or "
        "'1h30m', got True",
    ),
    (
        "size with a unit",
        None,
        {"TRIPLINE_COLLECTOR_MAX_MESSAGE_BYTES": "4MiB"},
        {},
        "environment TRIPLINE_COLLECTOR_MAX_MESSAGE_BYTES: config key 'max_message_bytes': "
        "expected a positive whole number, got '4MiB'",
    ),
    (
        "fractional count",
        "max_samples_per_report: 1.5\n",
        {},
        {},
        "{file}: config key 'max_samples_per_report': expected a positive whole number, got 1.5",
    ),
    (
        "boolean as a count",
        "tickets: {flap_count: true}\n",
        {},
        {},
        "{file}: config key 'flap_count': expected a positive whole number, got True",
    ),
    (
        "zero count",
        "max_samples_per_report: 0\n",
        {},
        {},
        "{file}: config key 'max_samples_per_report': must be positive",
    ),
    (
        "customers as a string",
        "customers: acme\n",
        {},
        {},
        "{file}: config key 'customers': expected a mapping, got 'acme'",
    ),
    (
        "tickets from the environment",
        None,
        {"TRIPLINE_COLLECTOR_TICKETS": "reopen_window=1h"},
        {},
        "environment TRIPLINE_COLLECTOR_TICKETS: config key 'tickets': "
        "set it as a mapping in the config file",
    ),
    (
        "tickets as a list",
        "tickets: [1, 2]\n",
        {},
        {},
        "{file}: config key 'tickets': expected a mapping",
    ),
    (
        "a list where one value belongs",
        "listen: [127.0.0.1, 7700]\n",
        {},
        {},
        "{file}: config key 'listen': expected a single value, got ['127.0.0.1', 7700]",
    ),
    (
        "listen without a port",
        None,
        {},
        {"listen": "localhost"},
        "config key 'listen': expected HOST:PORT, got 'localhost'",
    ),
    (
        "port out of range",
        "http_listen: 0.0.0.0:70000\n",
        {},
        {},
        "config key 'http_listen': port must be 0..65535, got 70000",
    ),
    (
        "port not a number",
        None,
        {"TRIPLINE_COLLECTOR_HTTP_LISTEN": "0.0.0.0:http"},
        {},
        "config key 'http_listen': port must be a number, got 'http'",
    ),
    (
        "log format",
        None,
        {},
        {"log_format": "xml"},
        "config key 'log_format': expected json or text, got 'xml'",
    ),
    (
        "log level",
        "log_level: LOUD\n",
        {},
        {},
        "config key 'log_level': expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'",
    ),
    (
        "file is a list",
        "- interval: 5m\n",
        {},
        {},
        "{file}: config key 'config': the file must hold a mapping of keys",
    ),
    (
        "section is a string",
        "collector: fast\n",
        {},
        {},
        "{file}: config key 'collector': expected a mapping of keys",
    ),
    (
        "site outage of one PC",
        "site_outage: {min_agents: 1}\n",
        {},
        {},
        "{file}: config key 'site_outage.min_agents': expected 2 to 100000 PCs",
    ),
    (
        "site outage share over 1",
        "site_outage: {min_ratio: 1.5}\n",
        {},
        {},
        "{file}: config key 'site_outage.min_ratio': expected a share from 0 to 1, e.g. 0.5",
    ),
    (
        "site outage window of a day",
        "site_outage: {within: 1d}\n",
        {},
        {},
        "{file}: config key 'site_outage.within': expected more than 0s and at most 1h",
    ),
    (
        "unknown site outage setting",
        "site_outage: {min_pcs: 3}\n",
        {},
        {},
        "{file}: config key 'min_pcs': unknown key (known: enabled, min_agents, min_ratio, within)",
    ),
]


@pytest.mark.parametrize(
    ("text", "environ", "flags", "message"),
    [case[1:] for case in BROKEN],
    ids=[case[0] for case in BROKEN],
)
def test_broken_collector_config(
    tmp_path: Path,
    text: str | None,
    environ: dict[str, str],
    flags: dict[str, Any],
    message: str,
) -> None:
    path = None if text is None else write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_collector_config(path, environ=environ, flags=flags)
    assert str(err.value) == message.format(file=path)


def test_config_error_carries_key_reason_and_source(tmp_path: Path) -> None:
    path = write(tmp_path, "interval: soon\n")
    with pytest.raises(ConfigError) as err:
        load_collector_config(path, environ={})
    assert err.value.key == "interval"
    assert err.value.source == str(path)
    assert "got 'soon'" in err.value.reason


def test_unreadable_and_invalid_yaml_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as err:
        load_collector_config(missing, environ={})
    assert str(err.value) == (
        f"{missing}: config key 'config': cannot read {missing}: No such file or directory"
    )
    path = write(tmp_path, "interval: [5m\n")
    with pytest.raises(ConfigError) as err:
        load_collector_config(path, environ={})
    assert str(err.value).startswith(f"{path}: config key 'config': not valid YAML: ")
    assert "line 2" in str(err.value)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"TRIPLINE_AGENT_COLLECT_PROCESSES": "sometimes"},
            "environment TRIPLINE_AGENT_COLLECT_PROCESSES: config key 'collect_processes': "
            "expected true or false, got 'sometimes'",
        ),
        (
            {"TRIPLINE_AGENT_COLLECTOR": "collector.example"},
            "config key 'collector': expected HOST:PORT, got 'collector.example'",
        ),
        (
            {"TRIPLINE_AGENT_BACKOFF_MAX": "0"},
            "environment TRIPLINE_AGENT_BACKOFF_MAX: config key 'backoff_max': must be positive",
        ),
        (
            {"TRIPLINE_AGENT_REDACT_PATTERNS": "licen[cs"},
            "environment TRIPLINE_AGENT_REDACT_PATTERNS: config key 'redact_patterns': "
            "'licen[cs' is not a valid regular expression: "
            "unterminated character set at position 5",
        ),
        (
            {"TRIPLINE_AGENT_TAGS": "room=101"},
            "environment TRIPLINE_AGENT_TAGS: config key 'tags': expected a mapping, "
            "got 'room=101'",
        ),
    ],
)
def test_broken_agent_config(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_agent_config(None, environ=environ)
    assert str(err.value) == message


def test_command_line_privacy_keys(tmp_path: Path) -> None:
    defaults = load_agent_config(None, environ={})
    assert defaults.send_command_lines is True and defaults.redact_patterns == ()
    path = write(
        tmp_path,
        "agent:\n  send_command_lines: false\n  redact_patterns: ['ACME-[0-9]+', '(?i)pin=\\d+']\n",
    )
    config = load_agent_config(path, environ={})
    assert config.send_command_lines is False
    assert config.redact_patterns == ("ACME-[0-9]+", "(?i)pin=\\d+")
    with pytest.raises(ConfigError, match=r"redact_patterns.*list of regular expressions"):
        load_agent_config(write(tmp_path, "agent:\n  redact_patterns: {a: b}\n"), environ={})


def test_config_objects_are_frozen() -> None:
    config = load_collector_config(None, environ={})
    with pytest.raises(AttributeError):
        config.interval = 1.0  # type: ignore[misc]


# -- docs/configuration.md says what the code does ------------------------------------------

CONFIGURATION_MD = Path(__file__).resolve().parents[3] / "docs" / "configuration.md"
# defaults the table gives in words, not as a value a config file could hold
WORDED_DEFAULTS = {"—": None, "built-in pack": None, "3 \u00d7 interval": None}


def documented_defaults() -> list[tuple[str, str, str]]:
    """(section, key, default text) for every key of the two tables in configuration.md."""
    rows: list[tuple[str, str, str]] = []
    section = ""
    for line in CONFIGURATION_MD.read_text(encoding="utf-8").splitlines():
        if line.startswith("Collector ("):
            section = "collector"
        elif line.startswith("Agent ("):
            section = "agent"
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not section or len(cells) != 4 or not cells[0].startswith("`"):
            continue
        keys = re.findall(r"`([a-z_.0-9]+)`", cells[0])
        sep = " / " if " / " in cells[2] else ", "
        defaults = cells[2].split(sep) if len(keys) > 1 else [cells[2]]
        if len(defaults) == 1:
            defaults *= len(keys)
        assert len(defaults) == len(keys), f"{keys}: cannot pair with {cells[2]!r}"
        rows += [(section, k, d.strip()) for k, d in zip(keys, defaults, strict=True)]
    return rows


def doc_value(text: str) -> Any:
    """A documented default as a config file would hold it."""
    if text in WORDED_DEFAULTS:
        return WORDED_DEFAULTS[text]
    size = re.fullmatch(r"(\d+) MiB", text)
    if size:
        return int(size.group(1)) * 2**20
    return text.strip("`")


def test_documented_defaults_parse_and_match_the_code(tmp_path: Path) -> None:
    """Every default in the tables, written into a config file, loads and equals what the
    code uses when the key is unset (the README once gave backoff_initial as `0.5s`,
    which the config refuses: Prometheus-style durations take whole numbers per unit)."""
    rows = documented_defaults()
    assert len(rows) >= 40, rows  # both tables were found
    defaults = {
        "collector": load_collector_config(environ={}),
        "agent": load_agent_config(environ={}),
    }
    for section, key, text in rows:
        value = doc_value(text)
        head, _, leaf = key.rpartition(".")
        expected = (
            getattr(defaults[section], key)
            if not head
            else getattr(getattr(defaults[section], head), leaf)
        )
        if value is None:
            assert expected in (None, {}, (), ""), f"{key}: documented none, code {expected!r}"
            continue
        body = {head: {leaf: value}} if head else {key: value}
        path = tmp_path / f"{section}-{key}.yaml"
        path.write_text(yaml.safe_dump({section: body}))
        load = load_collector_config if section == "collector" else load_agent_config
        loaded = load(path, environ={})
        got = getattr(getattr(loaded, head), leaf) if head else getattr(loaded, key)
        assert got == expected, (
            f"{section}.{key}: documented {text!r} loads as {got!r}, code {expected!r}"
        )


def test_the_docs_defaults_check_catches_a_wrong_default(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="backoff_initial"):
        path = tmp_path / "a.yaml"
        path.write_text("agent:\n  backoff_initial: 0.5s\n")
        load_agent_config(path, environ={})


@pytest.mark.parametrize(
    "token",
    [
        "1234",
        "tle_1234567890",
        "x" * 80,
        "tle_" + "abcd" * 20,
        "tle_acme_token",  # a name, not a secret
        "tle_e2e_acme_token_0123456789",
    ],
)
def test_weak_enrollment_tokens_are_refused_wherever_they_are_given(
    tmp_path: Path, token: str
) -> None:
    path = tmp_path / "collector.yaml"
    path.write_text(f"customers: {{acme: {token}}}\n")
    from_file: dict[str, Any] = {"path": path}
    from_flags: dict[str, Any] = {"flags": {"customers": {"acme": token}}}
    for source in (from_file, from_flags):
        with pytest.raises(ConfigError) as caught:
            load_collector_config(environ={}, **source)
        assert caught.value.key == "customers.acme"
        assert "at least 128 are needed" in caught.value.reason
        assert token not in str(caught.value)


def test_strong_tokens_pass_and_weak_operator_tokens_are_refused() -> None:
    strong = entropy.generate()
    assert entropy.estimate_bits(strong) >= 250
    config = load_collector_config(None, environ={}, flags={"customers": {"acme": strong}})
    assert config.customers == {"acme": strong}
    assert load_api_client_config(environ={"TRIPLINE_API_TOKEN": "tla_" + strong[4:]}).token
    with pytest.raises(ConfigError) as caught:
        load_api_client_config(environ={"TRIPLINE_API_TOKEN": "tla_admin"})
    assert caught.value.key == "token"


@pytest.mark.parametrize(
    ("workers", "reason"),
    [(0, "must be positive"), (-1, "must be positive"), (65, "expected 1..64")],
)
def test_workers_outside_1_to_64_are_refused_with_the_key(workers: int, reason: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"config key 'workers': {reason}")):
        load_collector_config(None, environ={}, flags={"workers": workers})
