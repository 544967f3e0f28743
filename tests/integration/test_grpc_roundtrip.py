"""Agent and collector in one process over real gRPC on loopback, real SQLite files."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import async_eventually as eventually
from tests.integration.conftest import TOKEN, agent_config, running_collector
from tripline.agent.enroll import EnrollmentFailed
from tripline.agent.runner import AgentRunner
from tripline.agent.spool import Spool
from tripline.collector import agent_instances, agents_store
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc


def test_agent_enrolls_streams_and_spool_drains(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_collector(tmp_path / "c") as app:
            runner = AgentRunner(agent_config(tmp_path / "a", app.grpc_port))
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            await eventually(lambda: runner.transport.stats.acked_seq >= 3)
            with app.store.read() as conn:
                agents = agents_store.list_agents(conn)
            assert [a.customer for a in agents] == ["acme"]
            agent_id = agents[0].agent_id
            instance = runner.spool.instance_id
            with app.store.read() as conn:
                assert agent_instances.applied_seq(conn, agent_id, instance) >= 3
            live = app.state.agents[agent_id]
            assert live.value("memory_total_bytes") and live.value("memory_total_bytes") > 0
            async with httpx.AsyncClient() as client:
                body = (await client.get(f"http://127.0.0.1:{app.http_port}/metrics")).text
            assert f'tripline_agent_up{{agent_id="{agent_id}"' in body
            assert "tripline_memory_total_bytes{" in body
            assert "tripline_collector_reports_applied_total" in body
            async with aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for service in ("", "tripline.v1.Collector"):
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stop.set()
            await task
            # everything the collector applied is gone from the spool; what is left
            # (at most the reports collected after the last ack) is unacknowledged
            spool = Spool(tmp_path / "a" / "spool.db")
            with app.store.read() as conn:
                applied = agent_instances.applied_seq(conn, agent_id, instance)
            assert all(seq > applied for seq, _ in spool.pending(0, 1000))
            spool.close()

    asyncio.run(scenario())


def test_wrong_enrollment_token_is_refused_unauthenticated(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_collector(tmp_path / "c") as app:
            async with aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                stub = pb_grpc.CollectorStub(channel)
                with pytest.raises(aio.AioRpcError) as err:
                    await stub.Enroll(pb.EnrollRequest(enrollment_token="tle_wrong"))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "enrollment refused" in (err.value.details() or "")
            runner = AgentRunner(agent_config(tmp_path / "a", app.grpc_port, token="tle_wrong"))
            with pytest.raises(EnrollmentFailed):
                await runner.run(asyncio.Event())
            with app.store.read() as conn:
                assert agents_store.list_agents(conn) == []

    asyncio.run(scenario())


def test_connect_without_credential_or_hello_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            running_collector(tmp_path / "c") as app,
            aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel,
        ):
            stub = pb_grpc.CollectorStub(channel)
            call = stub.Connect(metadata=(("authorization", "Bearer agt_x.nope"),))
            await call.write(pb.AgentMessage(hello=pb.Hello(instance_id="i")))
            with pytest.raises(aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

            enrolled = await stub.Enroll(pb.EnrollRequest(enrollment_token=TOKEN))
            meta = (("authorization", f"Bearer {enrolled.credential}"),)
            call = stub.Connect(metadata=meta)
            await call.write(
                pb.AgentMessage(report=pb.Report(instance_id="i", seq=1, collected_at_seconds=1))
            )
            with pytest.raises(aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "first message on Connect must be Hello" in (err.value.details() or "")

            # a malformed report is rejected with its seq; nothing from it is stored
            call = stub.Connect(metadata=meta)
            await call.write(
                pb.AgentMessage(hello=pb.Hello(instance_id="i", sent_at_seconds=time.time()))
            )
            welcome = await call.read()
            assert welcome.welcome.agent_id == enrolled.agent_id
            bad = pb.Report(instance_id="i", seq=1, collected_at_seconds=time.time())
            bad.samples.add(name="cpu usage", value=1.0)
            await call.write(pb.AgentMessage(report=bad))
            with pytest.raises(aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid Prometheus name" in (err.value.details() or "")
            assert ("tripline-rejected-seq", "1") in tuple(err.value.trailing_metadata() or ())
            with app.store.read() as conn:
                assert agent_instances.applied_seq(conn, enrolled.agent_id, "i") == 0

            # the collector keeps serving: a good report on a new stream is applied
            call = stub.Connect(metadata=meta)
            await call.write(
                pb.AgentMessage(hello=pb.Hello(instance_id="i", sent_at_seconds=time.time()))
            )
            await call.read()
            good = pb.Report(instance_id="i", seq=1, collected_at_seconds=time.time())
            good.samples.add(name="process_count", value=42)
            await call.write(pb.AgentMessage(report=good))
            ack = await call.read()
            assert ack.ack.seq == 1
            # the same seq again is acknowledged without being applied twice
            await call.write(pb.AgentMessage(report=good))
            assert (await call.read()).ack.seq == 1
            await call.done_writing()
            with app.store.read() as conn:
                assert agent_instances.applied_seq(conn, enrolled.agent_id, "i") == 1
            assert app.metrics.reports_duplicate._value.get() == 1

    asyncio.run(scenario())
