"""Metric and label name rules both sides apply: the collector at its edge (a report
breaking them is refused whole) and the agent before it forwards anything it did not
make itself (textfile samples), so one bad line in a PC's script never costs a report.

Imports only the standard library and the catalogue.
"""

from __future__ import annotations

import re

from tripline.common import catalogue

MAX_LABELS = 16
MAX_LABEL_VALUE = 1024
MAX_NAME = 200

# The Prometheus data model, matched whole (re.fullmatch) and ASCII only, narrowed to
# what `promtool check metrics` accepts on every page: snake_case (promtool refuses
# camelCase, and an upper-case word reads as an abbreviated unit), no colons (reserved
# for recording rules). See also lint_problem.
METRIC_NAME = re.compile(r"[a-z_][a-z0-9_]*")
LABEL_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# Name words promtool's linter refuses in any family (client_golang promlint): abbreviated
# units, metric types, and units that are not base units (milliseconds, kilobytes...).
_ABBREVIATED_UNITS = frozenset(
    {"s", "ms", "us", "ns", "sec", "b", "kb", "mb", "gb", "tb", "pb", "m", "h", "d"}
)
_TYPE_WORDS = frozenset({"counter", "gauge", "summary", "histogram"})
_BASE_UNITS = frozenset(
    {"amperes", "bytes", "celsius", "grams", "joules", "kelvin", "meters", "metres", "seconds"}
    | {"volts"}
)
_OTHER_UNITS = frozenset(
    {"minutes", "hours", "days", "weeks", "kelvins", "fahrenheit", "rankine", "inches"}
    | {"yards", "miles", "bits", "calories", "pounds", "ounces"}
)
_UNIT_PREFIXES = (
    "pico", "nano", "micro", "milli", "centi", "deci", "deca", "hecto", "kilo", "kibi",
    "mega", "mibi", "giga", "gibi", "tera", "tebi", "peta", "pebi",
)  # fmt: skip


def lint_problem(name: str) -> str | None:
    """Why promtool would refuse ``name`` as (part of) a family name, or None."""
    for word in name.split("_"):
        if word in _ABBREVIATED_UNITS:
            return f"the word {word!r} reads as an abbreviated unit; spell out a base unit"
        if word in _TYPE_WORDS:
            return f"the word {word!r} is a metric type"
        if word in _OTHER_UNITS:
            return f"{word!r} is not a base unit (seconds, bytes, meters, ...)"
        if word.startswith(_UNIT_PREFIXES):
            unit = next(word[len(p) :] for p in _UNIT_PREFIXES if word.startswith(p))
            if unit in _BASE_UNITS or unit in _OTHER_UNITS:
                return f"{word!r} is not a base unit (seconds, bytes, meters, ...)"
    return None


def metric_name_problem(name: str) -> str | None:
    """Why the collector would refuse ``name`` as a sample name, or None."""
    if len(name) > MAX_NAME or METRIC_NAME.fullmatch(name) is None:
        return f"not a valid Prometheus name ([a-z_][a-z0-9_]*, at most {MAX_NAME} characters)"
    return None if name in catalogue.BY_NAME else lint_problem(name)


def label_name_problem(label: str) -> str | None:
    """Why the collector would refuse ``label`` as a label name, or None."""
    if len(label) > MAX_NAME or LABEL_NAME.fullmatch(label) is None:
        return (
            f"not a valid Prometheus label name ([a-z_][a-z0-9_]*, at most {MAX_NAME} characters)"
        )
    if label in catalogue.RESERVED_LABELS or label.startswith(catalogue.RESERVED_LABEL_PREFIXES):
        return "reserved (the collector and Prometheus set it on every series)"
    return None
