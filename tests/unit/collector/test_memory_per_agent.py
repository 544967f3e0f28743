"""What the collector keeps per connected agent: its own data, and nothing per report.

Memory per agent decides how many PCs one collector host carries (bench/README.md,
"Collector memory per agent"). These tests hold the properties that keep it small,
counting allocations with tracemalloc (sizes, never timings), so a change that starts
keeping a copy per series or per report fails here rather than in a load run.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable

import pytest

from tripline.collector import exposition as exposition_module
from tripline.collector import interning
from tripline.collector import state as state_module
from tripline.collector.convert import decode_report
from tripline.collector.exposition import SeriesExposition
from tripline.collector.reportstream import Stream
from tripline.collector.seriestable import SeriesTable
from tripline.collector.state import LiveState
from tripline.common.labels import Labels
from tripline.v1 import tripline_pb2 as pb

T0 = 1_700_000_000.0
Sample = tuple[str, Labels, float]


def pc_samples(value: float = 0.5) -> list[Sample]:
    """About what a Windows PC sends: 60 series over a dozen families."""
    samples: list[Sample] = [
        ("cpu_usage_ratio", (), value),
        ("load1", (), value),
        ("memory_used_ratio", (), value),
        ("memory_total_bytes", (), 17e9),
        ("uptime_seconds", (), 1e5 + value),
        ("processes", (), 300.0),
    ]
    for cpu in range(16):
        samples.append(("cpu_core_usage_ratio", (("cpu", str(cpu)),), value))
    for drive in "CDEFGH":
        labels = (("device", f"{drive}:"), ("fstype", "NTFS"), ("mountpoint", f"{drive}:\\"))
        samples.append(("filesystem_size_bytes", labels, 5e11))
        samples.append(("filesystem_avail_bytes", labels, 1e11 * value))
        samples.append(("filesystem_used_ratio", labels, value))
    for nic in ("Ethernet", "Wi-Fi", "vEthernet (WSL)", "Bluetooth"):
        samples.append(("network_receive_bytes_total", (("device", nic),), 1e9 * value))
        samples.append(("network_transmit_bytes_total", (("device", nic),), 1e8 * value))
    for disk in ("PhysicalDrive0", "PhysicalDrive1"):
        samples.append(("disk_read_bytes_total", (("device", disk),), 1e10 * value))
        samples.append(("disk_written_bytes_total", (("device", disk),), 1e10 * value))
    samples.extend(("x_custom_level", (("slot", str(i)),), value) for i in range(10))
    return samples


def held_by(
    module_file: str | None,
    work: Callable[[], object],
    before: Callable[[], object] = lambda: None,
) -> int:
    """Bytes allocated (by code in ``module_file``; None: anywhere) while ``work`` ran and
    still held after it. ``before`` runs traced first, so what ``work`` reallocates
    counts only by growth."""
    tracemalloc.start()
    try:
        before()
        only = [] if module_file is None else [tracemalloc.Filter(True, module_file)]
        start = tracemalloc.take_snapshot().filter_traces(only)
        kept = work()
        after = tracemalloc.take_snapshot().filter_traces(only)
        del kept
    finally:
        tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(start, "filename"))


AGENTS = 50


def test_an_agent_costs_the_exposition_about_its_text() -> None:
    """Family names, headers and escaped label sets are shared by all agents: what the
    exposition keeps per agent is its lines of text plus a small fixed overhead, not
    objects per series (a cached prefix, header and name per series cost ~4x the text)."""
    state = LiveState(window=900.0)
    exposition = SeriesExposition(state, lambda live: True)
    lives = [
        state.ensure(f"agent-{i:04d}", customer="acme", hostname=f"PC-{i:04d}", site="hq")
        for i in range(AGENTS)
    ]

    def expose() -> None:
        for report in range(3):
            samples = pc_samples(0.25 + report / 10)
            for live in lives:
                state.record(live, T0 + 10 * report, samples)
                exposition.update(live, samples)

    held = held_by(exposition_module.__file__, expose)
    text = len(exposition.render())
    per_agent_text = text / AGENTS
    per_agent_held = held / AGENTS
    # str overhead per family chunk and the chunk map: well under half the text
    assert per_agent_held < 1.5 * per_agent_text, (per_agent_held, per_agent_text)


def test_agents_share_one_header_per_family() -> None:
    state = LiveState(window=900.0)
    exposition = SeriesExposition(state, lambda live: True)
    for i in range(2):
        live = state.ensure(f"agent-{i}", customer="acme", hostname=f"PC-{i}", site="hq")
        exposition.update(live, pc_samples())
    parts = {family: header for family, header, _ in exposition.parts()}
    first, second = (exposition._agents[f"agent-{i}"].chunks for i in range(2))
    assert first.keys() == second.keys() and len(first) > 10
    for family, (header, _) in first.items():
        assert second[family][0] is header
        assert parts[family] == header


def test_live_state_keeps_nothing_per_report() -> None:
    """A series costs the live state little, and once an agent's series are known,
    further reports keep nothing more than the first did: points are replaced, and the
    set of current series is the one whose keys the series map already holds (not a
    second key tuple per series)."""
    state = LiveState(window=900.0, retention={})
    lives = [
        state.ensure(f"agent-{i:04d}", customer="acme", hostname=f"PC-{i:04d}", site="hq")
        for i in range(AGENTS)
    ]

    def report(at: float) -> None:
        for live in lives:
            state.record(live, at, pc_samples(at % 7 / 10))

    def reports() -> None:
        for n in range(1, 11):
            report(T0 + 10 * n)

    first = held_by(state_module.__file__, lambda: report(T0))
    # a series that keeps only its latest point: the map's slot, a 1-tuple and its
    # point, a place in the current set (was ~270 bytes with a list per series)
    assert first / AGENTS / len(pc_samples()) < 200, first / AGENTS / len(pc_samples())
    held = held_by(state_module.__file__, reports, before=lambda: report(T0))
    assert held / AGENTS < 200, held / AGENTS
    # and the keys it holds are the fleet's shared ones, not a copy per agent
    for live in lives:
        assert all(key is interning.series_key(*key) for key in live.series)
        assert all(key is interning.series_key(*key) for key in live.current)


def table_report(seq: int, samples: list[Sample]) -> pb.Report:
    """A stream's report defining every series of ``samples`` in the table."""
    report = pb.Report(instance_id="i", seq=seq, collected_at_seconds=T0 + seq)
    for series_id, (name, labels, value) in enumerate(samples):
        report.series_defs.add(id=series_id, name=name, labels=dict(labels))
        report.series_ids.append(series_id)
        report.series_values.append(value)
    return report


