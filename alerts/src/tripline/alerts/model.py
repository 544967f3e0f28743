"""What a rule is: the frozen rule model, label matching, overrides and summary rendering.

The rule file format (parsing, validation, loading) lives in alerts.rules, which re-exports
everything here; callers import from alerts.rules.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

MatcherKind = Literal["eq", "ne", "regex", "not_regex"]
GroupBy = Literal["customer", "site"]
Agg = Literal["avg", "max", "min", "rate", "predict_linear", "resets"]

OPS: Mapping[str, Callable[[float, float], bool]] = types.MappingProxyType(
    {
        ">": operator.gt,
        ">=": operator.ge,
        "<": operator.lt,
        "<=": operator.le,
        "==": operator.eq,
        "!=": operator.ne,
    }
)
SEVERITIES = ("info", "warning", "critical")
TIERS = (1, 2, 3)
AGGS: tuple[Agg, ...] = ("avg", "max", "min", "rate", "predict_linear", "resets")
OFFLINE = "offline"
OFFLINE_METRIC = "agent_last_report_age_seconds"


@functools.lru_cache(maxsize=1024)
def label_regex(pattern: str) -> re.Pattern[str]:
    # Prometheus anchors label regexes at both ends; fullmatch gives the same semantics.
    return re.compile(pattern)


@dataclass(frozen=True)
class Matcher:
    label: str
    kind: MatcherKind
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        """An absent label reads as "", as in Prometheus, so `label: ""` selects its absence."""
        actual = labels.get(self.label, "")
        if self.kind == "eq":
            return actual == self.value
        if self.kind == "ne":
            return actual != self.value
        found = label_regex(self.value).fullmatch(actual) is not None
        return found if self.kind == "regex" else not found


@dataclass(frozen=True)
class Window:
    agg: Agg
    over: float
    ahead: float = 0.0


@dataclass(frozen=True)
class Override:
    threshold: float | None = None
    clear_threshold: float | None = None
    for_seconds: float | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Grouping:
    """One ticket for many PCs: when the alert fires on at least `min_agents` PCs of one
    customer (or one site of it), and at least `min_ratio` of them, within `within`
    seconds, those PCs share one group ticket instead of one each (docs/rules.md)."""

    by: GroupBy
    min_agents: int
    within: float
    min_ratio: float = 0.0


_NO_OVERRIDES: Mapping[str, Override] = types.MappingProxyType({})


class _Missing:
    """Stands in for an unknown template key so "{key}" survives rendering."""

    # A slot with an odd name, so "{x.name}" reaches __getattr__ instead of an attribute.
    __slots__ = ("_missing_key",)

    def __init__(self, key: str) -> None:
        self._missing_key = key

    def __format__(self, spec: str) -> str:
        return "{" + self._missing_key + (":" + spec if spec else "") + "}"

    def __getattr__(self, attr: str) -> _Missing:
        return _Missing(f"{self._missing_key}.{attr}")

    def __getitem__(self, item: object) -> _Missing:
        return _Missing(f"{self._missing_key}[{item}]")


class _Context(dict[str, object]):
    def __missing__(self, key: str) -> object:
        return _Missing(key)


TEMPLATE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError)


def format_template(template: str, context: Mapping[str, object]) -> str:
    """str.format_map where an unknown key stays "{key}"; raises one of TEMPLATE_ERRORS."""
    return template.format_map(_Context(context))


@dataclass(frozen=True)
class Rule:
    """One alert rule. It fires when `op(value, threshold)` held for `for_seconds`, and
    resolves when `op(value, clear_threshold)` has been false for `clear_for_seconds`."""

    name: str
    metric: str
    matchers: tuple[Matcher, ...]
    op: str
    threshold: float
    for_seconds: float
    clear_threshold: float
    clear_for_seconds: float
    window: Window | None
    severity: str
    tier: int
    summary: str
    runbook: str
    # A read-only mapping; kept out of the hash because mappingproxy is unhashable.
    overrides: Mapping[str, Override] = field(default_factory=lambda: _NO_OVERRIDES, hash=False)
    builtin: str | None = None
    group: Grouping | None = None

    def for_customer(self, customer: str) -> Rule | None:
        """The rule as it applies to `customer`, or None when the customer disabled it.

        A clear threshold equal to the threshold (no hysteresis) moves with an overridden
        threshold; a distinct clear threshold stays unless the override sets its own.
        """
        override = self.overrides.get(customer)
        if override is None:
            return self
        if not override.enabled:
            return None
        threshold = self.threshold if override.threshold is None else override.threshold
        if override.clear_threshold is not None:
            clear = override.clear_threshold
        elif self.clear_threshold == self.threshold:
            clear = threshold
        else:
            clear = self.clear_threshold
        for_seconds = self.for_seconds if override.for_seconds is None else override.for_seconds
        return dataclasses.replace(
            self, threshold=threshold, clear_threshold=clear, for_seconds=for_seconds
        )

    def render_summary(self, context: Mapping[str, object]) -> str:
        """Fill the summary template; unknown keys stay as "{key}".

        A template that cannot format these values (say "{host:.0%}") falls back to
        "<rule>: <metric> = <value>" rather than losing the alert.
        """
        try:
            return format_template(self.summary, context)
        except TEMPLATE_ERRORS:
            return f"{self.name}: {self.metric} = {context.get('value')}"


DEFAULT_OFFLINE_RULE = Rule(
    name="AgentOffline",
    metric=OFFLINE_METRIC,
    matchers=(),
    op=">=",
    threshold=0.0,
    for_seconds=0.0,
    clear_threshold=0.0,
    clear_for_seconds=0.0,
    window=None,
    severity="critical",
    tier=1,
    summary="{host} has not reported for {value:.0f}s",
    runbook=(
        "Check the PC is powered on and online (ping it, call the site); if it is up, "
        "restart the Tripline agent service and check the firewall allows the collector."
    ),
    builtin=OFFLINE,
)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str

    @property
    def offline_rule(self) -> Rule:
        for rule in self.rules:
            if rule.builtin == OFFLINE:
                return rule
        return DEFAULT_OFFLINE_RULE

    @functools.cached_property
    def threshold_rules(self) -> tuple[Rule, ...]:
        # Cached: the engine reads it for every report of every agent (a profile showed
        # rebuilding it at 4% of the collector's time); a RuleSet never changes.
        return tuple(rule for rule in self.rules if rule.builtin is None)
