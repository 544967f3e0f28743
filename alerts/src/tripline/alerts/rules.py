"""The rule file format: parsing, validation and loading of rule files (see DESIGN.md).

Loading validates everything up front and reports every problem of a file at once, each
naming the file, the rule (name and 1-based index) and the field. The rule model itself
lives in alerts.model and is re-exported here.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.resources
import math
import os
import re
import string
import types
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from tripline.alerts.model import (
    AGGS,
    DEFAULT_OFFLINE_RULE,
    OFFLINE,
    OPS,
    SEVERITIES,
    TEMPLATE_ERRORS,
    TIERS,
    Grouping,
    Matcher,
    MatcherKind,
    Override,
    Rule,
    RuleSet,
    Window,
    format_template,
    label_regex,
)
from tripline.common.durations import parse_duration
from tripline.common.labels import Labels

__all__ = [
    "Labels",
    "Matcher",
    "Override",
    "Rule",
    "RuleError",
    "RuleFileError",
    "RuleSet",
    "Window",
    "default_rules",
    "load_rules",
    "parse_duration",
    "parse_rules",
]


class RuleError(ValueError):
    """One problem in a rule file, located by file, rule (name and 1-based index) and field."""

    def __init__(
        self,
        source: str,
        message: str,
        *,
        rule: str | None = None,
        index: int | None = None,
        field: str | None = None,
    ) -> None:
        self.source = source
        self.rule = rule
        self.index = index
        self.field = field
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        parts = [self.source]
        if self.index is not None:
            parts.append(f"rule #{self.index}" + (f" {self.rule!r}" if self.rule else ""))
        if self.field is not None:
            parts.append(f"field {self.field!r}")
        return ": ".join([*parts, self.message])


class RuleFileError(ValueError):
    """Every problem found in one rule file; str() lists them one per line."""

    def __init__(self, source: str, errors: list[RuleError]) -> None:
        self.source = source
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


def parse_rules(text: str, source: str) -> RuleSet:
    """Parse and validate a rule file's text; raises RuleFileError listing every problem.

    A file without a `builtin: offline` rule gets the default offline rule.
    """
    try:
        document = yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = ", ".join(p for p in (exc.context, exc.problem) if p)
        raise RuleFileError(source, [RuleError(source, f"YAML error{where}: {problem}")]) from exc
    except yaml.YAMLError as exc:
        raise RuleFileError(source, [RuleError(source, f"YAML error: {exc}")]) from exc
    errors = _Errors(source)
    rules = _document(errors, document)
    if errors.found:
        raise RuleFileError(source, errors.found)
    if not any(rule.builtin == OFFLINE for rule in rules):
        rules.append(DEFAULT_OFFLINE_RULE)
    return RuleSet(rules=tuple(rules), source=source)


def load_rules(path: str | os.PathLike[str]) -> RuleSet:
    """Read and parse a rule file; an unreadable file is a RuleFileError too."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise RuleFileError(source, [RuleError(source, f"cannot read file: {reason}")]) from exc
    return parse_rules(text, source)


@functools.cache
def default_rules() -> RuleSet:
    """The rule pack shipped with Tripline (alerts/default_rules.yaml)."""
    text = (
        importlib.resources.files("tripline.alerts")
        .joinpath("default_rules.yaml")
        .read_text("utf-8")
    )
    return parse_rules(text, "alerts/default_rules.yaml")


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys; plain YAML silently lets the last one win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Validation: each reader records its own errors and returns None on failure, so one pass
# collects every problem in the file.

