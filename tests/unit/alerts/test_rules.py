"""The rule file format: durations, parsing, validation errors, matchers, overrides, templates."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import pytest

from tripline.alerts.rules import (
    Matcher,
    Override,
    RuleFileError,
    RuleSet,
    Window,
    default_rules,
    load_rules,
    parse_duration,
    parse_rules,
)


def one_rule(fields: str) -> str:
    """A rule file with one rule written as a YAML flow mapping."""
    return "rules:\n  - {" + fields + "}\n"


BASE = "name: R, metric: m, op: '>', threshold: 0.9, summary: s"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        ("500ms", 0.5),
        ("1m500ms", 60.5),
        ("0s", 0.0),
        (" 5m ", 300.0),
        ("30", 30.0),
        (45, 45.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("5 minutes", "expected a duration like '90s', '5m', '1h30m' or '2d'"),
        ("m", "expected a duration like"),
        ("1.5h", "expected a duration like"),
        ("30m1h", "largest first and each used once"),
        ("1h1h", "largest first and each used once"),
        ("-5", "non-negative, finite"),
        (-1, "non-negative, finite"),
        ("inf", "non-negative, finite"),
        (math.nan, "non-negative, finite"),
        ("", "got an empty string"),
        (True, "got True"),
    ],
)
def test_parse_duration_rejects_with_readable_message(text: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_full_rule_parses_into_the_model() -> None:
    text = """
rules:
  - name: FilesystemAlmostFull
    metric: filesystem_used_ratio
    match:
      mountpoint: "/"
      fstype: {not_regex: "tmpfs|overlay"}
      device: {regex: "sd.*"}
      site: {not: lab}
    op: ">"
    threshold: 0.90
    for: 5m
    clear: {threshold: 0.85, for: 2m}
    window: {agg: avg, over: 5m}
    severity: warning
    tier: 2
    summary: "{host}: {mountpoint} is {value:.0%} full"
    runbook: "Empty the recycle bin."
    overrides:
      acme: {threshold: 0.95}
      beta: {enabled: false}
      1234: {for: 1h, clear: {threshold: 0.5}}
