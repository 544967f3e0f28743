"""The agent's configuration: one frozen dataclass from file, environment and flags."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tripline.agent.checks import ProcessCheck, parse_process_checks, parse_service_checks
from tripline.common.config import Schema, build, check_logging, parse_hostport


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
    # local checks (docs/local-checks.md): processes and Windows services to watch
    process_checks: tuple[ProcessCheck, ...] = ()
    service_checks: tuple[str, ...] = ()
    # *.prom files the PC's scripts write (off when unset); older files are dropped:
    # a day and an hour, so a nightly job's results last until its next run
    textfile_dir: Path | None = None
    textfile_max_age: float = 25 * 3600.0
    textfile_max_series: int = 500


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


SCHEMA = Schema(
    durations=frozenset(
        {
            "interval",
            "inventory_interval",
            "backoff_initial",
            "backoff_max",
            "keepalive_time",
            "keepalive_timeout",
            "textfile_max_age",
        }
    ),
    paths=frozenset({"tls_ca", "tls_cert", "tls_key", "textfile_dir"}),
    parsers={"redact_patterns": _parse_patterns, "service_checks": parse_service_checks},
    sections={"process_checks": parse_process_checks},
)


def load_agent_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> AgentConfig:
    config = build(
        AgentConfig,
        SCHEMA,
        section="agent",
        path=path,
        environ=os.environ if environ is None else environ,
        flags=flags or {},
    )
    parse_hostport(config.collector, "collector")
    check_logging(config.log_format, config.log_level)
    return config