_RULE_FIELDS = (
    "name", "metric", "match", "op", "threshold", "for", "clear", "window",
    "severity", "tier", "summary", "runbook", "overrides", "group",
)  # fmt: skip
_REQUIRED = ("name", "metric", "op", "threshold", "summary")
_BUILTIN_FIELDS = ("name", "builtin", "severity", "tier", "summary", "runbook")
_OVERRIDE_FIELDS = ("threshold", "clear", "for", "enabled")
_GROUP_FIELDS = ("by", "min_agents", "within", "min_ratio")
_GROUP_BY = ("customer", "site")
# Bounds of a rule's `group`: fewer than 2 PCs is no group; a window past an hour would
# lump unrelated problems together (and keep every firing alert in memory that long).
_GROUP_MAX_AGENTS = 100_000
_GROUP_MAX_WITHIN = 3600.0
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_MATCH_KINDS: Mapping[str, MatcherKind] = {"not": "ne", "regex": "regex", "not_regex": "not_regex"}
_SAMPLE_CONTEXT = {"host": "pc-01", "customer": "acme", "agent_id": "a-1", "site": "hq"}


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class _Errors:
    source: str
    found: list[RuleError] = dataclasses.field(default_factory=list)
    rule: str | None = None
    index: int | None = None

    def add(self, field: str | None, message: str) -> None:
        self.found.append(
            RuleError(self.source, message, rule=self.rule, index=self.index, field=field)
        )

    def mapping(self, field: str, raw: object, allowed: tuple[str, ...]) -> dict[Any, Any] | None:
        """`raw` if it is a mapping; unknown keys are reported (typos must not pass silently)."""
        if not isinstance(raw, dict):
            self.add(field or None, f"expected a mapping ({', '.join(allowed)}), got {_show(raw)}")
            return None
        for key in raw:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
                self.add(f"{field}.{key}" if field else str(key), f"unknown field ({hint})")
        return raw

    def number(self, field: str, raw: object) -> float | None:
        value = math.nan
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw)
            except ValueError:
                hint = "; write ratios as 0-1, e.g. 0.9" if raw.strip().endswith("%") else ""
                self.add(field, f"expected a number, got {_show(raw)}{hint}")
                return None
        if not math.isfinite(value):
            self.add(field, f"expected a number, got {_show(raw)}")
            return None
        return value

    def duration(self, field: str, raw: object) -> float | None:
        try:
            return parse_duration(raw)  # type: ignore[arg-type]  # it checks the type itself
        except ValueError as exc:
            self.add(field, str(exc))
            return None

    def choice(self, field: str, raw: object, choices: tuple[Any, ...]) -> Any:
        if isinstance(raw, bool) or raw not in choices:
            # An unquoted `op: >` is YAML's folded-text marker and arrives as "".
            hint = ' (quote it: op: ">")' if field == "op" and raw == "" else ""
            listed = ", ".join(map(str, choices))
            self.add(field, f"expected one of {listed}, got {_show(raw)}{hint}")
            return None
        return raw

    def text(self, field: str, raw: object, allow_empty: bool = False) -> str | None:
        if not isinstance(raw, str) or not (allow_empty or raw.strip()):
            # YAML 1.1 reads unquoted yes/no/on/off (any case) as booleans.
            hint = "; quote it" if isinstance(raw, (bool, int, float)) else ""
            expected = "a string" if allow_empty else "a non-empty string"
            self.add(field, f"expected {expected}, got {_show(raw)}{hint}")
            return None
        return raw


def _document(errors: _Errors, document: object) -> list[Rule]:
    if not isinstance(document, dict):
        got = "an empty file" if document is None else _show(document)
        errors.add(None, f"expected a mapping with a 'rules' list, got {got}")
        return []
    errors.mapping("", document, ("rules",))
    raw_rules = document.get("rules")
    if not isinstance(raw_rules, list):
        errors.add("rules", f"expected a list of rules, got {_show(raw_rules)}")
        return []
    rules: list[Rule] = []
    first_index: dict[str, int] = {}
    builtin_index: int | None = None
    for index, raw in enumerate(raw_rules, start=1):
        errors.rule, errors.index = None, index
        if not isinstance(raw, dict):
            errors.add(None, f"expected a mapping, got {_show(raw)}")
            continue
        errors.rule = errors.text("name", raw.get("name")) if "name" in raw else None
        if errors.rule in first_index:
            errors.add("name", f"duplicate rule name (rule #{first_index[errors.rule]} has it too)")
        elif errors.rule is not None:
            first_index[errors.rule] = index
        if "builtin" in raw and builtin_index is not None:
            errors.add("builtin", f"only one builtin rule per file (rule #{builtin_index} is one)")
        elif "builtin" in raw:
            builtin_index = index
        # Builders fill invalid fields with placeholders; a rule with any error is dropped.
        rules.append(
            _builtin_rule(errors, raw) if "builtin" in raw else _threshold_rule(errors, raw)
        )
    if errors.found:
        return []
    return rules


def _builtin_rule(errors: _Errors, raw: dict[Any, Any]) -> Rule:
    errors.mapping("", raw, _BUILTIN_FIELDS)
    if "name" not in raw:
        errors.add("name", "missing required field")
    base = DEFAULT_OFFLINE_RULE
    errors.choice("builtin", raw["builtin"], (OFFLINE,))
    return dataclasses.replace(
        base,
        name=errors.rule or base.name,
        severity=errors.choice("severity", raw.get("severity", base.severity), SEVERITIES),
        tier=errors.choice("tier", raw.get("tier", base.tier), TIERS),
        summary=_summary(errors, raw.get("summary", base.summary), base),
        runbook=errors.text("runbook", raw.get("runbook", base.runbook), allow_empty=True) or "",
    )


