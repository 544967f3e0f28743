"""The series table alone: the agent's interner and the collector's table agree, ids are
per stream, and every defect is refused without touching the table."""

from __future__ import annotations

import math

import pytest

from tripline.agent.interning import SeriesInterner
from tripline.collector.convert import decode_report
from tripline.collector.seriestable import SeriesTable
from tripline.collector.wirecheck import InvalidMessage
from tripline.v1 import tripline_pb2 as pb

T = 1_700_000_000.0


def named(seq: int, *samples: tuple[str, dict[str, str], float]) -> pb.Report:
    report = pb.Report(instance_id="i", seq=seq, collected_at_seconds=T + seq)
    for name, labels, value in samples:
        report.samples.add(name=name, labels=labels, value=value)
    return report


def decode(report: pb.Report, table: SeriesTable | None) -> list[tuple[object, ...]]:
    out = decode_report(report, instance_id="i", max_samples=100, table=table)
    return sorted(out.samples)


def test_interned_reports_decode_to_the_same_samples_as_named_ones() -> None:
    fs = {"mountpoint": "/", "fstype": "ext4", "device": "sda1"}
    reports = [
        named(1, ("cpu_usage_ratio", {}, 0.5), ("filesystem_used_ratio", fs, 0.7)),
        named(2, ("filesystem_used_ratio", fs, 0.8), ("cpu_usage_ratio", {}, 0.4)),
        named(3, ("cpu_usage_ratio", {}, 0.3), ("my_metric", {"k": "v\x1b"}, 1.0)),
    ]
    expected = [decode(pb.Report.FromString(r.SerializeToString()), None) for r in reports]
    interner, table = SeriesInterner(limit=100), SeriesTable(limit=100)
    defined = []
    for report, want in zip(reports, expected, strict=True):
        defined.append(interner.intern(report))
        assert not report.samples
        assert decode(report, table) == want
    # each series named once on the stream, then by id only
    assert defined == [2, 0, 1]
    assert len(table) == 3
    assert table[2] == ("my_metric", (("k", "v\\x1b"),))  # escaped once, at definition


def test_series_past_the_limit_stay_named() -> None:
    report = named(
        1, ("alpha_metric", {}, 1.0), ("beta_metric", {}, 2.0), ("gamma_metric", {}, 3.0)
    )
    assert SeriesInterner(limit=2).intern(report) == 2
    assert [s.name for s in report.samples] == ["gamma_metric"]
    assert list(report.series_ids) == [0, 1]
    assert decode(report, SeriesTable(limit=2)) == [
        ("alpha_metric", (), 1.0),
        ("beta_metric", (), 2.0),
        ("gamma_metric", (), 3.0),
    ]


def table_report(seq: int, defs: list[tuple[int, str]], ids: list[int], values: list[float]):
    report = named(seq)
    for series_id, name in defs:
        report.series_defs.add(id=series_id, name=name)
    report.series_ids.extend(ids)
    report.series_values.extend(values)
    return report


@pytest.mark.parametrize(
    ("defs", "ids", "values", "reason"),
    [
        ([], [1], [1.0], "series_id"),
        ([(0, "again_metric")], [0], [1.0], "series_redefined"),
        ([(2, "gap_metric")], [0], [1.0], "series_id"),
        ([(1, "over_metric"), (2, "more_metric")], [1], [1.0], "series_table"),
        ([], [0], [], "series_values"),
        ([], [0, 0], [1.0, 1.0], "duplicate_series"),
        ([(1, "first_metric")], [1], [1.0], "duplicate_series"),
        ([], [0], [math.inf], "value"),
        ([(1, "Bad-Name")], [1], [1.0], "metric_name"),
    ],
)
def test_defects_are_refused_and_leave_the_table_as_it_was(
    defs: list[tuple[int, str]], ids: list[int], values: list[float], reason: str
) -> None:
    table = SeriesTable(limit=2)
    decode(table_report(1, [(0, "first_metric")], [0], [1.0]), table)
    with pytest.raises(InvalidMessage) as refused:
        decode(table_report(2, defs, ids, values), table)
    assert refused.value.reason == reason
    assert refused.value.seq == 2
    assert len(table) == 1
    # the table still serves the stream's next good report
    assert decode(table_report(3, [], [0], [2.0]), table) == [("first_metric", (), 2.0)]


def test_a_table_report_without_an_offered_table_is_refused() -> None:
    with pytest.raises(InvalidMessage) as refused:
        decode(table_report(1, [(0, "x_metric")], [0], [1.0]), None)
    assert refused.value.reason == "series_table"


def test_a_refused_report_adds_none_of_its_definitions() -> None:
    table = SeriesTable(limit=10)
    report = table_report(1, [(0, "ok_metric")], [0], [1.0])
    report.collected_at_seconds = math.nan  # refused after the table would have been read
    with pytest.raises(InvalidMessage):
        decode(report, table)
    assert len(table) == 0