"""
    rules = parse_rules(text, "rules.yaml")
    rule = rules.threshold_rules[0]
    assert rule.name == "FilesystemAlmostFull"
    assert rule.metric == "filesystem_used_ratio"
    assert rule.matchers == (
        Matcher("mountpoint", "eq", "/"),
        Matcher("fstype", "not_regex", "tmpfs|overlay"),
        Matcher("device", "regex", "sd.*"),
        Matcher("site", "ne", "lab"),
    )
    assert (rule.op, rule.threshold, rule.for_seconds) == (">", 0.9, 300.0)
    assert (rule.clear_threshold, rule.clear_for_seconds) == (0.85, 120.0)
    assert rule.window == Window("avg", 300.0)
    assert (rule.severity, rule.tier, rule.runbook) == ("warning", 2, "Empty the recycle bin.")
    assert dict(rule.overrides) == {
        "acme": Override(threshold=0.95),
        "beta": Override(enabled=False),
        "1234": Override(clear_threshold=0.5, for_seconds=3600.0),
    }
    assert rule.builtin is None
    assert rules.offline_rule.name == "AgentOffline"  # added because the file has none
    assert rules.source == "rules.yaml"


def test_defaults_for_optional_fields() -> None:
    rule = parse_rules(one_rule(BASE), "r.yaml").threshold_rules[0]
    assert rule.matchers == ()
    assert (rule.for_seconds, rule.clear_threshold, rule.clear_for_seconds) == (0.0, 0.9, 0.0)
    assert (rule.window, rule.severity, rule.tier, rule.runbook) == (None, "warning", 1, "")


def test_custom_offline_rule_replaces_the_default() -> None:
    text = (
        "rules:\n"
        "  - {name: Silent, builtin: offline, severity: warning, tier: 2,"
        " summary: '{host} quiet'}\n"
    )
    rules = parse_rules(text, "r.yaml")
    assert [rule.name for rule in rules.rules] == ["Silent"]
    offline = rules.offline_rule
    assert (offline.builtin, offline.severity, offline.tier) == ("offline", "warning", 2)
    assert offline.render_summary({"host": "pc-07"}) == "pc-07 quiet"
    assert rules.threshold_rules == ()


# Each broken file and the exact error text a person gets; every error of a file is listed.
BROKEN_FILES = [
    (
        "word for a number",
        "rules:\n  - {name: CpuHot, metric: m, op: '>', threshold: high, summary: s}\n",
        "rules.yaml: rule #1 'CpuHot': field 'threshold': expected a number, got 'high'",
    ),
    (
        "percent for a ratio",
        one_rule("name: R, metric: m, op: '>', threshold: 90%, summary: s"),
        "rules.yaml: rule #1 'R': field 'threshold': expected a number, got '90%'; "
        "write ratios as 0-1, e.g. 0.9",
    ),
    (
        "typo in a field name",
        one_rule("name: R, metric: m, op: '>', treshold: 1, summary: s"),
        "rules.yaml: rule #1 'R': field 'treshold': unknown field (did you mean 'threshold'?)\n"
        "rules.yaml: rule #1 'R': field 'threshold': missing required field",
    ),
    (
        "unquoted > is YAML folded text",
        "rules:\n  - name: R\n    metric: m\n    op: >\n    threshold: 1\n    summary: s\n",
        "rules.yaml: rule #1 'R': field 'op': expected one of >, >=, <, <=, ==, !=, got '' "
        '(quote it: op: ">")',
    ),
    (
        "duplicate rule names",
        "rules:\n  - {" + BASE + "}\n  - {" + BASE + "}\n",
        "rules.yaml: rule #2 'R': field 'name': duplicate rule name (rule #1 has it too)",
    ),
    (
        "bad regex",
        one_rule(BASE + ", match: {fstype: {regex: 'tmp(fs'}}"),
        "rules.yaml: rule #1 'R': field 'match.fstype.regex': bad regex 'tmp(fs': "
        "missing ), unterminated subpattern at position 3",
    ),
    (
        "bad duration",
        one_rule(BASE + ", for: 5 minutes"),
        "rules.yaml: rule #1 'R': field 'for': expected a duration like '90s', '5m', '1h30m' "
        "or '2d' (units: w, d, h, m, s, ms), got '5 minutes'",
    ),
    (
        "bad op, severity and tier together",
        one_rule(
            "name: R, metric: m, op: '=>', threshold: 1, summary: s, severity: urgent, tier: 4"
        ),
        "rules.yaml: rule #1 'R': field 'op': expected one of >, >=, <, <=, ==, !=, got '=>'\n"
        "rules.yaml: rule #1 'R': field 'severity': expected one of info, warning, critical, "
        "got 'urgent'\n"
        "rules.yaml: rule #1 'R': field 'tier': expected one of 1, 2, 3, got 4",
    ),
    (
        "missing required fields",
        one_rule("name: R, metric: m"),
        "rules.yaml: rule #1 'R': field 'op': missing required field\n"
        "rules.yaml: rule #1 'R': field 'threshold': missing required field\n"
        "rules.yaml: rule #1 'R': field 'summary': missing required field",
    ),
    (
        "missing name",
        one_rule("metric: m, op: '>', threshold: 1, summary: s"),
        "rules.yaml: rule #1: field 'name': missing required field",
    ),
    (
        "clear above the trigger for >",
        one_rule(BASE + ", clear: {threshold: 0.95}"),
        "rules.yaml: rule #1 'R': field 'clear.threshold': clear threshold 0.95 must be <= "
        "the threshold 0.9 for op '>'",
    ),
    (
        "clear below the trigger for <=",
        one_rule("name: R, metric: m, op: '<=', threshold: 10, clear: {threshold: 5}, summary: s"),
        "rules.yaml: rule #1 'R': field 'clear.threshold': clear threshold 5 must be >= "
        "the threshold 10 for op '<='",
    ),
    (
        "clear differs for ==",
        one_rule("name: R, metric: m, op: '==', threshold: 1, clear: {threshold: 0}, summary: s"),
        "rules.yaml: rule #1 'R': field 'clear.threshold': clear threshold 0 must be equal to "
        "the threshold 1 for op '=='",
    ),
    (
        "override threshold below the rule's clear",
        one_rule(BASE + ", clear: {threshold: 0.85}, overrides: {acme: {threshold: 0.8}}"),
        "rules.yaml: rule #1 'R': field 'overrides.acme.threshold': with this override, "
        "clear threshold 0.85 must be <= the threshold 0.8 for op '>'",
    ),
    (
        "override clear on the wrong side",
        one_rule(BASE + ", overrides: {acme: {threshold: 0.95, clear: 0.97}}"),
        "rules.yaml: rule #1 'R': field 'overrides.acme.clear': with this override, "
        "clear threshold 0.97 must be <= the threshold 0.95 for op '>'",
    ),
    (
        "broken override entries",
        one_rule(BASE + ", overrides: {acme: {threshhold: 0.95, enabled: nope}, yes: {}}"),
        "rules.yaml: rule #1 'R': field 'overrides.acme.threshhold': unknown field "
        "(did you mean 'threshold'?)\n"
        "rules.yaml: rule #1 'R': field 'overrides.acme.enabled': expected true or false, "
        "got 'nope'\n"
        "rules.yaml: rule #1 'R': field 'overrides': customer ids are strings, got True; quote it",
    ),
    (
        "unclosed template field",
        one_rule("name: R, metric: m, op: '>', threshold: 1, summary: '{host'"),
        "rules.yaml: rule #1 'R': field 'summary': broken template '{host': "
        "expected '}' before end of string",
    ),
    (
        "format spec that cannot apply",
        one_rule("name: R, metric: m, op: '>', threshold: 1, summary: '{host:.0%}'"),
        "rules.yaml: rule #1 'R': field 'summary': broken template '{host:.0%}': "
        "Unknown format code '%' for object of type 'str'",
    ),
    (
        "positional template field",
        one_rule("name: R, metric: m, op: '>', threshold: 1, summary: 'x {} y'"),
        "rules.yaml: rule #1 'R': field 'summary': broken template 'x {} y': "
        "Format string contains positional fields",
    ),
    (
        "YAML syntax error",
        "rules:\n  - name: R\n    metric: m\n   op: x\n",
        "rules.yaml: YAML error at line 4, column 4: while parsing a block collection, "
        "expected <block end>, but found '<block mapping start>'",
    ),
    (
        "duplicate YAML key",
        "rules:\n  - name: R\n    metric: m\n    threshold: 1\n    threshold: 2\n",
        "rules.yaml: YAML error at line 5, column 5: duplicate key 'threshold'",
    ),
    (
        "a list, not a mapping",
        "- a\n- b\n",
        "rules.yaml: expected a mapping with a 'rules' list, got ['a', 'b']",
    ),
    ("empty file", "", "rules.yaml: expected a mapping with a 'rules' list, got an empty file"),
    (
        "rules is not a list",
        "rules: {a: 1}\n",
        "rules.yaml: field 'rules': expected a list of rules, got {'a': 1}",
    ),
    (
        "misspelt top level",
        "rule: []\n",
        "rules.yaml: field 'rule': unknown field (did you mean 'rules'?)\n"
        "rules.yaml: field 'rules': expected a list of rules, got None",
    ),
    (
        "rule that is not a mapping",
        "rules:\n  - just a string\n",
        "rules.yaml: rule #1: expected a mapping, got 'just a string'",
    ),
    (
        "bad window",
        one_rule(BASE + ", window: {agg: median, over: 0s, ahead: 1h}"),
        "rules.yaml: rule #1 'R': field 'window.agg': expected one of avg, max, min, rate, "
        "predict_linear, resets, got 'median'\n"
        "rules.yaml: rule #1 'R': field 'window.over': must be longer than 0s\n"
        "rules.yaml: rule #1 'R': field 'window.ahead': only used with agg 'predict_linear'",
    ),
    (
        "predict_linear without ahead",
        one_rule(BASE + ", window: {agg: predict_linear, over: 1h}"),
        "rules.yaml: rule #1 'R': field 'window.ahead': missing required field "
        "(predict_linear needs it)",
    ),
    (
        "broken builtin rules",
        "rules:\n  - {name: Off, builtin: offline, threshold: 3, severity: loud}\n"
        "  - {name: Gone, builtin: online}\n",
        "rules.yaml: rule #1: field 'name': expected a non-empty string, got False; quote it\n"
        "rules.yaml: rule #1: field 'threshold': unknown field "
        "(allowed: name, builtin, severity, tier, summary, runbook)\n"
        "rules.yaml: rule #1: field 'severity': expected one of info, warning, critical, "
        "got 'loud'\n"
        "rules.yaml: rule #2 'Gone': field 'builtin': only one builtin rule per file "
        "(rule #1 is one)\n"
        "rules.yaml: rule #2 'Gone': field 'builtin': expected one of offline, got 'online'",
    ),
    (
        "metric name with a space",
        one_rule("name: R, metric: 'cpu usage', op: '>', threshold: 1, summary: s"),
        "rules.yaml: rule #1 'R': field 'metric': 'cpu usage' is not a metric name "
        "(letters, digits, '_', ':')",
    ),
    (
        "bad matchers",
        one_rule(BASE + ", match: {'bad-label': x, cpu: [1], device: {regexp: sd.*}}"),
        "rules.yaml: rule #1 'R': field 'match.bad-label': not a label name "
        "(letters, digits, '_')\n"
        "rules.yaml: rule #1 'R': field 'match.cpu': expected a string, {not: ...}, "
        "{regex: ...} or {not_regex: ...}, got [1]\n"
        "rules.yaml: rule #1 'R': field 'match.device': expected a string, {not: ...}, "
        "{regex: ...} or {not_regex: ...}, got {'regexp': 'sd.*'}",
    ),
    (
        "NaN threshold",
        one_rule("name: R, metric: m, op: '>', threshold: .nan, summary: s"),
        "rules.yaml: rule #1 'R': field 'threshold': expected a number, got nan",
    ),
    (
        "errors in several rules are all listed",
        "rules:\n  - {" + BASE + "}\n"
        "  - {name: CpuHot, metric: m, op: '>', threshold: high, summary: s}\n"
        "  - {name: Slow, metric: m, op: '>', threshold: 1, summary: s, for: soon}\n",
        "rules.yaml: rule #2 'CpuHot': field 'threshold': expected a number, got 'high'\n"
        "rules.yaml: rule #3 'Slow': field 'for': expected a duration like '90s', '5m', "
        "'1h30m' or '2d' (units: w, d, h, m, s, ms), got 'soon'",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, expected) for _, text, expected in BROKEN_FILES],
    ids=[case for case, _, _ in BROKEN_FILES],
)
def test_broken_rule_file_reports_every_error(text: str, expected: str) -> None:
    with pytest.raises(RuleFileError) as caught:
        parse_rules(text, "rules.yaml")
    assert str(caught.value) == expected
    assert caught.value.source == "rules.yaml"
    assert [str(error) for error in caught.value.errors] == expected.split("\n")


def test_rule_error_carries_its_location() -> None:
    text = (
        "rules:\n  - {"
        + BASE
        + "}\n  - {name: CpuHot, metric: m, op: '>', threshold: high, summary: s}\n"
    )
    with pytest.raises(RuleFileError) as caught:
        parse_rules(text, "rules.yaml")
    (error,) = caught.value.errors
    assert (error.source, error.rule, error.index, error.field) == (
        "rules.yaml",
        "CpuHot",
        2,
        "threshold",
    )
    assert error.message == "expected a number, got 'high'"


def test_load_rules_reads_a_file_and_names_it(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(one_rule(BASE), encoding="utf-8")
    assert load_rules(path).threshold_rules[0].name == "R"
    assert load_rules(str(path)).source == str(path)

    path.write_text(one_rule("name: R, metric: m, op: '>', threshold: high, summary: s"))
    with pytest.raises(RuleFileError, match=r"rules\.yaml: rule #1 'R': field 'threshold'"):
        load_rules(path)


def test_load_rules_unreadable_file_is_a_rule_file_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(RuleFileError) as caught:
        load_rules(missing)
    assert str(caught.value) == f"{os.fspath(missing)}: cannot read file: No such file or directory"

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00rules")
    with pytest.raises(RuleFileError, match="cannot read file"):
        load_rules(binary)


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        (Matcher("mountpoint", "eq", "/"), {"mountpoint": "/"}, True),
        (Matcher("mountpoint", "eq", "/"), {"mountpoint": "/home"}, False),
        (Matcher("cpu", "eq", ""), {}, True),  # "" selects an absent label
        (Matcher("cpu", "eq", ""), {"cpu": "0"}, False),
        (Matcher("site", "ne", "lab"), {"site": "hq"}, True),
        (Matcher("site", "ne", "lab"), {"site": "lab"}, False),
        (Matcher("site", "ne", "lab"), {}, True),
        (Matcher("device", "regex", "sd."), {"device": "sda"}, True),
        (Matcher("device", "regex", "sd."), {"device": "sda1"}, False),  # anchored at the end
        (Matcher("device", "regex", "da"), {"device": "sda"}, False),  # anchored at the start
        (Matcher("device", "regex", ".*"), {}, True),
        (Matcher("fstype", "not_regex", "tmpfs|overlay"), {"fstype": "ext4"}, True),
        (Matcher("fstype", "not_regex", "tmpfs|overlay"), {"fstype": "overlay"}, False),
        (Matcher("fstype", "not_regex", "tmpfs|overlay"), {"fstype": "overlayfs"}, True),
    ],
)
def test_matcher_semantics_follow_prometheus(
    matcher: Matcher, labels: dict[str, str], expected: bool
) -> None:
    assert matcher.matches(labels) is expected


OVERRIDE_RULE = one_rule(
    BASE + ", clear: {threshold: 0.85}, for: 5m, overrides: {acme: {threshold: 0.95}, "
    "beta: {enabled: false}, gamma: {for: 0, clear: {threshold: 0.5}}, delta: {threshold: 0.92}}"
)
NO_HYSTERESIS_RULE = one_rule(BASE + ", overrides: {acme: {threshold: 0.95}}")


@pytest.mark.parametrize(
    ("text", "customer", "expected"),
    [
        (OVERRIDE_RULE, "other", (0.9, 0.85, 300.0)),
        (OVERRIDE_RULE, "acme", (0.95, 0.85, 300.0)),
        (OVERRIDE_RULE, "beta", None),
        (OVERRIDE_RULE, "gamma", (0.9, 0.5, 0.0)),
        (OVERRIDE_RULE, "delta", (0.92, 0.85, 300.0)),
        # Without hysteresis the clear threshold moves with the overridden threshold.
        (NO_HYSTERESIS_RULE, "acme", (0.95, 0.95, 0.0)),
        (NO_HYSTERESIS_RULE, "other", (0.9, 0.9, 0.0)),
    ],
)
def test_for_customer_applies_overrides(
    text: str, customer: str, expected: tuple[float, float, float] | None
) -> None:
    rule = parse_rules(text, "r.yaml").threshold_rules[0]
    effective = rule.for_customer(customer)
    if expected is None:
        assert effective is None
        return
    assert effective is not None
    assert (effective.threshold, effective.clear_threshold, effective.for_seconds) == expected
    assert (effective.name, effective.metric, effective.summary) == (rule.name, "m", "s")


@pytest.mark.parametrize(
    ("summary", "context", "expected"),
    [
        (
            "{host}: {mountpoint} is {value:.0%} full",
            {"host": "pc", "mountpoint": "C:\\", "value": 0.934},
            "pc: C:\\ is 93% full",
        ),
        ("{host} {mountpoint}", {"host": "pc"}, "pc {mountpoint}"),  # missing key stays
        ("{host} at {value:.1f}", {"host": "pc"}, "pc at {value:.1f}"),
        ("{device.name}", {}, "{device.name}"),
        # A spec that cannot apply to the value falls back to a plain line.
        ("{host:.0%}", {"host": "pc", "value": 0.5}, "R: m = 0.5"),
        ("{value:d}", {"value": 0.5}, "R: m = 0.5"),
    ],
)
def test_render_summary(summary: str, context: dict[str, object], expected: str) -> None:
    rule = parse_rules(one_rule(BASE), "r.yaml").threshold_rules[0]
    assert dataclasses.replace(rule, summary=summary).render_summary(context) == expected


def test_default_rules_load_and_every_summary_renders() -> None:
    rules = default_rules()
    assert isinstance(rules, RuleSet)
    names = [rule.name for rule in rules.rules]
    assert names == [
        "FilesystemAlmostFull",
        "FilesystemFillingUp",
        "CpuSaturated",
        "MemoryExhausted",
        "SwapHeavy",
        "UnexpectedReboot",
        "AgentOffline",
    ]
    assert rules.offline_rule.builtin == "offline"
    context = {
        "host": "pc-01",
        "customer": "acme",
        "agent_id": "agent-1",
        "site": "hq",
        "mountpoint": "C:\\",
        "fstype": "NTFS",
        "device": "C:",
        "value": 0.97,
        "threshold": 0.9,
    }
    for rule in rules.rules:
        rendered = rule.render_summary({**context, "rule": rule.name, "metric": rule.metric})
        assert "{" not in rendered, rule.name
        assert rendered != f"{rule.name}: {rule.metric} = 0.97", rule.name  # not the fallback
        assert rule.runbook.strip(), rule.name
        assert rule.severity in ("info", "warning", "critical")
    almost_full = rules.threshold_rules[0]
    assert almost_full.render_summary(context) == "pc-01: C:\\ is 97% full"


def test_default_pack_values() -> None:
    by_name = {rule.name: rule for rule in default_rules().rules}
    full = by_name["FilesystemAlmostFull"]
    assert (full.op, full.threshold, full.for_seconds) == (">", 0.9, 300.0)
    assert (full.clear_threshold, full.clear_for_seconds) == (0.85, 120.0)
    filling = by_name["FilesystemFillingUp"]
    assert filling.window == Window("predict_linear", 3600.0, 14400.0)
    assert (filling.metric, filling.op, filling.threshold, filling.for_seconds) == (
        "filesystem_avail_bytes",
        "<",
        0.0,
        600.0,
    )
    cpu = by_name["CpuSaturated"]
    # the whole machine has its own name: no matcher needed to leave the cores out
    assert (cpu.metric, cpu.matchers) == ("cpu_usage_ratio", ())
    assert (cpu.window, cpu.threshold, cpu.for_seconds) == (Window("avg", 300.0), 0.95, 300.0)
    memory = by_name["MemoryExhausted"]
    assert (memory.threshold, memory.clear_threshold, memory.for_seconds) == (0.95, 0.9, 300.0)
    swap = by_name["SwapHeavy"]
    assert (swap.metric, swap.threshold, swap.for_seconds) == ("swap_used_ratio", 0.8, 900.0)
    reboot = by_name["UnexpectedReboot"]
    assert (reboot.window, reboot.op, reboot.threshold, reboot.severity) == (
        Window("resets", 1800.0),
        ">",
        0.0,
        "info",
    )
    assert by_name["AgentOffline"].severity == "critical"
