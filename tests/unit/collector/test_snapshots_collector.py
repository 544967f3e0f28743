"""The collector's side of snapshots: the edge check and the broker's rate limits, with
a fake clock."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import FakeClock
from tripline.collector.reportcontext import MAX_CMDLINE, MAX_PROCESSES
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.snapshotconv import MAX_FILESYSTEMS, decode_snapshot
from tripline.collector.snapshots import SnapshotBroker, SnapshotUnavailable
from tripline.collector.wirecheck import InvalidMessage
from tripline.v1 import tripline_pb2 as pb

RID = "0123456789abcdef" * 2


def test_a_snapshot_is_bounded_and_escaped_at_the_edge() -> None:
    process = pb.ProcessInfo(
        pid=7, name="evil\x1b[2J", cpu_ratio=1.5, memory_rss_bytes=2**40, cmdline="x" * 5000
    )
    msg = pb.Snapshot(
        request_id=RID,
        top_cpu=[process] * (MAX_PROCESSES + 5),
        filesystems=[pb.FilesystemInfo(mountpoint="/\n", used_ratio=0.5, size_bytes=2**64 - 1)]
        * (MAX_FILESYSTEMS + 3),
        logged_in_users=["alice"],
        uptime_seconds=100.0,
        cpu_span_seconds=1.5,
        processes=300,
    )
    request_id, data = decode_snapshot(msg)
    assert request_id == RID
    assert len(data["top_cpu"]) == MAX_PROCESSES
    assert data["top_cpu"][0]["name"] == "evil\\x1b[2J"
    assert len(data["top_cpu"][0]["cmdline"]) == MAX_CMDLINE
    assert data["top_cpu"][0]["memory_rss_bytes"] == 2**40
    assert len(data["filesystems"]) == MAX_FILESYSTEMS
    assert data["filesystems"][0]["mountpoint"] == "/\\x0a"
    assert data["filesystems"][0]["size_bytes"] == 2**63 - 1


@pytest.mark.parametrize(
    "bad",
    [
        pb.Snapshot(request_id="not-ours"),
        pb.Snapshot(request_id=RID.upper()),
        pb.Snapshot(request_id=RID, top_cpu=[pb.ProcessInfo(cpu_ratio=math.nan)]),
        pb.Snapshot(request_id=RID, top_memory=[pb.ProcessInfo(cpu_ratio=-1)]),
        pb.Snapshot(request_id=RID, cpu_usage_ratio=1.5),
        pb.Snapshot(request_id=RID, memory_used_ratio=math.inf),
        pb.Snapshot(request_id=RID, uptime_seconds=-1),
        pb.Snapshot(request_id=RID, cpu_span_seconds=3600),
        pb.Snapshot(request_id=RID, filesystems=[pb.FilesystemInfo(used_ratio=2)]),
    ],
)
def test_a_snapshot_out_of_range_is_refused(bad: pb.Snapshot) -> None:
    with pytest.raises(InvalidMessage):
        decode_snapshot(bad)


def _broker(clock: FakeClock) -> tuple[SnapshotBroker, CollectorMetrics, list[str]]:
    metrics = CollectorMetrics(CollectorRegistry())
    ids = iter(f"{n:032x}" for n in range(1, 100))
    broker = SnapshotBroker(
        metrics=metrics,
        min_interval=60.0,
        timeout=10.0,
        clock=clock,
        monotonic=clock,
        new_id=lambda: next(ids),
    )
    sent: list[str] = []
    broker.attach("agt_1", sent.append)
    return broker, metrics, sent


def _sender(broker: SnapshotBroker) -> Callable[[str], None]:
    return broker._senders["agt_1"]


def _count(metrics: CollectorMetrics, result: str) -> float:
    return metrics.snapshots.labels(result)._value.get()


def test_one_request_in_flight_then_min_interval(clock: FakeClock) -> None:
    async def scenario() -> None:
        broker, metrics, sent = _broker(clock)
        first = broker.request("agt_1", "pending")
        assert broker.request("agt_1", "firing") is first  # joined, not sent again
        assert len(sent) == 1
        assert broker.receive("agt_1", "f" * 32, {}) is None  # not what was asked
        taken = broker.receive("agt_1", sent[0], {"processes": 3})
        assert taken is not None and (await first) is taken
        assert taken.taken_at == clock.now
        clock.advance(59)
        with pytest.raises(SnapshotUnavailable) as refused:
            broker.request("agt_1", "pending")
        assert refused.value.reason == "rate_limited" and refused.value.retry_after == 1
        # an operator asking within the interval gets the latest instead
        assert await broker.ask("agt_1", 1.0) is taken
        clock.advance(1)
        broker.request("agt_1", "pending")
        assert len(sent) == 2
        assert _count(metrics, "requested") == 2 and _count(metrics, "answered") == 1
        assert _count(metrics, "unsolicited") == 1 and _count(metrics, "rate_limited") == 2

    asyncio.run(scenario())


def test_an_unanswered_request_expires_and_a_gone_stream_fails_at_once(clock: FakeClock) -> None:
    async def scenario() -> None:
        broker, metrics, sent = _broker(clock)
        broker.min_interval = 5.0
        first = broker.request("agt_1", "pending")
        clock.advance(10)
        second = broker.request("agt_1", "pending")  # the first timed out
        assert second is not first and len(sent) == 2
        with pytest.raises(SnapshotUnavailable):
            first.result()
        assert broker.receive("agt_1", sent[0], {}) is None  # a late answer is refused
        broker.detach("agt_1", lambda request_id: None)  # another stream's: ignored
        assert broker.connected("agt_1")
        broker.detach("agt_1", _sender(broker))
        assert not broker.connected("agt_1")
        with pytest.raises(SnapshotUnavailable) as gone:
            second.result()
        assert gone.value.reason == "not_connected"
        with pytest.raises(SnapshotUnavailable) as offline:
            await broker.ask("agt_1", 1.0)
        assert offline.value.reason == "not_connected"
        assert _count(metrics, "timeout") == 1 and _count(metrics, "not_connected") == 1

    asyncio.run(scenario())