def test_streams_share_one_key_per_series() -> None:
    """Two PCs' streams defining the same series hold the same key objects (and so do
    named samples), rather than a copy of every name and label per agent."""
    samples = pc_samples()
    tables = [SeriesTable(limit=1000) for _ in range(2)]
    decoded = [
        decode_report(table_report(1, samples), instance_id="i", max_samples=1000, table=table)
        for table in tables
    ]
    named = pb.Report(instance_id="i", seq=1, collected_at_seconds=T0)
    for name, labels, value in samples:
        named.samples.add(name=name, labels=dict(labels), value=value)
    from_names = decode_report(named, instance_id="i", max_samples=1000)
    assert len(tables[0]) == len(samples)
    for series_id in range(len(samples)):
        assert tables[0][series_id] is tables[1][series_id]
        one, other, by_name = (d.samples[series_id] for d in (*decoded, from_names))
        assert one[:2] == tuple(samples[series_id][:2])
        assert one[0] is other[0] is by_name[0] and one[1] is other[1] is by_name[1]


def test_shared_keys_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent inventing label values cannot grow the shared maps past their bound;
    keys handed out before stay equal to what was sent."""
    monkeypatch.setattr(interning, "SHARED_MAX", 10)
    keys = [interning.series_key("x_made_up", (("n", str(i)),)) for i in range(25)]
    assert len(interning._series) <= 10 and len(interning._labels) <= 10
    assert keys == [("x_made_up", (("n", str(i)),)) for i in range(25)]
    assert interning.series_key("x_made_up", (("n", "24"),)) is keys[24]


def test_a_streams_outgoing_side_is_small_and_keeps_order() -> None:
    """One per connected PC for days: a list and a waiter, not an asyncio.Queue's four
    deques (~2.5 KiB)."""

    async def scenario() -> None:
        held = held_by(None, lambda: [Stream() for _ in range(AGENTS)])
        assert held / AGENTS < 400, held / AGENTS
        stream = Stream()
        waiting = asyncio.create_task(stream.next())
        await asyncio.sleep(0)
        assert not waiting.done()
        stream.send("first")
        stream.send("second")
        assert await waiting == "first"
        assert await stream.next() == "second"
        stream.send("third")
        assert await stream.next() == "third"

    asyncio.run(scenario())
