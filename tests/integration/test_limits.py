"""Each configured limit over real gRPC on loopback: the status, the message, exact counts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import grpc
import pytest
from grpc import aio

from tests.conftest import async_eventually as eventually
from tests.integration.conftest import TOKEN, agent_config, running_collector
from tripline.agent.runner import AgentRunner
from tripline.collector import agent_instances, agents_store
from tripline.collector.app import CollectorApp
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

# The test client may send more than the collector accepts, to be refused by it.
CLIENT_OPTIONS = [("grpc.max_send_message_length", 64 * 2**20)]


class Agent:
    """A hand-driven agent: enrolled once, then streams carrying exactly what a test says."""

    def __init__(self, stub: pb_grpc.CollectorStub, enrolled: pb.EnrollResponse) -> None:
        self.stub = stub
        self.agent_id = enrolled.agent_id
        self.metadata = (("authorization", f"Bearer {enrolled.credential}"),)

    @classmethod
    async def enroll(cls, channel: aio.Channel, hostname: str = "pc") -> Agent:
        stub = pb_grpc.CollectorStub(channel)
        enrolled = await stub.Enroll(
            pb.EnrollRequest(enrollment_token=TOKEN, host=pb.HostInfo(hostname=hostname)),
            timeout=10,
        )
        return cls(stub, enrolled)

    async def open(self, instance: str = "i-1") -> aio.StreamStreamCall:
        call = self.stub.Connect(metadata=self.metadata)
        hello = pb.Hello(instance_id=instance, sent_at_seconds=time.time())
        await call.write(pb.AgentMessage(hello=hello))
        reply = await call.read()
        assert reply.WhichOneof("kind") == "welcome", reply
        return call


def report(seq: int, samples: Iterable[pb.Sample] = (), instance: str = "i-1") -> pb.AgentMessage:
    return pb.AgentMessage(
        report=pb.Report(
            instance_id=instance, seq=seq, collected_at_seconds=time.time(), samples=samples
        )
    )


def sample(name: str, value: float = 1.0, **labels: str) -> pb.Sample:
    return pb.Sample(name=name, value=value, labels=labels)


async def acked(call: aio.StreamStreamCall, message: pb.AgentMessage) -> int:
    await call.write(message)
    reply = await call.read()
    assert reply.WhichOneof("kind") == "ack", reply
    return int(reply.ack.seq)


async def refused(
    call: aio.StreamStreamCall, message: pb.AgentMessage | None = None
) -> aio.AioRpcError:
    if message is not None:
        await call.write(message)
    with pytest.raises(aio.AioRpcError) as err:
        await call.read()
    return err.value


def count(app: CollectorApp, name: str, **labels: str) -> float:
    value = app.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_oversized_message_is_refused_by_grpc_with_its_size(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            running_collector(tmp_path / "c", max_message_bytes=65536) as app,
            aio.insecure_channel(f"127.0.0.1:{app.grpc_port}", options=CLIENT_OPTIONS) as ch,
        ):
            agent = await Agent.enroll(ch)
            call = await agent.open()
            assert await acked(call, report(1, [sample("process_count", 7)])) == 1
            big = report(2, [sample("m", 1.0, path="x" * 70_000)])
            size = big.ByteSize()
            err = await refused(call, big)
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.details() == f"SERVER: Received message larger than max ({size} vs. 65536)"
            with app.store.read() as conn:
                assert agent_instances.applied_seq(conn, agent.agent_id, "i-1") == 1
            # the connection survives: the same agent reconnects and reports
            call = await agent.open()
            assert await acked(call, report(2, [sample("process_count", 8)])) == 2
            await call.done_writing()

    asyncio.run(scenario())


def test_samples_per_report_over_the_limit_are_rejected_with_the_seq(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            running_collector(tmp_path / "c", max_samples_per_report=100) as app,
            aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch,
        ):
            agent = await Agent.enroll(ch)
            call = await agent.open()
            exactly = [sample(f"m{i}") for i in range(100)]
            assert await acked(call, report(1, exactly)) == 1
            err = await refused(call, report(2, [*exactly, sample("m100")]))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.details() == "report seq 2: 101 samples, more than the limit of 100"
            assert ("tripline-rejected-seq", "2") in tuple(err.trailing_metadata() or ())
            assert count(app, "tripline_collector_reports_rejected_total", reason="size") == 1
            with app.store.read() as conn:
                assert agent_instances.applied_seq(conn, agent.agent_id, "i-1") == 1
            assert "m100" not in {name for name, _ in app.state.agents[agent.agent_id].series}

    asyncio.run(scenario())


def test_series_per_agent_cap_drops_new_series_and_applies_the_rest(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            running_collector(tmp_path / "c", max_series_per_agent=10) as app,
            aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch,
        ):
            agent, other = await Agent.enroll(ch, "pc-1"), await Agent.enroll(ch, "pc-2")
            call = await agent.open()
            eight = [sample("filesystem_used_ratio", 0.5, mountpoint=f"/m{i}") for i in range(8)]
            assert await acked(call, report(1, eight)) == 1
            five_new = [sample("disk_read_bytes_total", 1.0, device=f"sd{c}") for c in "abcde"]
            assert await acked(call, report(2, [*eight, *five_new])) == 2
            live = app.state.agents[agent.agent_id]
            assert len(live.series) == 10
            assert sorted(labels for name, labels in live.current if name.startswith("disk")) == [
                (("device", "sda"),),
                (("device", "sdb"),),
            ]
            assert count(app, "tripline_collector_series_dropped_total") == 3
            assert count(app, "tripline_collector_limit_hits_total", limit="series_per_agent") == 1
            # the same report again (next seq): the 2 admitted are known, 3 dropped again
            assert await acked(call, report(3, [*eight, *five_new])) == 3
            assert count(app, "tripline_collector_series_dropped_total") == 6
            assert count(app, "tripline_collector_limit_hits_total", limit="series_per_agent") == 2
            # a duplicate seq is not applied, so nothing is counted as dropped for it
            assert await acked(call, report(3, [*eight, *five_new])) == 3
            assert count(app, "tripline_collector_series_dropped_total") == 6
            with app.store.read() as conn:
                assert agent_instances.applied_seq(conn, agent.agent_id, "i-1") == 3
            # the cap is per agent: another agent has its own 10
            other_call = await other.open()
            assert await acked(other_call, report(1, [*eight, *five_new][:10])) == 1
            assert len(app.state.agents[other.agent_id].series) == 10
            assert count(app, "tripline_collector_series_dropped_total") == 6
            await call.done_writing()
            await other_call.done_writing()

    asyncio.run(scenario())


def test_stepping_collected_at_cannot_churn_series_past_the_cap(tmp_path: Path) -> None:
    """An agent that dates every other report far back (a fresh spool instance each
    time, as a backlog replay looks) and brings fresh series in every report: the cap
    holds the series it sent within a window of collector time, so no more than the cap
    get in, whatever its clock says."""

    async def scenario() -> None:
        async with (
            running_collector(tmp_path / "c", max_series_per_agent=20) as app,
            aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch,
        ):
            agent = await Agent.enroll(ch, "pc-1")
            window = app.state.window
            sent = 0
            for round_ in range(10):
                call = await agent.open(instance=f"i-{round_}")
                for seq, collected_at in ((1, time.time() - 100 * window), (2, time.time())):
                    fresh = [sample(f"churn_{round_}_{seq}_{i}") for i in range(20)]
                    sent += len(fresh)
                    message = pb.AgentMessage(
                        report=pb.Report(
                            instance_id=f"i-{round_}",
                            seq=seq,
                            collected_at_seconds=collected_at,
                            samples=fresh,
                        )
                    )
                    assert await acked(call, message) == seq
                    assert len(app.state.agents[agent.agent_id].series) <= 20
                await call.done_writing()
            admitted = sent - count(app, "tripline_collector_series_dropped_total")
            assert admitted == 20

    asyncio.run(scenario())


def test_reports_per_second_over_the_bucket_get_resource_exhausted_and_retry_after(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with (
            running_collector(
                tmp_path / "c",
                max_reports_per_second_per_agent=0.001,
                max_report_burst_per_agent=5,
            ) as app,
            aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch,
        ):
            agent, other = await Agent.enroll(ch, "pc-1"), await Agent.enroll(ch, "pc-2")
            call = await agent.open()
            for seq in range(1, 6):
                assert await acked(call, report(seq, [sample("process_count", seq)])) == seq
            err = await refused(call, report(6, [sample("process_count", 6)]))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # half a burst (2.5 reports) at 0.001/s
            assert err.details() == (
                "report seq 6 not applied: this agent sends more than "
                "max_reports_per_second_per_agent=0.001 (burst 5); resend after 2500s"
            )
            assert ("retry-after", "2500") in tuple(err.trailing_metadata() or ())
            with app.store.read() as conn:
                assert agent_instances.applied_seq(conn, agent.agent_id, "i-1") == 5
            # reconnecting does not refill the bucket
            call = await agent.open()
            err = await refused(call, report(6, [sample("process_count", 6)]))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            with app.store.read() as conn:
                assert agent_instances.applied_seq(conn, agent.agent_id, "i-1") == 5
            assert (
                count(app, "tripline_collector_limit_hits_total", limit="reports_per_second") == 2
            )
            assert (
                count(app, "tripline_collector_reports_rejected_total", reason="resource_exhausted")
                == 2
            )
            # another agent has its own bucket
            other_call = await other.open()
            for seq in range(1, 6):
                assert await acked(other_call, report(seq)) == seq
            await other_call.done_writing()

    asyncio.run(scenario())


class _Times(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[float, str, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append((record.created, record.getMessage(), getattr(record, "retry_after", 0)))

    def last(self) -> str:
        """The latest of "agent connected" and "report rate limited"."""
        kinds = ("agent connected", "report rate limited")
        return next((m for _, m, _ in reversed(self.events) if m in kinds), "")


def test_agent_honours_retry_after_and_loses_no_report(tmp_path: Path) -> None:
    times = _Times()
    server_log = logging.getLogger("tripline.collector.server")
    server_log.addHandler(times)
    previous = server_log.level
    server_log.setLevel(logging.INFO)

    async def scenario() -> None:
        # A backlog of 20 reports collected during an outage, replayed against a bucket of
        # 6 at 4/s: refused once the bucket is empty, each time told to wait 1 s.
        async with running_collector(
            tmp_path / "c", max_reports_per_second_per_agent=4.0, max_report_burst_per_agent=6
        ) as app:
            runner = AgentRunner(agent_config(tmp_path / "a", app.grpc_port))
            backlog = [runner.collect_once() for _ in range(20)]
            assert backlog == list(range(1, 21))
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            # drained, and back on a stream after the latest refusal
            await eventually(
                lambda: (
                    runner.transport.stats.acked_seq >= 20 and times.last() == "agent connected"
                ),
                deadline=30,
            )
            stop.set()
            await task
            assert (
                count(app, "tripline_collector_limit_hits_total", limit="reports_per_second") >= 2
            )
            with app.store.read() as conn:
                (agent,) = agents_store.list_agents(conn)
            # every seq up to the last applied one was applied exactly once (the count is
            # raised just after the commit the store shows, hence the wait)
            with app.store.read() as conn:
                await eventually(
                    lambda: (
                        count(app, "tripline_collector_reports_applied_total")
                        == agent_instances.applied_seq(
                            conn, agent.agent_id, runner.spool.instance_id
                        )
                    )
                )
            with app.store.read() as conn:
                assert (
                    agent_instances.applied_seq(conn, agent.agent_id, runner.spool.instance_id)
                    >= 20
                )
            assert count(app, "tripline_collector_reports_duplicate_total") == 0

    try:
        asyncio.run(scenario())
    finally:
        server_log.removeHandler(times)
        server_log.setLevel(previous)
    limited = [(at, wait) for at, message, wait in times.events if message == "report rate limited"]
    connected = [at for at, message, _ in times.events if message == "agent connected"]
    assert len(limited) >= 2
    for at, wait in limited:
        assert wait == 1  # ceil((3 tokens - almost none) / 4 per s)
        # the agent's own backoff is 0.05-0.5 s here: only the trailer makes it wait 1 s
        later = [c for c in connected if c > at]
        assert later, "the agent never came back after being refused"
        assert later[0] - at >= wait - 0.05, (at, later[0])


def test_concurrent_streams_over_the_cap_get_resource_exhausted(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            running_collector(tmp_path / "c", max_streams=2) as app,
            aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch,
        ):
            a, b, c = [await Agent.enroll(ch, f"pc-{i}") for i in range(3)]
            call_a, call_b = await a.open(), await b.open()
            call_c = c.stub.Connect(metadata=c.metadata)
            await call_c.write(
                pb.AgentMessage(hello=pb.Hello(instance_id="i-1", sent_at_seconds=time.time()))
            )
            err = await refused(call_c)
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.details() == (
                "this collector serves its limit of 2 agent streams (max_streams): the agent "
                "retries later; add a collector behind the load balancer or raise max_streams"
            )
            assert ("retry-after", "5") in tuple(err.trailing_metadata() or ())
            assert count(app, "tripline_collector_limit_hits_total", limit="streams") == 1
            # an agent replacing its own stream adds none: allowed at the cap
            call_a2 = await a.open()
            err = await refused(call_a)
            assert err.code() == grpc.StatusCode.ALREADY_EXISTS
            assert await acked(call_a2, report(1)) == 1
            assert await acked(call_b, report(1)) == 1
            # once one leaves, the third gets in
            await call_b.done_writing()
            await eventually(lambda: len(app.service.streams) == 1)
            call_c = await c.open()
            assert await acked(call_c, report(1)) == 1
            assert count(app, "tripline_collector_limit_hits_total", limit="streams") == 1
            with app.store.read() as conn:
                assert agent_instances.applied_seq(conn, c.agent_id, "i-1") == 1
            await call_a2.done_writing()
            await call_c.done_writing()

    asyncio.run(scenario())


def test_cancelling_before_the_welcome_releases_the_stream_slot(tmp_path: Path) -> None:
    """Hello, then cancel at once, many times and at varied moments: every slot comes back,
    so agents up to max_streams still get in (before, each leaked until everyone was
    refused with RESOURCE_EXHAUSTED)."""

    async def scenario() -> None:
        async with (
            running_collector(
                tmp_path / "c",
                max_streams=4,
                # hundreds of streams on purpose: the Hello rate limits have their own test
                max_hellos_per_second_per_agent=1e6,
                max_connects_per_second_per_peer=1e6,
            ) as app,
            aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch,
        ):
            agents = [await Agent.enroll(ch, f"pc-{i}") for i in range(8)]
            for round_ in range(40):
                calls = []
                for agent in agents:
                    call = agent.stub.Connect(metadata=agent.metadata)
                    hello = pb.Hello(instance_id="i-1", sent_at_seconds=time.time())
                    await call.write(pb.AgentMessage(hello=hello))
                    calls.append(call)
                # cancel at different points of open_session / the Welcome write
                await asyncio.sleep((round_ % 8) * 0.001)
                for call in calls:
                    call.cancel()
            await eventually(lambda: not app.service.streams, deadline=10)
            await eventually(
                lambda: count(app, "tripline_collector_streams_open") == 0, deadline=10
            )
            calls = [await agent.open() for agent in agents[:4]]
            for call in calls:
                assert await acked(call, report(1)) == 1
            assert count(app, "tripline_collector_streams_open") == 4
            for call in calls:
                await call.done_writing()

    asyncio.run(scenario())


def test_new_streams_are_rate_limited_per_agent_and_per_peer_address(tmp_path: Path) -> None:
    """A token bucket per agent id and one per peer IP (the port ignored): past the burst,
    RESOURCE_EXHAUSTED with retry-after, counted; other agents and addresses unaffected."""

    async def scenario() -> None:
        async with (
            running_collector(
                tmp_path / "c",
                max_hellos_per_second_per_agent=0.01,
                max_hello_burst_per_agent=3,
                max_connects_per_second_per_peer=0.01,
                max_connect_burst_per_peer=7,
            ) as app,
            aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch,
        ):
            a = await Agent.enroll(ch, "pc-a")
            # b on its own connection: another source port, the same address
            ch_b = aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
            b = await Agent.enroll(ch_b, "pc-b")
            for _ in range(3):
                call = await a.open()
                await call.done_writing()
            call = a.stub.Connect(metadata=a.metadata)
            await call.write(pb.AgentMessage(hello=pb.Hello(instance_id="i-1")))
            err = await refused(call)
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.details() == (
                "too many new streams from this agent (max_hellos_per_second_per_agent=0.01, "
                "burst 3); reconnect after 150s"
            )
            assert ("retry-after", "150") in tuple(err.trailing_metadata() or ())
            assert count(app, "tripline_collector_limit_hits_total", limit="hellos_per_agent") == 1
            # another agent from the same address still gets in, until the address has
            # spent its 7 (a's refused stream took one too: the address is judged first)
            for _ in range(3):
                call = await b.open()
                await call.done_writing()
            call = b.stub.Connect(metadata=b.metadata)
            await call.write(pb.AgentMessage(hello=pb.Hello(instance_id="i-1")))
            err = await refused(call)
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert err.details().startswith(
                "too many new streams from this address (max_connects_per_second_per_peer=0.01"
            ), err.details()
            assert count(app, "tripline_collector_limit_hits_total", limit="connects_per_peer") == 1
            assert count(app, "tripline_collector_limit_hits_total", limit="hellos_per_agent") == 1
            await ch_b.close()

    asyncio.run(scenario())


MALFORMED_BODIES: dict[str, tuple[bytes, str]] = {
    "lone surrogate": (b'{"text": "\\ud800"}', "lone surrogate"),
    "invalid UTF-8": (b'{"text": "\xff\xfe"}', "must be UTF-8"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "must be a JSON object"),
    "huge float": (b'{"text": 1e999}', "out of range"),
    "NaN": (b'{"text": NaN}', "NaN is not JSON"),
    "Infinity": (b'{"text": -Infinity}', "-Infinity is not JSON"),
    "duplicate keys": (b'{"text": "a", "text": "b"}', "duplicate keys ['text']"),
    "5000-digit number": (b'{"text": ' + b"9" * 5000 + b"}", "must be a JSON object"),
    "top-level list": (b'["text"]', "must be a JSON object"),
    "top-level string": (b'"text"', "must be a JSON object"),
    "truncated": (b'{"text": "a', "must be a JSON object"),
}


def test_malformed_json_bodies_answer_400(tmp_path: Path) -> None:
    """Every kind of broken JSON to an API route that reads a body answers 400 with the
    reason, never 500; the API keeps answering."""
    import httpx

    from tripline.collector import apitokens

    async def scenario() -> None:
        async with running_collector(tmp_path / "c") as app:
            with app.store.transaction() as conn:
                _, secret = apitokens.create_token(conn, "ops", None, actor="t", now=time.time())
            url = f"http://127.0.0.1:{app.http_port}/api/v1/tickets/1/comment"
            auth = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
            async with httpx.AsyncClient() as http:
                for name, (body, reason) in MALFORMED_BODIES.items():
                    reply = await http.post(url, content=body, headers=auth)
                    assert reply.status_code == 400, (name, reply.status_code, reply.text)
                    assert reason in reply.json()["error"], (name, reply.json())
                reply = await http.post(url, json={"text": "fine"}, headers=auth)
                assert reply.status_code == 404, reply.text  # no ticket 1: the body was fine

    asyncio.run(scenario())