def _threshold_rule(errors: _Errors, raw: dict[Any, Any]) -> Rule:
    errors.mapping("", raw, _RULE_FIELDS)
    for required in _REQUIRED:
        if required not in raw:
            errors.add(required, "missing required field")
    metric = errors.text("metric", raw.get("metric")) if "metric" in raw else None
    if metric is not None and not _METRIC_NAME.fullmatch(metric):
        errors.add("metric", f"{metric!r} is not a metric name (letters, digits, '_', ':')")
    op = errors.choice("op", raw["op"], tuple(OPS)) if "op" in raw else None
    threshold = errors.number("threshold", raw["threshold"]) if "threshold" in raw else None
    clear = errors.mapping("clear", raw.get("clear", {}), ("threshold", "for")) or {}
    clear_threshold = (
        errors.number("clear.threshold", clear["threshold"]) if "threshold" in clear else threshold
    )
    rule = Rule(
        name=errors.rule or "",
        metric=metric or "",
        matchers=_matchers(errors, raw.get("match", {})),
        op=op or ">",
        threshold=threshold or 0.0,
        for_seconds=errors.duration("for", raw.get("for", 0)) or 0.0,
        clear_threshold=clear_threshold or 0.0,
        clear_for_seconds=errors.duration("clear.for", clear.get("for", 0)) or 0.0,
        window=_window(errors, raw["window"]) if "window" in raw else None,
        severity=errors.choice("severity", raw.get("severity", "warning"), SEVERITIES),
        tier=errors.choice("tier", raw.get("tier", 1), TIERS),
        summary="",
        runbook=errors.text("runbook", raw.get("runbook", ""), allow_empty=True) or "",
        overrides=types.MappingProxyType(_overrides(errors, raw.get("overrides", {}))),
        group=_group(errors, raw["group"]) if "group" in raw else None,
    )
    if "summary" in raw:
        rule = dataclasses.replace(rule, summary=_summary(errors, raw["summary"], rule))
    if op is None or threshold is None or clear_threshold is None:
        return rule  # already reported; the side of the clear threshold cannot be judged
    if problem := _clear_side(rule):
        errors.add("clear.threshold", problem)
        return rule
    for customer, override in rule.overrides.items():
        effective = rule.for_customer(customer)
        if effective is not None and (problem := _clear_side(effective)):
            which = "clear" if override.clear_threshold is not None else "threshold"
            errors.add(f"overrides.{customer}.{which}", f"with this override, {problem}")
    return rule


def _clear_side(rule: Rule) -> str | None:
    op, threshold, clear = rule.op, rule.threshold, rule.clear_threshold
    if op in (">", ">="):
        ok, relation = clear <= threshold, "<="
    elif op in ("<", "<="):
        ok, relation = clear >= threshold, ">="
    else:
        ok, relation = clear == threshold, "equal to"
    if ok:
        return None
    return f"clear threshold {clear:g} must be {relation} the threshold {threshold:g} for op {op!r}"


def _summary(errors: _Errors, raw: object, rule: Rule) -> str:
    summary = errors.text("summary", raw)
    if summary is None:
        return ""
    try:
        list(string.Formatter().parse(summary))
        # A trial render catches what parse() lets through: positional "{}", a bad
        # conversion, a format spec that cannot apply to the value ("{host:.0%}").
        sample = {"rule": rule.name, "metric": rule.metric, "value": 0.5, "threshold": 0.5}
        format_template(summary, _SAMPLE_CONTEXT | sample)
    except TEMPLATE_ERRORS as exc:
        errors.add("summary", f"broken template {summary!r}: {exc}")
    return summary


def _matchers(errors: _Errors, raw: object) -> tuple[Matcher, ...]:
    if not isinstance(raw, dict):
        errors.add("match", f"expected a mapping of label: value, got {_show(raw)}")
        return ()
    matchers: list[Matcher] = []
    for label, spec in raw.items():
        field = f"match.{label}"
        if not isinstance(label, str) or not _LABEL_NAME.fullmatch(label):
            errors.add(field, "not a label name (letters, digits, '_')")
        elif isinstance(spec, (str, int)) and not isinstance(spec, bool):
            matchers.append(Matcher(label, "eq", str(spec)))
        elif not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in _MATCH_KINDS):
            kinds = "a string, {not: ...}, {regex: ...} or {not_regex: ...}"
            errors.add(field, f"expected {kinds}, got {_show(spec)}")
        else:
            ((key, value),) = spec.items()
            if errors.text(f"{field}.{key}", value, allow_empty=True) is None:
                continue
            try:
                if key != "not":
                    label_regex(value)
            except re.error as exc:
                errors.add(f"{field}.{key}", f"bad regex {value!r}: {exc}")
                continue
            matchers.append(Matcher(label, _MATCH_KINDS[key], value))
    return tuple(matchers)


