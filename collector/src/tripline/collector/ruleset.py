"""The rule set the collector runs, and the series history its windows need."""

from __future__ import annotations

from pathlib import Path

from tripline.alerts.rules import RuleSet, default_rules, load_rules


def load_rule_set(path: Path | None) -> RuleSet:
    return default_rules() if path is None else load_rules(path)


def series_retention(rules: RuleSet) -> dict[str, float]:
    """History each metric needs: its longest rule window (a bare threshold needs none)."""
    retention: dict[str, float] = {}
    for rule in rules.threshold_rules:
        if rule.window is not None:
            retention[rule.metric] = max(retention.get(rule.metric, 0.0), rule.window.over)
    return retention


def series_window(rules: RuleSet) -> float:
    """History to keep per series: the longest rule window, at least 15 minutes."""
    longest = max((r.window.over for r in rules.threshold_rules if r.window), default=0.0)
    return max(900.0, longest + 60.0)
