"""The report as JSON, CSV or one self-contained HTML page (inline CSS and SVG).

HTML comes from Jinja2 templates with autoescaping on, so a host, site or customer
name is always text, never markup. CSV cells that a spreadsheet would run as a formula
are prefixed with a quote.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import math
from pathlib import Path
from typing import Any

import jinja2

from tripline.collector.report import charts
from tripline.collector.report.model import Report

FORMATS = ("html", "json", "csv")
MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
}

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # every template, whatever its name: names come from office PCs
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _day(at: float | None) -> str:
    if at is None:
        return ""
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d")


def _moment(at: float | None) -> str:
    if at is None:
        return "never"
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def as_dict(report: Report) -> dict[str, Any]:
    """The report as plain JSON-able data (the JSON format's content)."""
    data = dataclasses.asdict(report)
    data["period"] = {"from": _day(report.start), "to": _day(report.end)}
    return dict(_finite(data))


def to_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2, sort_keys=True)


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else ""
    return "" if value is None else value


def to_csv(report: Report) -> str:
    """One table in long form: section, name, detail, figure, value."""
    rows: list[tuple[Any, ...]] = []
    for pc in report.fleet.pcs:
        for figure in (
            "site",
            "os",
            "last_seen_at",
            "expected_hours",
            "online_hours",
            "availability",
        ):
            rows.append(("fleet", pc.hostname, pc.agent_id, figure, getattr(pc, figure)))
    t = report.tickets
    rows.append(("tickets", "opened", "", "count", t.opened))
    for group, counts in (
        ("rule", t.by_rule),
        ("tier", t.by_tier),
        ("severity", t.by_severity),
        ("outcome", t.outcomes),
    ):
        for name, count in counts.items():
            rows.append(("tickets", name, group, "count", count))
    rows.append(("tickets", "auto_resolved_share", "", "share", t.auto_resolved_share))
    for times in t.times:
        for figure in ("mtta_median_s", "mtta_p90_s", "mttr_median_s", "mttr_p90_s"):
            rows.append(("response", f"tier {times.tier}", "", figure, getattr(times, figure)))
    for busy in t.busiest_pcs:
        rows.append(("busiest_pcs", busy.name, busy.detail, "tickets", busy.count))
    for week in t.weeks:
        for severity, count in week.by_severity.items():
            rows.append(("weekly", week.starts, severity, "tickets", count))
    for disk in report.plan.disks_full_soon:
        rows.append(
            ("disk_full_soon", disk.hostname, disk.mountpoint, "days_to_full", disk.days_to_full)
        )
        rows.append(
            (
                "disk_full_soon",
                disk.hostname,
                disk.mountpoint,
                "growth_bytes_per_day",
                disk.growth_bytes_per_day,
            )
        )
    for row in report.plan.short_of_memory:
        rows.append(("short_of_memory", row.hostname, row.agent_id, "hours", row.hours))
    for row in report.plan.reboots:
        rows.append(("reboots", row.hostname, row.agent_id, "unexpected_reboots", row.count))
    for row in report.plan.offline:
        rows.append(("offline", row.hostname, row.agent_id, "hours", row.hours))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("section", "name", "detail", "figure", "value"))
    writer.writerows(tuple(_cell(v) for v in row) for row in rows)
    return out.getvalue()


def _hours(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds / 3600:.1f} h"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _gb(value: float) -> str:
    return f"{value / 1e9:.1f} GB"


_ENV.filters.update(hours=_hours, share=_share, gb=_gb, day=_day, moment=_moment)


def to_html(report: Report) -> str:
    """One self-contained, printable page: no scripts, no external fetches."""
    return _ENV.get_template("report.html.j2").render(
        r=report,
        charts=[
            charts.tickets_per_week(report),
            charts.response_times(report),
            charts.disk_forecast(report),
        ],
    )


def render(report: Report, fmt: str) -> str:
    """`fmt` is one of FORMATS."""
    if fmt == "json":
        return to_json(report)
    if fmt == "csv":
        return to_csv(report)
    if fmt == "html":
        return to_html(report)
    raise ValueError(f"report format must be one of {', '.join(FORMATS)}, not {fmt!r}")
