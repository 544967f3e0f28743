"""Process and Windows service checks: what an MSP watches first on an office PC.

A *process check* counts the processes whose name and/or command line full-match the
patterns the agent's config gives (``processes_matching{check}``); a *service check*
reports a Windows service's state and start mode as windows_exporter does (one series
per possible value, 1 for the current one). Rules then use ordinary thresholds:
"at least one" is ``< 1``, "none" is ``> 0``.

Both read the PC's state only; the agent starts, stops or runs nothing. The checks come
from the agent's own config file, never from the collector. psutil is handed in by
`agent/probes.py` (the service API is Windows only: tests feed recorded results).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tripline.common.config import ConfigError
from tripline.common.labels import Labels

MAX_PROCESS_CHECKS = 32
MAX_SERVICE_CHECKS = 32
MAX_PATTERN_CHARS = 256
# A command line longer than this is matched on its first part: a pattern's cost grows
# with the text it scans, and it runs on every process at every interval.
MATCH_CMDLINE_CHARS = 4096
CHECK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# Windows service key names: letters, digits and a few marks (MSSQL$SQLEXPRESS); no
# slashes, which the Service Control Manager refuses in names.
SERVICE_NAME = re.compile(r"[A-Za-z0-9_.$-](?:[A-Za-z0-9 _.$-]{0,126}[A-Za-z0-9_.$-])?")

# psutil's spellings (psutil/arch/windows/services.c); windows_exporter uses the same
# states with spaces ("start pending"), which are not valid as rule-friendly values.
SERVICE_STATES = (
    "running",
    "stopped",
    "start_pending",
    "stop_pending",
    "continue_pending",
    "pause_pending",
    "paused",
)
START_MODES = ("automatic", "manual", "disabled")


@dataclass(frozen=True)
class ProcessCheck:
    """Counts processes whose name full-matches ``process`` and whose command line
    (argv joined by spaces) full-matches ``cmdline``; an absent pattern matches all."""

    name: str
    process: re.Pattern[str] | None = None
    cmdline: re.Pattern[str] | None = None

    def matches(self, process_name: str, argv: Sequence[str] | None) -> bool:
        if self.process is not None and self.process.fullmatch(process_name) is None:
            return False
        if self.cmdline is not None:
            text = " ".join(argv or ())[:MATCH_CMDLINE_CHARS]
            return self.cmdline.fullmatch(text) is not None
        return True


def _pattern(value: Any, key: str, source: str) -> re.Pattern[str] | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a regular expression, got {value!r}", source)
    if len(value) > MAX_PATTERN_CHARS:
        raise ConfigError(key, f"pattern longer than {MAX_PATTERN_CHARS} characters", source)
    try:
        return re.compile(value)
    except re.error as exc:
        raise ConfigError(
            key, f"{value!r} is not a valid regular expression: {exc}", source
        ) from None


def parse_process_checks(raw: Any, source: str) -> tuple[ProcessCheck, ...]:
    """The ``process_checks`` section: a list of ``{name, process, cmdline}``."""
    if not isinstance(raw, list):
        raise ConfigError("process_checks", "expected a list of {name, process, cmdline}", source)
    if len(raw) > MAX_PROCESS_CHECKS:
        raise ConfigError(
            "process_checks", f"{len(raw)} checks, more than {MAX_PROCESS_CHECKS}", source
        )
    checks: list[ProcessCheck] = []
    for index, item in enumerate(raw):
        where = f"process_checks[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(where, "expected a mapping with name and process/cmdline", source)
        unknown = sorted(set(item) - {"name", "process", "cmdline"})
        if unknown:
            raise ConfigError(where, f"unknown key(s) {', '.join(map(str, unknown))}", source)
        name = item.get("name")
        if not isinstance(name, str) or CHECK_NAME.fullmatch(name) is None:
            raise ConfigError(
                f"{where}.name", f"expected 1-64 of A-Z a-z 0-9 _ . -, got {name!r}", source
            )
        if any(check.name == name for check in checks):
            raise ConfigError(f"{where}.name", f"{name!r} is used by another check", source)
        process = _pattern(item.get("process"), f"{where}.process", source)
        cmdline = _pattern(item.get("cmdline"), f"{where}.cmdline", source)
        if process is None and cmdline is None:
            raise ConfigError(where, "give a process (name) or cmdline pattern, or both", source)
        checks.append(ProcessCheck(name, process, cmdline))
    return tuple(checks)


def parse_service_checks(value: Any) -> tuple[str, ...]:
    """``service_checks``: Windows service names (a list; an env string is comma-separated)."""
    if isinstance(value, str):  # "Spooler, WinDefend" from an environment variable
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"expected a list of Windows service names, got {value!r}")
    names = tuple(value)
    if len(names) > MAX_SERVICE_CHECKS:
        raise ValueError(f"{len(names)} services, more than {MAX_SERVICE_CHECKS}")
    for name in names:
        if SERVICE_NAME.fullmatch(name) is None:
            raise ValueError(
                f"{name!r} is not a Windows service name (the key name, e.g. Spooler, "
                "not the display name; 1-128 of A-Z a-z 0-9 space _ . $ -)"
            )
    if len({n.lower() for n in names}) != len(names):
        raise ValueError("a service is named twice (service names ignore case)")
    return names


def needs_cmdline(checks: Iterable[ProcessCheck]) -> bool:
    """Whether a scan must read every process's command line (a syscall each)."""
    return any(check.cmdline is not None for check in checks)


def count_matches(
    checks: Sequence[ProcessCheck], processes: Iterable[tuple[str, Sequence[str] | None]]
) -> dict[str, int]:
    """Matching processes per check, from (name, argv) pairs of one process scan."""
    counts = {check.name: 0 for check in checks}
    for process_name, argv in processes:
        for check in checks:
            if check.matches(process_name, argv):
                counts[check.name] += 1
    return counts


@dataclass(frozen=True)
class ServiceStatus:
    """A service's state and start mode; both None when the service is not installed."""

    service: str
    state: str | None
    start_mode: str | None


class ServiceProbeError(Exception):
    """A service could not be queried (access denied, an unknown answer)."""

    def __init__(self, service: str, reason: str) -> None:
        self.service = service
        super().__init__(f"service {service}: {reason}")


def query_service(ps: Any, service: str) -> ServiceStatus:
    """Ask psutil's Windows service API (``ps.win_service_get``) about one service."""
    try:
        handle = ps.win_service_get(service)
        state, start_mode = handle.status(), handle.start_type()
    except ps.NoSuchProcess:
        # psutil's answer for ERROR_SERVICE_DOES_NOT_EXIST: not installed (or removed).
        return ServiceStatus(service, None, None)
    except ps.AccessDenied:
        raise ServiceProbeError(service, "access denied") from None
    if state not in SERVICE_STATES or start_mode not in START_MODES:
        raise ServiceProbeError(service, f"unknown state {state!r} / start type {start_mode!r}")
    return ServiceStatus(service, state, start_mode)


def service_series(status: ServiceStatus) -> list[tuple[str, Labels, float]]:
    """windows_exporter's shape: a series per state and start mode, 1 for the current."""
    out: list[tuple[str, Labels, float]] = []
    for state in SERVICE_STATES:
        labels = (("service", status.service), ("state", state))
        out.append(("service_state", labels, 1.0 if state == status.state else 0.0))
    for mode in START_MODES:
        labels = (("service", status.service), ("start_mode", mode))
        out.append(("service_start_mode", labels, 1.0 if mode == status.start_mode else 0.0))
    return out
