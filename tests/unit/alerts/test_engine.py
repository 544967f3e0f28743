"""The pure alerts engine, driven through timelines of (time, sample) with a fake clock."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from tripline.alerts.engine import (
    AlertKey,
    AlertState,
    SeriesData,
    Target,
    Transition,
    evaluate_agent,
    window_value,
)
from tripline.alerts.rules import Labels, RuleSet, Window, default_rules, parse_rules

OFFLINE_AFTER = 300.0


def rules_from(*rules: str) -> RuleSet:
    """A RuleSet of flow-mapping rules; each gets metric m and a summary unless given."""
    lines = ["rules:"]
    for fields in rules:
        defaults = "" if "summary:" in fields else ", summary: '{rule} {value}'"
        lines.append("  - {" + fields + defaults + "}")
    return parse_rules("\n".join(lines) + "\n", "test.yaml")


HOLD = "hold"  # evaluate with the series present but no new sample
GONE = "gone"  # evaluate with the series absent


@dataclass(frozen=True)
class Step:
    at: float
    sample: float | str = HOLD
    # None: never seen; a float: last report time; default: the agent reported at `at`.
    last_seen: float | str | None = "now"


def steps(*pairs: tuple[float, float | str]) -> list[Step]:
    return [Step(at, sample) for at, sample in pairs]


def every(start: float, stop: float, step: float, value: float) -> list[Step]:
    return [Step(float(at), value) for at in range(int(start), int(stop) + 1, int(step))]


Seen = tuple[str, float, str]  # (kind, at, reason)


def drive(
    rules: RuleSet | Sequence[tuple[float, RuleSet]],
    timeline: Sequence[Step],
    customer: str = "other",
    labels: Labels = (("mountpoint", "/"),),
    restore: bool = False,
) -> tuple[list[Seen], dict[AlertKey, AlertState]]:
    """Run the timeline; `rules` may be a schedule of (from time, RuleSet) for reloads.

    With `restore`, states are rebuilt from plain values between calls, as after a restart.
    """
    schedule = [(-math.inf, rules)] if isinstance(rules, RuleSet) else list(rules)
    states: dict[AlertKey, AlertState] = {}
    points: list[tuple[float, float]] = []
    seen: list[Seen] = []
    present = False
    for step in timeline:
        if isinstance(step.sample, float | int):
            points.append((step.at, float(step.sample)))
            present = True
        elif step.sample == GONE:
            present = False
        series = [SeriesData("m", labels, tuple(points))] if present else []
        last_seen = step.at if step.last_seen == "now" else step.last_seen
        assert not isinstance(last_seen, str)
        target = Target("agent-1", customer, "pc-01", "hq", last_seen, OFFLINE_AFTER)
        active = [ruleset for start, ruleset in schedule if start <= step.at][-1]
        states, transitions = evaluate_agent(active, target, series, states, step.at)
        seen += [(t.kind, t.at, t.reason) for t in transitions]
        if restore:
            states = dict(_through_json(key, state) for key, state in states.items())
    return seen, states


def _through_json(key: AlertKey, state: AlertState) -> tuple[AlertKey, AlertState]:
    """What storage would hand back: JSON has lists, not tuples."""
    raw_key = json.loads(json.dumps(dataclasses.asdict(key)))
    labels = tuple((name, value) for name, value in raw_key.pop("labels"))
    raw_state = json.loads(json.dumps(dataclasses.asdict(state)))
    return AlertKey(labels=labels, **raw_key), AlertState(**raw_state)


GT = "name: R, metric: m, op: '>', threshold: 0.9"

CASES: list[tuple[str, str, list[Step], list[Seen]]] = [
    (
        "for: fires once the condition held 5m",
        GT + ", for: 5m",
        every(0, 600, 60, 0.95),
        [("firing", 300.0, "triggered")],
    ),
    (
        "for: a dip restarts the clock",
        GT + ", for: 5m",
        steps((0, 0.95), (120, 0.5), (180, 0.95), (420, 0.95), (480, 0.95)),
        [("firing", 480.0, "triggered")],
    ),
    (
        "for: 0 fires at once",
        GT,
        steps((0, 0.5), (60, 0.95), (120, 0.96)),
        [("firing", 60.0, "triggered")],
    ),
    (
        "for: a pending alert that drops emits nothing",
        GT + ", for: 5m",
        steps((0, 0.95), (120, 0.95), (180, 0.5), (600, 0.5)),
        [],
    ),
    (
        "without hysteresis a hovering value flaps",
        GT,
        steps((0, 0.95), (60, 0.89), (120, 0.91)),
        [
            ("firing", 0.0, "triggered"),
            ("resolved", 60.0, "cleared"),
            ("firing", 120.0, "triggered"),
        ],
    ),
    (
        "hysteresis: a value hovering at the line does not flap",
        GT + ", clear: {threshold: 0.85}",
        steps((0, 0.95), (60, 0.89), (120, 0.91), (180, 0.88), (240, 0.92), (300, 0.84)),
        [("firing", 0.0, "triggered"), ("resolved", 300.0, "cleared")],
    ),
    (
        "hysteresis: the clear condition must hold for clear.for",
        GT + ", clear: {threshold: 0.85, for: 2m}",
        steps((0, 0.95), (60, 0.8), (120, 0.8), (150, 0.9), (200, 0.8), (260, 0.8), (320, 0.8)),
        [("firing", 0.0, "triggered"), ("resolved", 320.0, "cleared")],
    ),
    (
        "op <",
        "name: R, metric: m, op: '<', threshold: 10, clear: {threshold: 20}",
        steps((0, 50), (60, 5), (120, 15), (180, 25)),
        [("firing", 60.0, "triggered"), ("resolved", 180.0, "cleared")],
    ),
    (
        "op !=",
        "name: R, metric: m, op: '!=', threshold: 1",
        steps((0, 1), (60, 0), (120, 0), (180, 1)),
        [("firing", 60.0, "triggered"), ("resolved", 180.0, "cleared")],
    ),
    (
        "window avg: one spike is averaged away, a sustained rise is not",
        GT + ", window: {agg: avg, over: 5m}",
        steps((0, 0.5), (60, 1.0), (120, 1.0), (180, 1.0), (240, 1.0), (300, 1.0)),
        # avg at 240 is (0.5 + 4) / 5 = 0.9, not > 0.9; at 300 it is 5.5 / 6.
        [("firing", 300.0, "triggered")],
    ),
    (
        "window max: fires on a spike, clears when it leaves the window",
        GT + ", window: {agg: max, over: 2m}",
        steps((0, 0.5), (60, 0.95), (120, 0.5), (180, 0.5), (240, 0.5)),
        [("firing", 60.0, "triggered"), ("resolved", 240.0, "cleared")],
    ),
    (
        "window min: fires only when every sample in the window is high",
        GT + ", window: {agg: min, over: 2m}",
        steps((0, 0.95), (60, 0.95), (120, 0.5), (180, 0.95), (240, 0.95), (300, 0.95)),
        [
            ("firing", 0.0, "triggered"),
            ("resolved", 120.0, "cleared"),
            ("firing", 300.0, "triggered"),
        ],
    ),
    (
        "window rate: a counter's per-second increase across a reset",
        "name: R, metric: m, op: '>', threshold: 1.2, window: {agg: rate, over: 2m}",
        # 1/s, then 2/s, then 0.5/s. The drop to 50 is a restart: at 240 the window holds
        # +50 and +120 (1.42/s); read naively it would be a negative rate and not fire.
        steps((0, 100), (60, 160), (120, 220), (180, 50), (240, 170), (300, 290), (420, 350)),
        [("firing", 240.0, "triggered"), ("resolved", 420.0, "cleared")],
    ),
    (
        "window predict_linear: a disk losing 1000 B/min is empty within 4h",
        "name: R, metric: m, op: '<', threshold: 0, window: {agg: predict_linear, over: 1h, "
        "ahead: 4h}",
        # One point says nothing; from the second the line predicts 99000 - 240000 < 0.
        steps((0, 100000), (60, 99000), (120, 98000)),
        [("firing", 60.0, "triggered")],
    ),
    (
        "window resets: a reboot fires once, clears when it leaves the window",
        "name: R, metric: m, op: '>', threshold: 0, window: {agg: resets, over: 30m}",
        # Uptime restarts at 120; the pre-reboot point at 60 leaves the window after 1860.
        [Step(0, 1000), Step(60, 1060)] + [Step(at, at - 115.0) for at in range(120, 2401, 60)],
        [("firing", 120.0, "triggered"), ("resolved", 1920.0, "cleared")],
    ),
    (
        "an empty window leaves the state alone (clock kept)",
        GT + ", for: 5m, window: {agg: avg, over: 1m}",
        steps((0, 0.95), (60, 0.95), (200, HOLD), (250, HOLD), (300, 0.95)),
        [("firing", 300.0, "triggered")],
    ),
    (
        "a firing series that disappears resolves as series gone",
        GT,
        steps((0, 0.95), (60, 0.95), (120, GONE)),
        [("firing", 0.0, "triggered"), ("resolved", 120.0, "series gone")],
    ),
    (
        "a pending series that disappears just drops",
        GT + ", for: 5m",
        steps((0, 0.95), (60, GONE), (400, GONE)),
        [],
    ),
    (
        "offline fires at once and resolves when the agent is back",
        GT + ", for: 5m",
        [Step(0, 0.5), Step(300, HOLD, 0.0), Step(400, HOLD, 0.0), Step(500, 0.5)],
        [("firing", 300.0, "offline"), ("resolved", 500.0, "cleared")],
    ),
    (
        "offline: a pending rule neither fires nor drops; its clock survives",
        GT + ", for: 5m",
        [
            Step(0, 0.95),
            Step(120, 0.95),
            Step(420, 0.95, 120.0),
            Step(480, 0.5, 120.0),
            Step(500, 0.95),
        ],
        [
            ("firing", 420.0, "offline"),
            ("resolved", 500.0, "cleared"),
            ("firing", 500.0, "triggered"),
        ],
    ),
    (
        "offline: a firing rule does not resolve, even when its series goes",
        GT,
        [Step(0, 0.95), Step(400, 0.5, 0.0), Step(450, GONE, 0.0), Step(500, 0.95)],
        [
            ("firing", 0.0, "triggered"),
            ("firing", 400.0, "offline"),
            ("resolved", 500.0, "cleared"),
        ],
    ),
    (
        "offline: a clear clock started before going offline counts once back",
        GT + ", clear: {threshold: 0.85, for: 2m}",
        [Step(0, 0.95), Step(60, 0.8), Step(400, 0.8, 60.0), Step(500, 0.8)],
        [
            ("firing", 0.0, "triggered"),
            ("firing", 400.0, "offline"),
            ("resolved", 500.0, "cleared"),
            ("resolved", 500.0, "cleared"),
        ],
    ),
    (
        "an agent that never reported is offline",
        GT,
        [Step(0, GONE, None), Step(60, GONE, None), Step(120, 0.5)],
        [("firing", 0.0, "offline"), ("resolved", 120.0, "cleared")],
    ),
    (
        "backlog replay: an earlier now is clamped to the last evaluation",
        GT + ", for: 5m",
        steps((0, 0.95), (299, 0.95), (10, HOLD), (300, 0.95)),
        [("firing", 300.0, "triggered")],
    ),
]


@pytest.mark.parametrize(
    ("rule", "timeline", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_timeline(rule: str, timeline: list[Step], expected: list[Seen]) -> None:
    seen, _ = drive(rules_from(rule), timeline)
    assert seen == expected


@pytest.mark.parametrize(
    ("rule", "timeline", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_restored_states_behave_like_one_continuous_run(
    rule: str, timeline: list[Step], expected: list[Seen]
) -> None:
    # A fresh RuleSet object and states rebuilt from plain values at every step, as after
    # a collector restart that reloads rules and ticket state from storage.
    continuous, final = drive(rules_from(rule), timeline)
    restored, restored_final = drive(rules_from(rule), timeline, restore=True)
    assert restored == continuous == expected
    assert restored_final == final


OVERRIDES = (
    GT + ", for: 5m, overrides: {acme: {threshold: 0.95}, beta: {enabled: false}, gamma: {for: 0}}"
)


@pytest.mark.parametrize(
    ("customer", "expected"),
    [
        ("other", [("firing", 300.0, "triggered")]),
        ("acme", []),  # 0.93 is under acme's 0.95
        ("beta", []),  # disabled for beta
        ("gamma", [("firing", 0.0, "triggered")]),  # no `for` for gamma
    ],
)
def test_per_customer_overrides(customer: str, expected: list[Seen]) -> None:
    seen, _ = drive(rules_from(OVERRIDES), every(0, 600, 60, 0.93), customer=customer)
    assert seen == expected


def test_firing_transition_carries_the_effective_rule_and_rendered_summary() -> None:
    rules = rules_from(
        GT + ", summary: '{host} ({customer}/{site}/{agent_id}) {mountpoint} {value:.0%} > "
        "{threshold:.0%} [{rule} {metric}] {host}', overrides: {acme: {threshold: 0.95}}"
    )
    target = Target("agent-1", "acme", "pc-01", "hq", 0.0, OFFLINE_AFTER)
    labels = (("host", "spoofed"), ("mountpoint", "D:"))
    series = [SeriesData("m", labels, [(0.0, 0.97)])]
    states, transitions = evaluate_agent(rules, target, series, {}, 0.0)
    (transition,) = transitions
    assert transition == Transition(
        kind="firing",
        key=AlertKey("agent-1", "R", labels),
        rule=transitions[0].rule,
        at=0.0,
        value=0.97,
        summary="pc-01 (acme/hq/agent-1) D: 97% > 95% [R m] pc-01",
        reason="triggered",
    )
    assert transition.rule.threshold == 0.95
    assert states == {transition.key: AlertState("firing", 0.0, 0.0, None, 0.97, 0.0)}


def test_matchers_select_series_and_each_series_has_its_own_alert() -> None:
    rules = default_rules()
    target = Target("agent-1", "acme", "pc-01", "hq", 1000.0, OFFLINE_AFTER)
    busy = [(float(t), 1.0) for t in range(0, 1001, 60)]
    full = [(float(t), 0.97) for t in range(0, 1001, 60)]
    series = [
        SeriesData("cpu_core_usage_ratio", (("cpu", "0"),), busy),  # a core has its own name
        SeriesData("cpu_usage_ratio", (), busy),
        SeriesData("filesystem_used_ratio", (("fstype", "NTFS"), ("mountpoint", "C:")), full),
        SeriesData("filesystem_used_ratio", (("fstype", "NTFS"), ("mountpoint", "D:")), full),
        SeriesData("filesystem_used_ratio", (("fstype", "tmpfs"), ("mountpoint", "/run")), full),
    ]
    states: dict[AlertKey, AlertState] = {}
    fired: list[Transition] = []
    for now in (700.0, 1000.0):
        states, transitions = evaluate_agent(rules, target, series, states, now)
        fired += transitions
    assert sorted((t.key.rule, t.key.labels, t.at) for t in fired) == [
        ("CpuSaturated", (), 1000.0),
        ("FilesystemAlmostFull", (("fstype", "NTFS"), ("mountpoint", "C:")), 1000.0),
        ("FilesystemAlmostFull", (("fstype", "NTFS"), ("mountpoint", "D:")), 1000.0),
    ]
    by_key = {t.key.labels: t.summary for t in fired}
    assert by_key[(("fstype", "NTFS"), ("mountpoint", "C:"))] == "pc-01: C: is 97% full"


def test_offline_alert_value_and_summary() -> None:
    rules = default_rules()
    seen_at = Target("agent-1", "acme", "pc-01", "hq", 1000.0, OFFLINE_AFTER)
    states, (fired,) = evaluate_agent(rules, seen_at, [], {}, 1400.0)
    assert (fired.kind, fired.key, fired.value) == (
        "firing",
        AlertKey("agent-1", "AgentOffline", ()),
        400.0,
    )
    assert fired.summary == "pc-01 has not reported for 400s"
    assert (fired.rule.severity, fired.rule.builtin) == ("critical", "offline")
    states, transitions = evaluate_agent(rules, seen_at, [], states, 1500.0)
    assert transitions == []
    assert states[fired.key].value == 500.0  # kept current while offline, no new transition
    never = dataclasses.replace(seen_at, last_seen=None)
    _, (fired,) = evaluate_agent(rules, never, [], {}, 0.0)
    assert fired.value == math.inf


def test_states_of_other_rules_are_returned_unchanged_while_offline() -> None:
    rules = rules_from(GT + ", for: 5m")
    key = AlertKey("agent-1", "R", (("mountpoint", "/"),))
    other = AlertKey("agent-1", "Removed", ())
    before = {
        key: AlertState("pending", 0.0, None, None, 0.95, 100.0),
        other: AlertState("firing", 0.0, 0.0, None, 1.0, 100.0),
    }
    target = Target("agent-1", "acme", "pc-01", "hq", 100.0, OFFLINE_AFTER)
    series = [SeriesData("m", key.labels, [(600.0, 0.99)])]
    states, transitions = evaluate_agent(rules, target, series, before, 600.0)
    assert [t.reason for t in transitions] == ["offline"]
    assert {k: v for k, v in states.items() if k.rule != "AgentOffline"} == before


def test_reload_with_the_same_rule_names_keeps_clocks() -> None:
    v1 = rules_from(GT + ", for: 5m")
    v2 = rules_from("name: R, metric: m, op: '>', threshold: 0.8, for: 5m")
    seen, _ = drive([(-math.inf, v1), (120.0, v2)], every(0, 600, 60, 0.85))
    # 0.85 is under v1's 0.9; pending starts under v2 at 120 and fires 5 minutes later.
    assert seen == [("firing", 420.0, "triggered")]

    seen, _ = drive([(-math.inf, v1), (120.0, v2)], every(0, 600, 60, 0.95))
    assert seen == [("firing", 300.0, "triggered")]  # the clock from t=0 survives the reload


def test_reload_resolves_removed_and_disabled_rules() -> None:
    v1 = rules_from(GT)
    renamed = rules_from("name: R2, metric: m, op: '>', threshold: 0.9")
    seen, states = drive([(-math.inf, v1), (120.0, renamed)], every(0, 180, 60, 0.95))
    assert seen == [
        ("firing", 0.0, "triggered"),
        ("firing", 120.0, "triggered"),
        ("resolved", 120.0, "rule removed"),
    ]
    assert [key.rule for key in states] == ["R2"]

    disabled = rules_from(GT + ", overrides: {acme: {enabled: false}}")
    seen, states = drive([(-math.inf, v1), (120.0, disabled)], every(0, 180, 60, 0.95), "acme")
    assert seen == [("firing", 0.0, "triggered"), ("resolved", 120.0, "disabled")]
    assert states == {}


def test_removed_rule_transition_still_has_a_usable_rule() -> None:
    key = AlertKey("agent-1", "OldRule", (("device", "sda"),))
    target = Target("agent-1", "acme", "pc-01", "hq", 0.0, OFFLINE_AFTER)
    state = AlertState("firing", 0.0, 0.0, None, 3.0, 0.0)
    states, (resolved,) = evaluate_agent(default_rules(), target, [], {key: state}, 60.0)
    assert states == {}
    assert (resolved.kind, resolved.reason, resolved.value, resolved.rule.name) == (
        "resolved",
        "rule removed",
        3.0,
        "OldRule",
    )
    assert resolved.summary == "pc-01: rule OldRule was removed from the rule set"


def test_clamped_now_is_used_for_state_and_transitions() -> None:
    rules = rules_from(GT + ", for: 5m")
    key = AlertKey("agent-1", "R", ())
    target = Target("agent-1", "acme", "pc-01", "hq", 0.0, 1e9)
    before = {key: AlertState("pending", 0.0, None, None, 0.95, 350.0)}
    states, (fired,) = evaluate_agent(
        rules, target, [SeriesData("m", (), [(0.0, 0.95)])], before, 10.0
    )
    assert fired.at == 350.0
    assert states[key].last_eval == 350.0


@pytest.mark.parametrize(
    ("window", "points", "now", "expected"),
    [
        (None, [(0, 1.0), (60, 2.0)], 1000, 2.0),  # no window: the last point, however old
        (None, [], 0, None),
        (Window("avg", 120), [(0, 9.0), (60, 1.0), (120, 2.0), (180, 6.0)], 180, 3.0),
        (Window("max", 120), [(0, 9.0), (60, 1.0), (120, 2.0), (180, 6.0)], 180, 6.0),
        (Window("min", 120), [(0, 0.0), (60, 1.0), (120, 2.0), (180, 6.0)], 180, 1.0),
        (Window("avg", 60), [(0, 1.0), (60, 1.0)], 200, None),  # nothing in the window
        (Window("rate", 300), [(0, 10.0), (100, 60.0), (200, 110.0)], 200, 0.5),
        (Window("rate", 300), [(0, 100.0), (100, 150.0), (200, 30.0)], 200, 0.4),  # reset
        (Window("rate", 300), [(0, 10.0)], 0, None),  # one point has no rate
        (Window("predict_linear", 600, 300), [(0, 100.0), (100, 90.0), (200, 80.0)], 200, 50.0),
        (Window("predict_linear", 600, 0), [(0, 1.0), (100, 3.0), (200, 2.0)], 200, 2.5),
        (Window("predict_linear", 600, 60), [(100, 1.0)], 100, None),
        (Window("resets", 600), [(0, 5.0), (10, 1.0), (20, 2.0), (30, 0.0), (40, 0.0)], 40, 2.0),
        (Window("resets", 600), [(0, 5.0)], 0, 0.0),
    ],
)
def test_window_value(
    window: Window | None, points: list[tuple[float, float]], now: float, expected: float | None
) -> None:
    value = window_value(window, points, now)
    assert value == (None if expected is None else pytest.approx(expected))


def test_label_order_and_repeated_series_do_not_split_an_alert() -> None:
    rules = rules_from(GT)
    target = Target("agent-1", "acme", "pc-01", "hq", 0.0, OFFLINE_AFTER)
    unsorted = (("mountpoint", "/"), ("device", "sda"))
    series = [
        SeriesData("m", unsorted, [(0.0, 0.5)]),
        SeriesData("m", tuple(sorted(unsorted)), [(0.0, 0.95)]),  # the same series again
    ]
    states, transitions = evaluate_agent(rules, target, series, {}, 0.0)
    key = AlertKey("agent-1", "R", (("device", "sda"), ("mountpoint", "/")))
    assert [(t.key, t.value) for t in transitions] == [(key, 0.95)]
    assert list(states) == [key]
