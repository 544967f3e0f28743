"""Chart geometry: numbers for the SVG templates (templates/report.html.j2) to draw.

Only coordinates and labels are computed here; the markup is the template's, where
autoescaping covers every label.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from tripline.collector.report.model import DiskRow, Report

WIDTH = 640.0
HEIGHT = 240.0
LEFT, RIGHT, TOP, BOTTOM = 48.0, 12.0, 12.0, 36.0
DAY = 86400.0


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    css: str
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Line:
    points: str  # "x,y x,y ..." for a <polyline>
    css: str
    title: str
    dashed: bool = False


@dataclass(frozen=True)
class Chart:
    title: str
    width: float = WIDTH
    height: float = HEIGHT
    rects: list[Rect] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css, label)
    empty: str = ""  # said instead of a chart when there is nothing to draw


def _y_scale(top: float) -> tuple[float, list[Tick]]:
    top = max(top, 1e-9)
    ticks = [
        Tick(LEFT - 4, TOP + (HEIGHT - TOP - BOTTOM) * (1 - i / 4), f"{top * i / 4:g}")
        for i in range(5)
    ]
    return top, ticks


def tickets_per_week(report: Report) -> Chart:
    weeks = report.tickets.weeks
    chart = Chart("Tickets opened per week, by severity")
    if not weeks or report.tickets.opened == 0:
        return Chart(chart.title, empty="No tickets were opened in this period.")
    highest = max(sum(w.by_severity.values()) for w in weeks)
    top, chart.y_ticks[:] = _y_scale(float(highest))
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / len(weeks)
    for i, week in enumerate(weeks):
        base = HEIGHT - BOTTOM
        for severity, count in week.by_severity.items():
            if count:
                h = plot_h * count / top
                base -= h
                chart.rects.append(
                    Rect(
                        LEFT + i * step + step * 0.15,
                        base,
                        step * 0.7,
                        h,
                        f"sev-{severity}",
                        f"week of {week.starts}: {count} {severity}",
                    )
                )
        if len(weeks) <= 12 or i % max(1, len(weeks) // 8) == 0:
            chart.x_ticks.append(
                Tick(LEFT + (i + 0.5) * step, HEIGHT - BOTTOM + 14, week.starts[5:])
            )
    chart.legend[:] = [(f"sev-{s}", s) for s in ("critical", "warning", "info")]
    return chart


def response_times(report: Report) -> Chart:
    chart = Chart("Median time to acknowledge and to resolve, hours, by starting tier")
    values = [
        (t.tier, kind, (value or 0.0) / 3600.0)
        for t in report.tickets.times
        for kind, value in (("ack", t.mtta_median_s), ("fix", t.mttr_median_s))
    ]
    if not any(v for _, _, v in values):
        return Chart(chart.title, empty="No ticket was acknowledged or resolved by a person.")
    top, chart.y_ticks[:] = _y_scale(max(v for _, _, v in values))
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT - RIGHT) / 3
    for tier, kind, hours in values:
        offset = 0.15 if kind == "ack" else 0.5
        h = plot_h * hours / top
        what = "to acknowledge" if kind == "ack" else "to resolve"
        chart.rects.append(
            Rect(
                LEFT + (tier - 1) * step + step * offset,
                HEIGHT - BOTTOM - h,
                step * 0.35,
                h,
                f"time-{kind}",
                f"tier {tier}: median {hours:.2f} h {what}",
            )
        )
    chart.x_ticks[:] = [
        Tick(LEFT + (t - 0.5) * step, HEIGHT - BOTTOM + 14, f"tier {t}") for t in (1, 2, 3)
    ]
    chart.legend[:] = [("time-ack", "MTTA (median)"), ("time-fix", "MTTR (median)")]
    return chart


def disk_forecast(report: Report, horizon_days: int = 90) -> Chart:
    disks: tuple[DiskRow, ...] = report.plan.fullest_disks
    chart = Chart(f"Fullest disks: used share, and projected to {horizon_days} days ahead")
    if not disks:
        return Chart(chart.title, empty="Not enough filesystem samples for a forecast yet.")
    first = min(p[0] for d in disks for p in d.points)
    last = report.end + horizon_days * DAY
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM

    def xy(at: float, ratio: float) -> str:
        x = LEFT + plot_w * (at - first) / max(last - first, 1.0)
        y = TOP + plot_h * (1 - min(max(ratio, 0.0), 1.0))
        return f"{x:.1f},{y:.1f}"

    for i, disk in enumerate(disks):
        css = f"disk-{i}"
        name = f"{disk.hostname} {disk.mountpoint}"
        chart.lines.append(Line(" ".join(xy(at, r) for at, r in disk.points), css, name))
        at, ratio = disk.points[-1]
        ahead = ratio + disk.growth_bytes_per_day / disk.size_bytes * (last - at) / DAY
        chart.lines.append(Line(f"{xy(at, ratio)} {xy(last, ahead)}", css, name, dashed=True))
        chart.legend.append((css, name))
    chart.y_ticks[:] = [Tick(LEFT - 4, TOP + plot_h * (1 - i / 4), f"{i * 25}%") for i in range(5)]
    for i in range(5):
        at = first + (last - first) * i / 4
        label = dt.datetime.fromtimestamp(at, dt.UTC).date().isoformat()
        chart.x_ticks.append(Tick(LEFT + plot_w * i / 4, HEIGHT - BOTTOM + 14, label))
    return chart
