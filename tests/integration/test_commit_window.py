"""Reports arriving within one commit tick share a store transaction (`commit_window`),
and each is still acknowledged only once that transaction committed.

Real SQLite files; the last test runs over real gRPC on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from grpc import aio
from prometheus_client import CollectorRegistry
from sqlalchemy import Connection, text

from tests.integration.conftest import TOKEN, running_collector
from tripline.collector import agent_instances
from tripline.collector.committer import Committer
from tripline.collector.config import load_collector_config
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.store import Store, StoreContended
from tripline.common.config import ConfigError
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc


def _store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'tripline.db'}")
    store.migrate()
    return store


def _batches(metrics: CollectorMetrics) -> tuple[float, float]:
    """(transactions, units committed) so far, from the batch-size histogram."""
    count = sum = 0.0
    for family in metrics.commit_batch_units.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                sum = sample.value
    return count, sum


async def _two_units_apart(committer: Committer, gap: float) -> tuple[list[Connection], bool]:
    """Submit one unit, a second `gap` seconds later; the connections each ran on, and
    whether the first was already committed when the second arrived."""
    seen: list[Connection] = []

    def work(conn: Connection) -> int:
        seen.append(conn)
        return int(conn.execute(text("SELECT 1")).scalar_one())

    runner = asyncio.create_task(committer.run())
    try:
        first = asyncio.create_task(committer.submit(work))
        await asyncio.sleep(gap)
        first_done = first.done()
        assert await asyncio.wait_for(committer.submit(work), 10) == 1
        assert await asyncio.wait_for(first, 10) == 1
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    return seen, first_done


def test_units_within_the_window_commit_in_one_transaction(tmp_path: Path) -> None:
    store = _store(tmp_path)
    metrics = CollectorMetrics(CollectorRegistry())
    committer = Committer(store, metrics, window=0.5)
    seen, first_done = asyncio.run(_two_units_apart(committer, gap=0.05))
    assert not first_done  # the first unit waited for its tick...
    assert seen[0] is seen[1]  # ...and shared the second's transaction
    assert _batches(metrics) == (1.0, 2.0)
    store.close()


def test_without_a_window_a_lone_unit_commits_at_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    metrics = CollectorMetrics(CollectorRegistry())
    committer = Committer(store, metrics, window=0.0)
    seen, first_done = asyncio.run(_two_units_apart(committer, gap=0.3))
    assert first_done
    assert seen[0] is not seen[1]
    assert _batches(metrics) == (2.0, 2.0)
    store.close()


@pytest.mark.parametrize("value", ["-1s", "2s"])
def test_commit_window_out_of_range_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="commit_window"):
        load_collector_config(
            None, environ={"TRIPLINE_COLLECTOR_COMMIT_WINDOW": value}, flags={"data_dir": tmp_path}
        )


def test_default_commit_window_is_one_short_tick(tmp_path: Path) -> None:
    config = load_collector_config(None, environ={}, flags={"data_dir": tmp_path})
    assert 0 < config.commit_window <= 0.05  # well inside the 250 ms ack budget


def test_reports_of_several_streams_in_one_tick_share_a_commit_and_each_is_acked(
    tmp_path: Path,
) -> None:
    """Four agents each send a report 50 ms after the previous one: with a 0.5 s window
    they commit together (a transaction of at least four units), every stream gets the
    Ack of its own seq, and each report is applied exactly once."""
    streams = 4

    async def scenario() -> None:
        async with (
            running_collector(tmp_path / "c", commit_window=0.5, evaluation_interval=30) as app,
            aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
        ):
            stub = pb_grpc.CollectorStub(channel)
            calls = []
            agent_ids = []
            for n in range(streams):
                enrolled = await stub.Enroll(
                    pb.EnrollRequest(enrollment_token=TOKEN, host=pb.HostInfo(hostname=f"pc-{n}")),
                    timeout=10,
                )
                agent_ids.append(enrolled.agent_id)
                call = stub.Connect(metadata=(("authorization", f"Bearer {enrolled.credential}"),))
                await call.write(
                    pb.AgentMessage(hello=pb.Hello(instance_id="i", sent_at_seconds=time.time()))
                )
                assert (await call.read()).WhichOneof("kind") == "welcome"
                calls.append(call)
            batches_before, units_before = _batches(app.metrics)
            sent_at = []
            for call in calls:
                report = pb.Report(instance_id="i", seq=1, collected_at_seconds=time.time())
                report.samples.add(name="processes", value=42.0)
                await call.write(pb.AgentMessage(report=report))
                sent_at.append(time.monotonic())
                await asyncio.sleep(0.05)
            for call in calls:
                reply = await asyncio.wait_for(call.read(), 10)
                assert reply.WhichOneof("kind") == "ack", reply
                assert reply.ack.seq == 1
            batches, units = _batches(app.metrics)
            # Fewer transactions than reports: at least one held all four.
            assert units - units_before >= streams
            assert batches - batches_before < streams
            buckets = {
                s.labels["le"]: s.value
                for f in app.metrics.commit_batch_units.collect()
                for s in f.samples
                if s.name.endswith("_bucket")
            }
            assert buckets["+Inf"] - buckets["2.0"] >= 1  # a batch of more than two units
            for agent_id in agent_ids:
                with app.store.read() as conn:
                    position = agent_instances.instance_position(conn, agent_id, "i")
                assert position.applied_seq == 1
            assert app.metrics.reports_applied._value.get() == streams
            assert app.metrics.reports_duplicate._value.get() == 0
            for call in calls:
                call.cancel()

    asyncio.run(scenario())


async def _queued_then_run(committer: Committer, units: int) -> list[tuple[int, Connection]]:
    """Queue ``units`` units before the committer runs; (unit number, connection) in the
    order they ran, once every unit is acknowledged with its own result."""
    ran: list[tuple[int, Connection]] = []

    def unit(number: int) -> Callable[[Connection], int]:
        def work(conn: Connection) -> int:
            ran.append((number, conn))
            return number + int(conn.execute(text("SELECT 0")).scalar_one())

        return work

    submitted = [asyncio.create_task(committer.submit(unit(n))) for n in range(units)]
    await asyncio.sleep(0)  # every submit queued its unit
    runner = asyncio.create_task(committer.run())
    try:
        assert await asyncio.wait_for(asyncio.gather(*submitted), 10) == list(range(units))
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    return ran


def test_a_transaction_commits_what_fits_in_max_hold_and_the_rest_goes_next(
    tmp_path: Path,
) -> None:
    """A transaction stops taking units once it has held the lock ``max_hold``: with no
    time at all each of five queued units commits in its own transaction, in order, and
    each is acknowledged; with time enough the five share one."""
    store = _store(tmp_path)
    metrics = CollectorMetrics(CollectorRegistry())
    ran = asyncio.run(_queued_then_run(Committer(store, metrics, max_hold=0.0), 5))
    assert [number for number, _ in ran] == [0, 1, 2, 3, 4]
    assert _batches(metrics) == (5.0, 5.0)

    metrics = CollectorMetrics(CollectorRegistry())
    ran = asyncio.run(_queued_then_run(Committer(store, metrics, max_hold=60.0), 5))
    assert [number for number, _ in ran] == [0, 1, 2, 3, 4]
    assert len({id(conn) for _, conn in ran}) == 1
    assert _batches(metrics) == (1.0, 5.0)
    store.close()


def test_a_long_batch_lets_another_writer_in_before_its_busy_timeout(tmp_path: Path) -> None:
    """One collector commits 2 s of slow units; another writer (a second worker on the same
    file) waits 1 s for the lock at most. Bounded transactions commit every 0.1 s, so the
    other writer either gets in between them or sees the lock change hands (contention,
    retried): never an outage, and the store stays healthy on both sides."""
    store = _store(tmp_path)
    other = Store(f"sqlite:///{tmp_path / 'tripline.db'}", busy_timeout=1.0)
    metrics = CollectorMetrics(CollectorRegistry())
    committer = Committer(store, metrics, max_hold=0.1)

    def slow(conn: Connection) -> int:
        conn.execute(text("UPDATE store_probe SET writes = writes + 1"))
        time.sleep(0.02)
        return 1

    def other_write() -> str:
        try:
            other.probe(time.time())
        except StoreContended:
            return "contended"
        return "wrote"

    async def scenario() -> str:
        runner = asyncio.create_task(committer.run())
        try:
            units = [asyncio.create_task(committer.submit(slow)) for _ in range(100)]
            await asyncio.sleep(0.3)  # the first transactions are under way
            outcome = await asyncio.to_thread(other_write)
            assert sum(await asyncio.wait_for(asyncio.gather(*units), 30)) == 100
            return outcome
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    assert asyncio.run(scenario()) in ("wrote", "contended")
    assert store.health.healthy and other.health.healthy
    count, units = _batches(metrics)
    assert units == 100 and count >= 10  # at most ~5 slow units per transaction
    store.close()
    other.close()
