"""A normal reconnect is routine: not an ERROR line and not an evaluation error."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc
import pytest
from grpc import aio

from tests.conftest import async_eventually as eventually
from tests.integration.conftest import TOKEN, agent_config, running_collector
from tripline.agent.runner import AgentRunner
from tripline.collector import reportstream
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc


def test_superseded_and_cancelled_streams_are_not_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An agent whose old connection is still open when it reconnects (a blackholed
    network, a laptop waking up) supersedes its own stream; an agent that stops cancels
    it. Both end a stream the collector was reading from."""

    async def hello(call: aio.StreamStreamCall) -> None:
        await call.write(
            pb.AgentMessage(hello=pb.Hello(instance_id="i", sent_at_seconds=time.time()))
        )
        assert (await call.read()).WhichOneof("kind") == "welcome"

    async def scenario() -> None:
        async with (
            running_collector(tmp_path / "c") as app,
            aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
        ):
            stub = pb_grpc.CollectorStub(channel)
            enrolled = await stub.Enroll(pb.EnrollRequest(enrollment_token=TOKEN))
            meta = (("authorization", f"Bearer {enrolled.credential}"),)
            old = stub.Connect(metadata=meta)
            await hello(old)
            for seq in range(1, 4):
                report = pb.Report(instance_id="i", seq=seq, collected_at_seconds=time.time())
                report.samples.add(name="process_count", value=float(seq))
                await old.write(pb.AgentMessage(report=report))
                assert (await old.read()).ack.seq == seq
                new = stub.Connect(metadata=meta)
                await hello(new)
                with pytest.raises(aio.AioRpcError) as err:
                    await old.read()
                assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
                old = new
            old.cancel()
            # the collector notices the cancel and drops the stream
            deadline = time.monotonic() + 10
            while app.service.streams and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert not app.service.streams
            assert app.metrics.evaluation_errors._value.get() == 0

    with caplog.at_level(logging.INFO, logger="tripline.collector"):
        asyncio.run(scenario())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert any(r.getMessage() == "agent disconnected" for r in caplog.records)


def _reconnects(runner: AgentRunner) -> float:
    (sample,) = (s for s in runner._self_samples() if s.name == "agent_reconnects_total")
    return sample.value


def test_agent_reconnects_total_counts_reconnects_not_the_first_connect(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_collector(tmp_path / "c") as app:
            runner = AgentRunner(agent_config(tmp_path / "a", app.grpc_port))
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            stats = runner.transport.stats
            await eventually(lambda: stats.connected)
            assert _reconnects(runner) == 0.0
            # the collector ends the stream (as it does on shutdown); the agent comes back
            (stream,) = app.service.streams.values()
            stream.send(reportstream.END)
            await eventually(lambda: stats.disconnects >= 1 and stats.connected)
            assert _reconnects(runner) == 1.0
            stop.set()
            await task

    asyncio.run(scenario())