def _window(errors: _Errors, raw: object) -> Window | None:
    window = errors.mapping("window", raw, ("agg", "over", "ahead"))
    if window is None:
        return None
    agg = errors.choice("window.agg", window.get("agg"), AGGS)
    over = errors.duration("window.over", window.get("over"))
    if over == 0:
        errors.add("window.over", "must be longer than 0s")
    ahead: float | None = 0.0
    if agg == "predict_linear" and "ahead" not in window:
        errors.add("window.ahead", "missing required field (predict_linear needs it)")
        ahead = None
    elif agg == "predict_linear":
        ahead = errors.duration("window.ahead", window["ahead"])
    elif "ahead" in window:
        errors.add("window.ahead", "only used with agg 'predict_linear'")
    if agg is None or not over or ahead is None:
        return None
    return Window(agg=agg, over=over, ahead=ahead)


def _overrides(errors: _Errors, raw: object) -> dict[str, Override]:
    if not isinstance(raw, dict):
        errors.add("overrides", f"expected a mapping of customer: {{...}}, got {_show(raw)}")
        return {}
    overrides: dict[str, Override] = {}
    for customer, spec in raw.items():
        # YAML reads an unquoted yes/no/on/off as a bool, which is never a customer id.
        if isinstance(customer, bool) or not isinstance(customer, (str, int)):
            errors.add("overrides", f"customer ids are strings, got {_show(customer)}; quote it")
            continue
        field = f"overrides.{customer}"
        fields = errors.mapping(field, spec, _OVERRIDE_FIELDS)
        if fields is None:
            continue
        clear = fields.get("clear")
        if isinstance(clear, dict):  # `clear: {threshold: x}` as on the rule, or just `clear: x`
            clear = (errors.mapping(f"{field}.clear", clear, ("threshold",)) or {}).get("threshold")
        enabled = fields.get("enabled", True)
        if not isinstance(enabled, bool):
            errors.add(f"{field}.enabled", f"expected true or false, got {_show(enabled)}")
        overrides[str(customer)] = Override(
            threshold=errors.number(f"{field}.threshold", fields["threshold"])
            if "threshold" in fields
            else None,
            clear_threshold=errors.number(f"{field}.clear", clear) if clear is not None else None,
            for_seconds=errors.duration(f"{field}.for", fields["for"]) if "for" in fields else None,
            enabled=enabled is not False,
        )
    return overrides


def _group(errors: _Errors, raw: object) -> Grouping | None:
    """`group: {by: customer|site, min_agents: N, within: 5m, min_ratio: 0-1}`."""
    spec = errors.mapping("group", raw, _GROUP_FIELDS)
    if spec is None:
        return None
    ok = True
    for required in ("by", "min_agents", "within"):
        if required not in spec:
            errors.add(f"group.{required}", "missing required field")
            ok = False
    by = errors.choice("group.by", spec["by"], _GROUP_BY) if "by" in spec else None
    min_agents = spec.get("min_agents")
    if "min_agents" in spec and (
        isinstance(min_agents, bool)
        or not isinstance(min_agents, int)
        or not 2 <= min_agents <= _GROUP_MAX_AGENTS
    ):
        errors.add(
            "group.min_agents",
            f"expected a whole number of PCs from 2 to {_GROUP_MAX_AGENTS}, "
            f"got {_show(min_agents)}",
        )
        ok = False
    within = errors.duration("group.within", spec["within"]) if "within" in spec else None
    if within is not None and not 0 < within <= _GROUP_MAX_WITHIN:
        errors.add("group.within", f"must be longer than 0s and at most 1h, got {within:g}s")
        ok = False
    min_ratio = errors.number("group.min_ratio", spec.get("min_ratio", 0.0))
    if min_ratio is not None and not 0.0 <= min_ratio <= 1.0:
        errors.add("group.min_ratio", f"expected a share of the PCs from 0 to 1, got {min_ratio:g}")
        ok = False
    if not ok or by is None or within is None or min_ratio is None:
        return None
    assert isinstance(min_agents, int)
    return Grouping(by=by, min_agents=min_agents, within=within, min_ratio=min_ratio)
