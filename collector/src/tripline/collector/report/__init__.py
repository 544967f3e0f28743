"""The per-customer service report: fleet, tickets, what to plan, with charts.

    with store.read() as conn:
        report = build_report(conn, "acme", parse_period("2024-01-01", "2024-02-01"),
                              memory_rules=memory_rule_names(rules), gap=30.0,
                              now=time.time())
    html = render(report, "html")

`compute` is pure (a `ReportInput` in, a `Report` out); `read_input` is the only part
that reads the store. docs/reports.md says what each figure means.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection

from tripline.alerts.rules import RuleSet
from tripline.collector.report.compute import compute
from tripline.collector.report.load import customer_known, read_input
from tripline.collector.report.model import Report, ReportInput
from tripline.collector.report.period import MAX_DAYS, Period, ReportPeriodError, parse_period
from tripline.collector.report.render import FORMATS, MEDIA_TYPES, as_dict, render

MEMORY_METRICS = frozenset({"memory_used_ratio", "memory_available_bytes", "swap_used_ratio"})

__all__ = [
    "FORMATS",
    "MAX_DAYS",
    "MEDIA_TYPES",
    "Period",
    "Report",
    "ReportInput",
    "ReportPeriodError",
    "as_dict",
    "build_report",
    "compute",
    "customer_known",
    "memory_rule_names",
    "parse_period",
    "read_input",
    "render",
]


def memory_rule_names(rules: RuleSet) -> frozenset[str]:
    """The rules whose tickets mean "short of memory": those on memory or swap metrics."""
    return frozenset(r.name for r in rules.threshold_rules if r.metric in MEMORY_METRICS)


def build_report(
    conn: Connection,
    customer: str,
    period: Period,
    *,
    memory_rules: Collection[str],
    gap: float,
    now: float,
) -> Report:
    """Read and compute `customer`'s report for `period`. `gap`: the collector's offline
    threshold (a longer silence ends a presence span); `now`: when the report is made."""
    data = read_input(
        conn, customer, period.start, period.end, memory_rules=memory_rules, gap=gap, now=now
    )
    return compute(data)
