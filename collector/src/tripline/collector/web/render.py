"""The page's Jinja2 environment: autoescaped templates and the filters they use.

Autoescape is on for every template, so whatever an agent or an operator wrote (a host
name ``<script>...``, a comment) reaches the browser as text. Only http(s) runbook URLs
become links: a ``javascript:`` runbook stays text.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

_URL = re.compile(r"https?://[^\s<>\"']{1,2000}")
# nesting the generic renderer follows before it prints the rest as JSON text
MAX_DEPTH = 5


def when(seconds: Any) -> str:
    """Unix seconds as UTC ISO 8601 (the page's script shows it in local time)."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "—"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def number(value: Any, unit: str = "") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—" if value is None else str(value)
    if unit == "ratio":
        return f"{value:.1%}"
    if unit == "bytes":
        for suffix in ("B", "KiB", "MiB", "GiB", "TiB"):
            if abs(value) < 1024 or suffix == "TiB":
                return f"{value:.0f} {suffix}" if suffix == "B" else f"{value:.1f} {suffix}"
            value /= 1024
    if unit == "seconds":
        minutes, secs = divmod(int(value), 60)
        hours, minutes = divmod(minutes, 60)
        days, hours = divmod(hours, 24)
        return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m {secs}s"
    return f"{value:g}"


def runbook_url(text: Any) -> bool:
    return isinstance(text, str) and _URL.fullmatch(text.strip()) is not None


def table(value: Any) -> tuple[list[str], list[Mapping[str, Any]]] | None:
    """(columns, rows) when `value` is a non-empty list of flat objects, else None."""
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        return None
    if not all(isinstance(row, Mapping) for row in value):
        return None
    columns: list[str] = []
    for row in value:
        for key, cell in row.items():
            if isinstance(cell, (Mapping, list)):
                return None
            if key not in columns:
                columns.append(str(key))
    return columns, list(value)


def as_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tripline.collector.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, number=number, as_json=as_json)
    env.globals.update(table=table, runbook_url=runbook_url, MAX_DEPTH=MAX_DEPTH)
    return env
