# ruff: noqa: F811  (the rig fixtures are imported; tests take them as parameters)
"""The per-stream series table over real gRPC: table reports and named reports side by side,
every hostile table refused whole with its reason, the stream's earlier reports kept.

Uses the hostile-input rig (one collector, a real agent reporting throughout, whose
stream must never be disturbed); the real agent interns its series, the raw streams
here speak either wire form.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from tests.integration.hostile_rig import (  # noqa: F401  (fixtures)
    TRIPWIRE,
    Rig,
    assert_actionable,
    good_agent_unaffected,
    hello,
    next_seq,
    report_msg,
    rig,
)
from tripline.collector import agent_instances
from tripline.collector.store import Store
from tripline.v1 import tripline_pb2 as pb


def _applied_seq(store: Store, agent_id: str, instance_id: str) -> int:
    with store.read() as conn:
        return agent_instances.applied_seq(conn, agent_id, instance_id)


def acks(out: Any) -> list[int]:
    return [r.ack.seq for r in out.replies if r.WhichOneof("kind") == "ack"]


def table_report(
    seq: int,
    defs: list[tuple[int, str, dict[str, str]]],
    ids: list[int],
    values: list[float],
    samples: list[pb.Sample] | None = None,
) -> bytes:
    msg = report_msg(seq, samples or [])
    for series_id, name, labels in defs:
        msg.report.series_defs.add(id=series_id, name=name, labels=labels)
    msg.report.series_ids.extend(ids)
    msg.report.series_values.extend(values)
    return msg.SerializeToString()


def test_the_welcome_offers_a_table_of_the_agent_series_cap(rig: Rig) -> None:
    out = rig.converse([hello()])
    assert out.replies[0].welcome.series_table_max == rig.app.config.max_series_per_agent > 0


def test_table_and_named_reports_are_applied_alike(rig: Rig) -> None:
    seq = next_seq(rig)
    labels = {"mountpoint": "/", "fstype": "ext4", "device": "sda1"}
    out = rig.converse(
        [
            hello(),
            # first report defines the series, the next ones carry only ids and values
            table_report(
                seq,
                [(0, "filesystem_used_ratio", labels), (1, "table_metric", {"k": "a"})],
                [0, 1],
                [0.5, 1.0],
            ),
            table_report(seq + 1, [], [1, 0], [2.0, 0.6]),
            # a series new on the stream, defined mid-stream, and a named sample alongside
            table_report(
                seq + 2,
                [(2, "table_metric", {"k": "b"})],
                [2, 0, 1],
                [3.0, 0.7, 2.5],
                [pb.Sample(name="named_metric", value=4.0)],
            ),
        ]
    )
    assert out.code == grpc.StatusCode.OK, out
    assert acks(out) == [seq, seq + 1, seq + 2]
    live = rig.app.state.agents[rig.hostile_id]
    assert live.value("filesystem_used_ratio", **labels) == 0.7
    assert live.value("table_metric", k="a") == 2.5
    assert live.value("table_metric", k="b") == 3.0
    assert live.value("named_metric") == 4.0
    # a new stream starts an empty table: id 0 means nothing until defined again
    again = next_seq(rig)
    out = rig.converse([hello(), table_report(again, [], [0], [0.8])])
    assert out.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "series id 0 is not defined on this stream" in out.details


def test_a_table_entry_is_validated_like_a_named_sample(rig: Rig) -> None:
    seq = next_seq(rig)
    before = rig.rejected_count("label_reserved")
    out = rig.converse(
        [hello(), table_report(seq, [(0, "probe_value", {"customer": "other"})], [0], [1.0])]
    )
    assert out.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "label name 'customer' is reserved" in out.details
    assert out.trailers.get("tripline-rejected-seq") == str(seq)
    assert rig.rejected_count("label_reserved") == before + 1


def _defs(n: int, start: int = 0) -> list[tuple[int, str, dict[str, str]]]:
    return [(start + i, "hostile_table", {"i": str(start + i)}) for i in range(n)]


HOSTILE = {
    # (reason, what the status says, the report's table after one good report of id 0)
    "id out of range": ("series_id", "series id 7 is not defined", ([], [0, 7], [1.0, 1.0])),
    "id redefined": ("series_redefined", "id 0 is already defined", (_defs(1), [0], [1.0])),
    "id skipped": ("series_id", "id 5 is not the next id 1", (_defs(1, 5), [5], [1.0])),
    "values count mismatch": (
        "series_values",
        "2 series_ids but 1 series_values",
        ([], [0, 0], [1.0]),
    ),
    "id twice": ("duplicate_series", "series id 0 appears twice", ([], [0, 0], [1.0, 2.0])),
    "series defined twice": (
        "duplicate_series",
        "is already in the table",
        ([(1, "hostile_table", {"i": "0"})], [1], [1.0]),
    ),
    "named and by id": (
        "duplicate_series",
        "is sent both named and by id",
        ([], [0], [1.0]),
    ),
    "not finite": ("value", "value nan is not finite", ([], [0], [float("nan")])),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tables_are_refused_with_their_reason_and_earlier_reports_stay(
    rig: Rig, case: str
) -> None:
    reason, fragment, (defs, ids, values) = HOSTILE[case]
    seq = next_seq(rig)
    named = [pb.Sample(name="hostile_table", value=5.0, labels={"i": "0"})]
    before = rig.rejected_count(reason)
    out = rig.converse(
        [
            hello(),
            table_report(seq, _defs(1), [0], [0.25]),
            table_report(
                seq + 1,
                defs,
                ids,
                values,
                (named if case == "named and by id" else []) + [pb.Sample(name=TRIPWIRE, value=1)],
            ),
        ]
    )
    assert out.code == grpc.StatusCode.INVALID_ARGUMENT, out
    assert fragment in out.details, out.details
    assert out.details.startswith(f"report seq {seq + 1}")
    assert out.trailers.get("tripline-rejected-seq") == str(seq + 1)
    assert_actionable(out)
    assert rig.rejected_count(reason) == before + 1
    # the stream's earlier report was applied and acknowledged; nothing of the refused one
    assert acks(out) == [seq]
    assert _applied_seq(rig.app.store, rig.hostile_id, "hostile-1") == seq
    live = rig.app.state.agents[rig.hostile_id]
    assert live.value("hostile_table", i="0") == 0.25
    assert live.value(TRIPWIRE) is None


def test_a_table_beyond_the_series_cap_is_refused(rig: Rig) -> None:
    cap = rig.app.config.max_series_per_agent
    seq = next_seq(rig)
    before = rig.rejected_count("series_table")
    out = rig.converse(
        [hello(), table_report(seq, _defs(cap + 1), list(range(cap + 1)), [1.0] * (cap + 1))]
    )
    assert out.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"the table would hold more than {cap} series" in out.details
    assert rig.rejected_count("series_table") == before + 1
    assert _applied_seq(rig.app.store, rig.hostile_id, "hostile-1") == seq - 1
