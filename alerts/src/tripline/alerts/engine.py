"""The alerts engine: (rules, target, series, states, now) -> (new states, transitions).

Pure: no clock, no I/O. The caller keeps the returned states and passes them back on the next
call (or after a restart), so one agent's alerts behave the same whether evaluated in one
process lifetime or across many.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from tripline.alerts.model import OPS, Rule, RuleSet, Window
from tripline.common.labels import Labels

__all__ = [
    "AlertKey",
    "AlertState",
    "SeriesData",
    "Target",
    "Transition",
    "evaluate_agent",
    "window_value",
]


@dataclass(frozen=True)
class SeriesData:
    """One series of one agent; `points` are (t, value) in ascending t."""

    metric: str
    labels: Labels
    points: Sequence[tuple[float, float]]


@dataclass(frozen=True)
class Target:
    """The agent being evaluated; `last_seen` is None for an agent that never reported."""

    agent_id: str
    customer: str
    host: str
    site: str
    last_seen: float | None
    offline_after: float


@dataclass(frozen=True)
class AlertKey:
    agent_id: str
    rule: str
    labels: Labels


@dataclass(frozen=True)
class AlertState:
    phase: Literal["pending", "firing"]
    active_since: float
    firing_since: float | None
    clear_since: float | None
    value: float
    last_eval: float


@dataclass(frozen=True)
class Transition:
    """An alert starting to fire or resolving.

    `rule` is the rule as it applies to the agent's customer. `reason` is "triggered" or
    "offline" for firing; "cleared", "series gone", "rule removed" or "disabled" for resolved.
    """

    kind: Literal["firing", "resolved"]
    key: AlertKey
    rule: Rule
    at: float
    value: float
    summary: str
    reason: str


def evaluate_agent(
    rules: RuleSet,
    target: Target,
    series: Iterable[SeriesData],
    states: Mapping[AlertKey, AlertState],
    now: float,
) -> tuple[dict[AlertKey, AlertState], list[Transition]]:
    """Evaluate every rule for one agent; returns its complete new states and the transitions.

    `states` holds this agent's states only. `now` is raised to the latest `last_eval` among
    them, since backlog replays may arrive out of order and clocks must not run backwards.
    """
    now = max([now, *(state.last_eval for state in states.values())])
    run = _Run(target, now, dict(states))
    offline = rules.offline_rule
    offline_key = AlertKey(target.agent_id, offline.name, ())
    age = math.inf if target.last_seen is None else now - target.last_seen
    if age >= target.offline_after:
        # While offline every other alert is frozen: neither fires nor resolves.
        previous = states.get(offline_key)
        if previous is None:
            run.fire(offline, offline_key, now, age, "offline")
        else:
            run.new[offline_key] = dataclasses.replace(previous, value=age, last_eval=now)
        return run.new, run.transitions
    if offline_key in states:
        run.resolve(offline, offline_key, age, "cleared")

    # Sorted labels make the key independent of the order a caller built them in; a series
    # given twice counts once (the last wins).
    by_metric: dict[str, dict[Labels, SeriesData]] = {}
    for s in series:
        by_metric.setdefault(s.metric, {})[tuple(sorted(s.labels))] = s
    label_maps: dict[Labels, dict[str, str]] = {}
    seen: set[AlertKey] = set()
    for rule in rules.threshold_rules:
        effective = rule.for_customer(target.customer)
        if effective is None:
            continue
        for labels, data in by_metric.get(effective.metric, {}).items():
            label_map = label_maps.get(labels)
            if label_map is None:
                label_map = label_maps[labels] = dict(labels)
            if not all(matcher.matches(label_map) for matcher in effective.matchers):
                continue
            key = AlertKey(target.agent_id, rule.name, labels)
            seen.add(key)
            value = window_value(effective.window, data.points, now)
            if value is not None:
                run.step(effective, key, value)

    by_name = {rule.name: rule for rule in rules.threshold_rules}
    for key, previous in states.items():
        if key in seen or key == offline_key:
            continue
        base = by_name.get(key.rule)
        if base is None:
            rule, reason = _removed_rule(key.rule), "rule removed"
        else:
            effective = base.for_customer(target.customer)
            rule, reason = (base, "disabled") if effective is None else (effective, "series gone")
        if previous.phase == "firing":
            run.resolve(rule, key, previous.value, reason)
        else:
            del run.new[key]
    return run.new, run.transitions


def window_value(
    window: Window | None, points: Sequence[tuple[float, float]], now: float
) -> float | None:
    """The value a rule compares: the last point, or the window aggregate ending at `now`.

    None when the window holds too few points to say anything (the series is then skipped).
    """
    if window is None:
        return points[-1][1] if points else None
    start = bisect.bisect_left(points, now - window.over, key=lambda point: point[0])
    recent = points[start:]
    if not recent:
        return None
    values = [value for _, value in recent]
    if window.agg == "avg":
        return math.fsum(values) / len(values)
    if window.agg == "max":
        return max(values)
    if window.agg == "min":
        return min(values)
    if window.agg == "resets":
        return float(sum(1 for before, after in itertools.pairwise(values) if after < before))
    if window.agg == "rate":
        return _rate(recent)
    return _predict_linear(recent, now + window.ahead)


def _rate(points: Sequence[tuple[float, float]]) -> float | None:
    """Per-second increase of a counter; a drop is a reset, after which it counts from zero.

    Unlike Prometheus there is no extrapolation to the window edges: the rate covers the
    span between the first and last point exactly.
    """
    elapsed = points[-1][0] - points[0][0]
    if elapsed <= 0:
        return None
    increase = 0.0
    for (_, before), (_, after) in itertools.pairwise(points):
        increase += after if after < before else after - before
    return increase / elapsed


def _predict_linear(points: Sequence[tuple[float, float]], at: float) -> float | None:
    """Least-squares line through the points, read at time `at`."""
    if len(points) < 2:
        return None
    mean_t = math.fsum(t for t, _ in points) / len(points)
    mean_v = math.fsum(v for _, v in points) / len(points)
    spread = math.fsum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    slope = math.fsum((t - mean_t) * (v - mean_v) for t, v in points) / spread
    return mean_v + slope * (at - mean_t)


class _Run:
    """The evaluation of one agent at one instant: the states being built and transitions."""

    def __init__(self, target: Target, now: float, states: dict[AlertKey, AlertState]) -> None:
        self.target = target
        self.now = now
        self.new = states
        self.transitions: list[Transition] = []

    def step(self, rule: Rule, key: AlertKey, value: float) -> None:
        previous = self.new.get(key)
        now = self.now
        if previous is None or previous.phase == "pending":
            if not OPS[rule.op](value, rule.threshold):
                self.new.pop(key, None)
                return
            since = now if previous is None else previous.active_since
            if now - since >= rule.for_seconds:
                self.fire(rule, key, since, value, "triggered")
            else:
                self.new[key] = AlertState("pending", since, None, None, value, now)
            return
        if OPS[rule.op](value, rule.clear_threshold):
            self.new[key] = dataclasses.replace(
                previous, clear_since=None, value=value, last_eval=now
            )
            return
        clear_since = now if previous.clear_since is None else previous.clear_since
        if now - clear_since >= rule.clear_for_seconds:
            self.resolve(rule, key, value, "cleared")
        else:
            self.new[key] = dataclasses.replace(
                previous, clear_since=clear_since, value=value, last_eval=now
            )

    def fire(self, rule: Rule, key: AlertKey, since: float, value: float, reason: str) -> None:
        self.new[key] = AlertState("firing", since, self.now, None, value, self.now)
        self.transitions.append(self._transition("firing", rule, key, value, reason))

    def resolve(self, rule: Rule, key: AlertKey, value: float, reason: str) -> None:
        del self.new[key]
        self.transitions.append(self._transition("resolved", rule, key, value, reason))

    def _transition(
        self,
        kind: Literal["firing", "resolved"],
        rule: Rule,
        key: AlertKey,
        value: float,
        reason: str,
    ) -> Transition:
        target = self.target
        threshold = target.offline_after if rule.builtin == "offline" else rule.threshold
        # Target fields win over a series label of the same name.
        context: dict[str, object] = dict(key.labels)
        context |= {
            "host": target.host,
            "customer": target.customer,
            "agent_id": target.agent_id,
            "site": target.site,
            "rule": rule.name,
            "metric": rule.metric,
            "value": value,
            "threshold": threshold,
        }
        summary = rule.render_summary(context)
        return Transition(kind, key, rule, self.now, value, summary, reason)


def _removed_rule(name: str) -> Rule:
    """Stands in for a rule no longer in the rule set, so its alerts can still resolve."""
    return Rule(
        name=name,
        metric="",
        matchers=(),
        op=">",
        threshold=0.0,
        for_seconds=0.0,
        clear_threshold=0.0,
        clear_for_seconds=0.0,
        window=None,
        severity="info",
        tier=1,
        summary="{host}: rule {rule} was removed from the rule set",
        runbook="",
    )
