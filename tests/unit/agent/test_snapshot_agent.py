"""The agent's snapshot: what it measures over the span, what it refuses, and that an
agent from before snapshots ignores the request."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tests.conftest import FakeClock
from tripline.agent import convert
from tripline.agent.probes import Prober
from tripline.agent.redact import Redaction
from tripline.agent.snapshot import Snapshotter
from tripline.v1 import tripline_pb2 as pb

SECRET = "hunter2-not-for-the-collector"


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[bytes]]:
    code = "import sys; print('ready', flush=True)\nwhile True: pass"
    child = subprocess.Popen(
        [sys.executable, "-c", code, "snapshot-busy-marker", "--password", SECRET],
        stdout=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    yield child
    child.kill()
    child.wait()


def test_one_snapshot_at_a_time_and_min_interval_apart(clock: FakeClock) -> None:
    snapshotter = Snapshotter(Prober(), min_interval=5.0, monotonic=clock)
    assert snapshotter.accept()
    assert not snapshotter.accept()  # busy
    snapshotter._busy = False  # as take() leaves it when done
    clock.advance(4.9)
    assert not snapshotter.accept()  # too soon
    clock.advance(0.1)
    assert snapshotter.accept()
    assert snapshotter.stats.refused == 2


def test_the_busy_process_tops_the_cpu_list_over_the_span_redacted(
    busy: subprocess.Popen[bytes],
) -> None:
    prober = Prober(redaction=Redaction())
    snapshotter = Snapshotter(prober, span=0.5)
    assert snapshotter.accept()
    taken = asyncio.run(snapshotter.take())
    assert snapshotter.stats.answered == 1
    assert 0.5 <= taken.cpu_span_seconds < 5
    mine = [p for p in taken.top_cpu if p.pid == busy.pid]
    assert mine, f"the busy loop is among the top CPU: {taken.top_cpu}"
    assert mine[0].cpu_ratio > 0.2
    assert "snapshot-busy-marker --password ***" in mine[0].cmdline
    assert SECRET not in mine[0].cmdline
    assert taken.processes > 1 and taken.top_memory
    assert taken.uptime_seconds > 0 and 0 < taken.memory_used_ratio < 1
    assert any(f.mountpoint for f in taken.filesystems)
    wire = convert.snapshot_pb("ab" * 16, taken)
    assert wire.request_id == "ab" * 16
    assert SECRET.encode() not in wire.SerializeToString()


def test_no_processes_when_the_config_sends_none() -> None:
    snapshotter = Snapshotter(Prober(collect_processes=False), span=0.05)
    assert snapshotter.accept()
    taken = asyncio.run(snapshotter.take())
    assert taken.top_cpu == () and taken.top_memory == () and taken.processes == 0


def _old_collector_message() -> type:
    """CollectorMessage as an agent built before snapshots knows it (no member 4)."""
    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    message = next(m for m in proto.message_type if m.name == "CollectorMessage")
    kept = [f for f in message.field if f.name != "snapshot_request"]
    del message.field[:]
    message.field.extend(kept)
    pool = descriptor_pool.DescriptorPool()  # its own pool: the real one stays as it is
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tripline.v1.CollectorMessage")
    )


def test_an_old_agent_sees_an_unset_oneof_and_ignores_the_request() -> None:
    old = _old_collector_message()
    assert "snapshot_request" not in old.DESCRIPTOR.fields_by_name
    request = pb.CollectorMessage(snapshot_request=pb.SnapshotRequest(request_id="ab" * 16))
    parsed = old.FromString(request.SerializeToString())
    # The old transport dispatches on WhichOneof: "ack" and "settings" only; None matches
    # neither, so the message is dropped and the stream goes on.
    assert parsed.WhichOneof("kind") is None
    ack = old.FromString(pb.CollectorMessage(ack=pb.Ack(seq=7)).SerializeToString())
    assert ack.WhichOneof("kind") == "ack" and ack.ack.seq == 7
