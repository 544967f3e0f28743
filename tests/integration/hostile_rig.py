"""The hostile-input rig: one collector per test module in a background event loop, a real
agent reporting to it the whole time, and raw Connect streams that can send any bytes
(test_hostile_input.py, test_series_table.py). Import the fixtures `rig` and
`good_agent_unaffected` (autouse: every test checks the real agent was not disturbed)
into the test module."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest

from tests.integration.conftest import TOKEN, agent_config, collector_config
from tripline.agent.runner import AgentRunner
from tripline.collector import agent_instances, alert_states, ticketqueries
from tripline.collector.app import CollectorApp
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

CONNECT = "/tripline.v1.Collector/Connect"
HELLO_TIMEOUT = 0.5
INSTANCE = "hostile-1"
# Any sample of this metric opens a ticket at once: the tripwire for "nothing stored".
TRIPWIRE = "hostile_tripwire"
RULES = f"""
rules:
  - name: Tripwire
    metric: {TRIPWIRE}
    op: ">"
    threshold: 0
    for: 0s
    severity: critical
    tier: 1
    summary: "{{host}}: a rejected report was applied"
"""
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    trailers: dict[str, str]
    replies: list[pb.CollectorMessage]


@dataclass
class Rig:
    """The module's collector, its well-behaved agent and a hostile agent's credential."""

    app: CollectorApp
    loop: asyncio.AbstractEventLoop
    channel: grpc.Channel
    runner: AgentRunner
    hostile_id: str
    metadata: tuple[tuple[str, str], ...]

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def converse(
        self,
        messages: list[bytes],
        *,
        metadata: tuple[tuple[str, str], ...] | None = None,
        hold_open: threading.Event | None = None,
    ) -> Outcome:
        """Send raw messages on one Connect stream, half-close (or hold the stream open
        until ``hold_open`` is set) and read every reply up to the status."""
        raw = self.channel.stream_stream(
            CONNECT, request_serializer=None, response_deserializer=None
        )

        def requests() -> Iterator[bytes]:
            yield from messages
            if hold_open is not None:
                hold_open.wait(10)

        call = raw(requests(), metadata=self.metadata if metadata is None else metadata, timeout=20)
        replies: list[pb.CollectorMessage] = []
        try:
            for reply in call:
                replies.append(pb.CollectorMessage.FromString(reply))
        except grpc.RpcError:
            pass
        return Outcome(
            call.code(), call.details() or "", dict(call.trailing_metadata() or ()), replies
        )

    def snapshot(self) -> tuple[object, ...]:
        """Everything a hostile report could have changed in the store and live state."""
        with self.app.store.read() as conn:
            tripped = [
                (t.id, t.status)
                for t in ticketqueries.list_tickets(conn, agent_id=self.hostile_id)
                if t.rule == "Tripwire"
            ]
        with self.app.store.read() as conn:
            alerts = {
                key: state
                for key, state in alert_states.load(conn).items()
                if key.agent_id == self.hostile_id and key.rule == "Tripwire"
            }
        live = self.app.state.agents.get(self.hostile_id)
        series = frozenset(live.series) if live is not None else frozenset()
        with self.app.store.read() as conn:
            return (
                tripped,
                alerts,
                agent_instances.applied_seq(conn, self.hostile_id, INSTANCE),
                series,
            )

    def rejected_count(self, reason: str) -> float:
        value = self.app.registry.get_sample_value(
            "tripline_collector_reports_rejected_total", {"reason": reason}
        )
        return value or 0.0


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "rules.yaml").write_text(RULES)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    async def start() -> tuple[CollectorApp, AgentRunner, asyncio.Event]:
        app = CollectorApp(
            collector_config(
                tmp / "c",
                rules=tmp / "rules.yaml",
                hello_timeout=HELLO_TIMEOUT,
                # the hostile agent reports rarely: no offline ticket in the middle of a test
                offline_after=3600,
                # the rate limit has its own tests; here it would only slow the fuzzing
                max_reports_per_second_per_agent=1e6,
                max_hellos_per_second_per_agent=1e6,
                max_connects_per_second_per_peer=1e6,
            )
        )
        await app.start()
        return app, AgentRunner(agent_config(tmp / "a", app.grpc_port)), asyncio.Event()

    app, runner, stop = run(start())
    agent_task = asyncio.run_coroutine_threadsafe(runner.run(stop), loop)
    channel = grpc.insecure_channel(
        f"127.0.0.1:{app.grpc_port}", options=[("grpc.max_send_message_length", 64 * 2**20)]
    )
    enrolled = pb_grpc.CollectorStub(channel).Enroll(
        pb.EnrollRequest(enrollment_token=TOKEN, host=pb.HostInfo(hostname="hostile")),
        timeout=10,
    )
    rig = Rig(
        app=app,
        loop=loop,
        channel=channel,
        runner=runner,
        hostile_id=enrolled.agent_id,
        metadata=(("authorization", f"Bearer {enrolled.credential}"),),
    )
    wait_until(lambda: runner.transport.stats.acked_seq >= 1)
    try:
        yield rig
    finally:
        channel.close()
        loop.call_soon_threadsafe(stop.set)
        agent_task.result(10)
        run(app.stop(grace=0.1))
        run(_cancel_rest())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


async def _cancel_rest() -> None:
    rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


def wait_until(check: Any, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {deadline}s")
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def good_agent_unaffected(rig: Rig) -> Iterator[None]:
    """Around every test: the well-behaved agent's stream stays up and keeps applying."""
    stats = rig.runner.transport.stats
    connects, disconnects, acked = stats.connects, stats.disconnects, stats.acked_seq
    yield
    wait_until(lambda: stats.acked_seq > acked)
    assert (stats.connects, stats.disconnects) == (connects, disconnects), stats.last_error
    assert stats.connected


def hello(instance: str = INSTANCE) -> bytes:
    return pb.AgentMessage(
        hello=pb.Hello(instance_id=instance, sent_at_seconds=time.time())
    ).SerializeToString()


def report_msg(seq: int, samples: list[pb.Sample], **fields: Any) -> pb.AgentMessage:
    values: dict[str, Any] = {
        "instance_id": INSTANCE,
        "seq": seq,
        "collected_at_seconds": time.time(),
        **fields,
    }
    return pb.AgentMessage(report=pb.Report(samples=samples, **values))


def tripwire() -> pb.Sample:
    return pb.Sample(name=TRIPWIRE, value=1.0)


def next_seq(rig: Rig) -> int:
    with rig.app.store.read() as conn:
        return agent_instances.applied_seq(conn, rig.hostile_id, INSTANCE) + 1


def assert_actionable(out: Outcome) -> None:
    assert out.details, out
    assert "internal error" not in out.details
    assert "Unexpected <class" not in out.details  # grpc's text for an escaped exception
