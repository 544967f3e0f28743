"""One series' name and labels checked at the edge, named sample or series-table entry alike.

Names are checked with full-match rules (``re.fullmatch``: ``$`` would let a trailing
newline through) against the Prometheus data model and promtool's lint; label names the
collector or Prometheus set on every series (:data:`catalogue.RESERVED_LABELS`,
``exported_*``, ``__*``) are refused, so relabelling can never yield two labels of one
name; a core family (:mod:`tripline.common.catalogue`) accepts only its catalogue labels;
label values are escaped and refused when longer than :data:`MAX_LABEL_VALUE`.
"""

from __future__ import annotations

from collections.abc import Mapping

from tripline.collector.interning import series_key
from tripline.collector.wirecheck import _CONTROL, _ESCAPES, InvalidMessage, _shown
from tripline.common import catalogue, names
from tripline.common.labels import Labels

# Name rules and bounds live in tripline.common.names: the agent checks what its
# textfile collector forwards against the same rules, so the edge never refuses a
# report for a PC script's bad line.
METRIC_NAME, LABEL_NAME = names.METRIC_NAME, names.LABEL_NAME
_lint_problem = names.lint_problem
MAX_LABELS, MAX_LABEL_VALUE, MAX_NAME = names.MAX_LABELS, names.MAX_LABEL_VALUE, names.MAX_NAME


def check_series(
    name: str,
    raw_labels: Mapping[str, str],
    where: str,
    index: int,
    seq: int,
    kind: str = "sample",
) -> tuple[str, Labels]:
    """One series' name and labels validated at the edge: the name's Prometheus and
    promtool rules, label names (reserved ones refused), label values escaped and
    bounded, legacy names modernised, a core family's labels only. Returns the
    collector's (name, sorted labels); raises :class:`InvalidMessage`."""
    if name not in _GOOD_METRICS:
        _check_metric_name(name, where, index, seq, kind)
    name = catalogue.LEGACY_NAMES.get(name, name)
    labels: Labels = ()
    if raw_labels:
        items = sorted(raw_labels.items())
        if len(items) > MAX_LABELS:
            raise InvalidMessage(
                f"{where}, {kind} #{index} ({name}): {len(items)} labels, more than {MAX_LABELS}",
                seq,
                "size",
            )
        for position, (label, label_value) in enumerate(items):
            if label not in _GOOD_LABELS:
                _check_label_name(label, f"{where}, {kind} #{index} ({name})", seq)
            if _CONTROL.search(label_value) is not None:
                label_value = label_value.translate(_ESCAPES)
                items[position] = (label, label_value)
            if len(label_value) > MAX_LABEL_VALUE:
                raise InvalidMessage(
                    f"{where}, {kind} #{index} ({name}): label {label} is longer than "
                    f"{MAX_LABEL_VALUE} characters",
                    seq,
                    "label_value",
                )
        labels = tuple(items)
    if name in catalogue.LEGACY_SHAPES:
        name, labels = catalogue.modernize(name, labels)
    family = catalogue.BY_NAME.get(name)
    if family is not None and labels and not family.labels.issuperset(k for k, _ in labels):
        extra = sorted({k for k, _ in labels} - family.labels)
        raise InvalidMessage(
            f"{where}, {kind} #{index} ({name}): label(s) {', '.join(extra)} not allowed "
            f"on the core metric {name} (allowed: {', '.join(sorted(family.labels)) or 'none'}"
            "); send other dimensions under a metric name of your own",
            seq,
            "core_labels",
        )
    return series_key(name, labels)


# Names already seen valid; bounded so a hostile agent cannot grow them without limit.
_GOOD_METRICS: set[str] = set()
_GOOD_LABELS: set[str] = set()
_KNOWN_NAMES_MAX = 10_000


def _check_metric_name(name: str, where: str, index: int, seq: int, kind: str = "sample") -> None:
    if len(name) > MAX_NAME or METRIC_NAME.fullmatch(name) is None:
        raise InvalidMessage(
            f"{where}, {kind} #{index}: metric name {_shown(name)} is not a valid Prometheus "
            f"name ([a-z_][a-z0-9_]*, at most {MAX_NAME} characters)",
            seq,
            "metric_name",
        )
    problem = None if name in catalogue.BY_NAME else _lint_problem(name)
    if problem is not None:
        raise InvalidMessage(
            f"{where}, {kind} #{index}: metric name {name!r} would fail promtool check "
            f"metrics: {problem}",
            seq,
            "metric_name",
        )
    if len(_GOOD_METRICS) < _KNOWN_NAMES_MAX:
        _GOOD_METRICS.add(name)


def _check_label_name(label: str, where: str, seq: int) -> None:
    if len(label) > MAX_NAME or LABEL_NAME.fullmatch(label) is None:
        raise InvalidMessage(
            f"{where}: label name {_shown(label)} is not a valid Prometheus label name "
            f"([a-z_][a-z0-9_]*, at most {MAX_NAME} characters)",
            seq,
            "label_name",
        )
    if label in catalogue.RESERVED_LABELS or label.startswith(catalogue.RESERVED_LABEL_PREFIXES):
        raise InvalidMessage(
            f"{where}: label name {label!r} is reserved (the collector and Prometheus set "
            f"{', '.join(sorted(catalogue.RESERVED_LABELS))}, exported_* and __* on every "
            "series); rename it in the agent",
            seq,
            "label_reserved",
        )
    if len(_GOOD_LABELS) < _KNOWN_NAMES_MAX:
        _GOOD_LABELS.add(label)
