"""Durations as written in rule files: "90s", "5m", "1h30m", "2d", or a number of seconds."""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_UNIT_ORDER = ("w", "d", "h", "m", "s", "ms")
# "ms" before "m" so the alternation does not read "5ms" as five minutes and a stray "s".
_PART = re.compile(r"(\d+)(ms|w|d|h|m|s)")


def parse_duration(text: str | int | float) -> float:
    """Return the duration in seconds.

    Accepts a non-negative number of seconds (int, float or numeric string) or Prometheus-style
    units, largest first, each at most once: "1h30m", "2d", "500ms". Raises ValueError with a
    message fit to show the person who wrote the rule file.
    """
    # bool is an int subclass; `for: yes` is a typo, not one second.
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ValueError(f"expected a duration like '90s', '5m' or '1h30m', got {text!r}")
    if isinstance(text, (int, float)):
        return _checked_seconds(float(text), text)
    stripped = text.strip()
    if not stripped:
        raise ValueError("expected a duration like '90s', '5m' or '1h30m', got an empty string")
    try:
        seconds = float(stripped)
    except ValueError:
        return _parse_units(stripped, text)
    return _checked_seconds(seconds, text)


def _checked_seconds(seconds: float, original: object) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a non-negative, finite duration, got {original!r}")
    return seconds


def _parse_units(text: str, original: str) -> float:
    total = 0.0
    position = 0
    last_rank = -1
    for part in _PART.finditer(text):
        if part.start() != position:
            break
        rank = _UNIT_ORDER.index(part.group(2))
        if rank <= last_rank:
            raise ValueError(
                f"units in a duration must be largest first and each used once, got {original!r}"
            )
        last_rank = rank
        total += int(part.group(1)) * _UNIT_SECONDS[part.group(2)]
        position = part.end()
    if position != len(text) or position == 0:
        raise ValueError(
            f"expected a duration like '90s', '5m', '1h30m' or '2d' "
            f"(units: {', '.join(_UNIT_ORDER)}), got {original!r}"
        )
    return total
