"""The metric catalogue is the one home of every core name: docs and probes follow it."""

from __future__ import annotations

import re
from pathlib import Path

from tripline.common import catalogue

METRICS_MD = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"


def test_the_docs_table_is_the_catalogue() -> None:
    text = METRICS_MD.read_text(encoding="utf-8")
    found = re.search(
        r"<!-- generated from [^>]*-->\n(.*?)<!-- end of generated table -->", text, re.S
    )
    assert found, "docs/metrics.md lost its generated table markers"
    assert found.group(1) == catalogue.markdown_table(), (
        "docs/metrics.md differs from the catalogue: paste the output of "
        "`python -m tripline.common.catalogue` between the markers"
    )


def test_one_name_carries_one_label_set() -> None:
    assert catalogue.BY_NAME["cpu_usage_ratio"].labels == frozenset()
    assert catalogue.BY_NAME["cpu_core_usage_ratio"].labels == {"cpu"}
    assert catalogue.BY_NAME["temperature_celsius"].labels == {"chip", "sensor"}


def test_older_shapes_are_modernized() -> None:
    assert catalogue.modernize("cpu_usage_ratio", (("cpu", "3"),)) == (
        "cpu_core_usage_ratio",
        (("cpu", "3"),),
    )
    assert catalogue.modernize("cpu_usage_ratio", ()) == ("cpu_usage_ratio", ())
    assert catalogue.modernize(
        "temperature_celsius", (("label", "Core 0"), ("sensor", "coretemp"))
    ) == ("temperature_celsius", (("chip", "coretemp"), ("sensor", "Core 0")))
    assert catalogue.modernize(
        "temperature_celsius", (("chip", "coretemp"), ("sensor", "Core 0"))
    ) == ("temperature_celsius", (("chip", "coretemp"), ("sensor", "Core 0")))
