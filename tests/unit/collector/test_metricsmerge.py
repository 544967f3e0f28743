"""Merging workers' /metrics parts: each agent from one worker, each family contiguous."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge

from tripline.collector.metricsmerge import (
    decode_agent_ids,
    decode_owner_keys,
    decode_part,
    encode_agent_ids,
    encode_owner_keys,
    encode_part,
    merge,
    own_families,
    owners,
    with_worker_label,
)


@pytest.mark.parametrize(
    ("keys", "owned"),
    [
        # the worker holding the stream wins, whatever the report times
        ([{"a": (False, 200.0)}, {"a": (True, 100.0)}], [set(), {"a"}]),
        # no stream anywhere: the newest report wins
        ([{"a": (False, 100.0)}, {"a": (False, 200.0)}], [set(), {"a"}]),
        # a tie: the lower index keeps it, once
        ([{"a": (True, 5.0)}, {"a": (True, 5.0)}], [{"a"}, set()]),
        # agents known to one worker only stay with it
        ([{"a": (False, 1.0)}, {"b": (False, 1.0)}], [{"a"}, {"b"}]),
        ([{}, {}], [set(), set()]),
    ],
)
def test_owners_give_each_agent_to_one_worker(
    keys: list[dict[str, tuple[bool, float]]], owned: list[set[str]]
) -> None:
    assert owners(keys) == owned


def test_merge_writes_each_header_once_and_keeps_families_contiguous() -> None:
    a = [("f", "# f\n", "f{w=0} 1\n"), ("g", "# g\n", "g{w=0} 2\n")]
    b = [("g", "# g\n", "g{w=1} 3\n"), ("h", "# h\n", "h{w=1} 4\n"), ("f", "# f\n", "")]
    assert merge([a, b]).decode() == "# f\nf{w=0} 1\n# g\ng{w=0} 2\ng{w=1} 3\n# h\nh{w=1} 4\n"


@pytest.mark.parametrize(
    ("line", "labelled"),
    [
        ("x_total 1.0\n", 'x_total{worker="3"} 1.0\n'),
        ('x_total{route="a b{c}"} 1.0\n', 'x_total{worker="3",route="a b{c}"} 1.0\n'),
        ('h_bucket{le="+Inf"} 2.0\n', 'h_bucket{worker="3",le="+Inf"} 2.0\n'),
    ],
)
def test_worker_label_goes_first_on_every_sample(line: str, labelled: str) -> None:
    assert with_worker_label(line, 3) == labelled


def test_own_families_label_every_sample_and_keep_the_ticket_counts_on_worker_0() -> None:
    registry = CollectorRegistry()
    Counter("tripline_collector_reports_applied", "applied", registry=registry).inc(2)
    Gauge("tripline_collector_tickets", "tickets", ["status"], registry=registry).labels(
        "open"
    ).set(1)
    worker_1 = own_families(registry, 1, shared=False)
    counter = [
        "tripline_collector_reports_applied_total",
        "tripline_collector_reports_applied_created",
    ]
    assert [family for family, _, _ in worker_1] == counter
    assert worker_1[0][2] == 'tripline_collector_reports_applied_total{worker="1"} 2.0\n'
    assert worker_1[1][2].startswith('tripline_collector_reports_applied_created{worker="1"} ')
    worker_0 = own_families(registry, 0, shared=True)
    assert [family for family, _, _ in worker_0] == [*counter, "tripline_collector_tickets"]
    # the database's counts, the same from any worker: shown once, unlabelled
    assert worker_0[2][2] == 'tripline_collector_tickets{status="open"} 1.0\n'


def test_a_part_survives_the_wire_and_nonsense_is_refused() -> None:
    part = [
        ("tripline_cpu_usage_ratio", "# HELP a\n# TYPE a gauge\n", 'a{x="é"} 1\n' * 3),
        ("empty", "", ""),
    ]
    data = encode_part(part)
    assert decode_part(data) == part
    assert decode_part(encode_part([])) == []
    for bad in (
        b"",
        data[:-1],  # truncated
        data + b"\0",  # bytes after the last family
        b"\xff\xff\xff\xff",  # four billion families
        data[:4] + b"\xff" * 8 + data[12:],  # a length past the end
        data.replace("é".encode(), b"\xff\xfe"),  # not UTF-8
    ):
        with pytest.raises(ValueError):
            decode_part(bad)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b'{"a": [true]}',
        b'{"a": ["yes", 1.0]}',
        b'{"a": [true, "1"]}',
        b'{"a": [true, true]}',
        b'{"a": [true, NaN]}',
        b'{"a": [true, Infinity]}',
        b"{",
    ],
)
def test_owner_keys_from_a_peer_are_checked_entry_by_entry(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_owner_keys(body)


def test_owner_keys_and_agent_ids_round_trip() -> None:
    keys = {"agt_1": (True, 1.5), "agt_2": (False, 0.0)}
    assert decode_owner_keys(encode_owner_keys(keys)) == keys
    assert decode_agent_ids(encode_agent_ids({"b", "a"})) == {"a", "b"}
    with pytest.raises(ValueError):
        decode_agent_ids(b'["a", 1]')
