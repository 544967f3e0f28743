"""Configuration machinery both programs share: frozen dataclasses built in one place.

Precedence, lowest to highest: built-in defaults, the YAML config file, ``TRIPLINE_*``
environment variables, command-line flags. Nothing below a program's config module
reads ``os.environ``; everything else receives a finished config object. The agent's
and the collector's own settings live in ``tripline.agent.config`` and
``tripline.collector.config``; this module knows neither.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tripline.common.durations import parse_duration

T = TypeVar("T")


class ConfigError(ValueError):
    """Invalid configuration: names the key and the reason so a person can fix it."""

    def __init__(self, key: str, reason: str, source: str = "") -> None:
        self.key = key
        self.reason = reason
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}config key '{key}': {reason}")


@dataclass(frozen=True)
class Schema:
    """How a config class's keys are read beyond what their defaults' types tell.

    ``durations``: keys given as durations ("30s", "5m", a number of seconds), positive.
    ``paths``: path keys whose default is None, so the default's type cannot tell.
    ``parsers``: key -> function of the raw value (raises ValueError with the reason).
    ``sections``: keys that only the file can set, as a nested mapping or list:
    key -> function of (raw value, source) that raises ConfigError itself.
    """

    durations: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()
    parsers: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    sections: Mapping[str, Callable[[Any, str], Any]] = field(default_factory=dict)


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


def coerce(cls: type, schema: Schema, key: str, value: Any, source: str) -> Any:
    """Convert one raw value (YAML, env string or flag) to the type of field ``key``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        known = ", ".join(sorted(fields))
        raise ConfigError(key, f"unknown key (known: {known})", source)
    default: Any = fields[key].default
    factory: Any = fields[key].default_factory
    if default is dataclasses.MISSING and factory is not dataclasses.MISSING:
        default = factory()
    if value is None:
        return None
    try:
        if key in schema.parsers:
            return schema.parsers[key](value)
        if key in schema.durations:
            return positive_duration(value)
        if isinstance(default, bool):
            return parse_bool(value)
        if isinstance(default, int):
            return positive_int(value)
        if isinstance(default, float):
            return positive_float(value)
        if isinstance(default, Path) or key in schema.paths:
            return Path(str(value)).expanduser()
        if isinstance(default, Mapping):
            if isinstance(value, Mapping):
                return {str(k): str(v) for k, v in value.items()}
            raise ValueError(f"expected a mapping, got {value!r}")
        if dataclasses.is_dataclass(default) or key in schema.sections:
            # Only the file can hold a nested section; an env string must not replace it.
            raise ValueError("set it as a mapping in the config file")
        if isinstance(value, (Mapping, list)):
            raise ValueError(f"expected a single value, got {value!r}")
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, str(exc), source) from None


def positive_duration(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError("must be positive")
    return seconds


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def positive_int(value: Any) -> int:
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


def positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a positive number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a positive number, got {value!r}") from None
    if not number > 0 or number == float("inf"):
        raise ValueError(f"expected a positive number, got {value!r}")
    return number


def read_file(path: Path | None) -> dict[str, Any]:
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


def build(
    cls: type[T],
    schema: Schema,
    *,
    section: str,
    path: Path | None,
    environ: Mapping[str, str],
    flags: Mapping[str, Any],
) -> T:
    """``cls`` from its file ``section`` (or the file's top level), then the
    ``TRIPLINE_<SECTION>_*`` variables, then ``flags`` (None values ignored)."""
    values: dict[str, Any] = {}
    raw = read_file(path)
    file_values = raw.get(section, raw)
    source = str(path) if path else ""
    if file_values is None:
        file_values = {}
    if not isinstance(file_values, dict):
        raise ConfigError(section, "expected a mapping of keys", source)
    for key, value in file_values.items():
        if key in schema.sections:
            values[key] = schema.sections[key](value, source)
        else:
            values[key] = coerce(cls, schema, key, value, source)
    prefix = f"TRIPLINE_{section.upper()}_"
    for name, value in environ.items():
        if name.startswith(prefix):
            key = name[len(prefix) :].lower()
            values[key] = coerce(cls, schema, key, value, f"environment {name}")
    for key, value in flags.items():
        if value is not None:
            values[key] = coerce(cls, schema, key, value, "command line")
    return cls(**values)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def check_logging(log_format: str, log_level: str) -> None:
    if log_format not in {"json", "text"}:
        raise ConfigError("log_format", f"expected json or text, got {log_format!r}")
    if log_level.upper() not in LOG_LEVELS:
        levels = ", ".join(LOG_LEVELS)
        raise ConfigError("log_level", f"expected one of {levels}, got {log_level!r}")
