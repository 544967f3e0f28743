"""Diagnostic snapshots over real gRPC on loopback: asked when a rule goes pending or
fires, answered by a real AgentRunner, kept with the ticket; asked by hand through the
API; and what an agent that does not answer, or answers what nobody asked, costs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from grpc import aio

from tests.conftest import async_eventually as eventually
from tests.integration.conftest import TOKEN, agent_config, running_collector
from tripline.agent.runner import AgentRunner
from tripline.collector import agents_store, apitokens, ticketmodel, ticketqueries
from tripline.collector.app import CollectorApp
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

RULES = """\
rules:
  - name: MemoryPresent
    metric: memory_total_bytes
    op: ">"
    threshold: 0
    for: {hold}
    severity: warning
    tier: 1
    summary: "{{host}} has memory"
"""


def _agent_config(state_dir: Path, port: int) -> Any:
    return agent_config(state_dir, port, collect_processes=True)


@contextlib.asynccontextmanager
async def _running(
    tmp_path: Path, hold: str = "0s", answer: bool = True, **flags: object
) -> AsyncIterator[tuple[CollectorApp, AgentRunner]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.format(hold=hold))
    async with running_collector(tmp_path / "c", rules=rules, **flags) as app:
        runner = AgentRunner(_agent_config(tmp_path / "a", app.grpc_port))
        if not answer:
            # An agent from before snapshots: its transport ignores the unknown request.
            runner.transport.on_snapshot_request = None
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await eventually(lambda: runner.transport.stats.acked_seq >= 1)
            yield app, runner
        finally:
            stop.set()
            await task


def _ticket(app: CollectorApp) -> ticketmodel.Ticket | None:
    with app.store.read() as conn:
        found = ticketqueries.list_tickets(conn, status="open")
        return ticketqueries.get_ticket(conn, found[0].id) if found else None


def _snapshotted(app: CollectorApp) -> bool:
    ticket = _ticket(app)
    return ticket is not None and ticket.snapshot is not None


def _counter(app: CollectorApp, result: str) -> float:
    value = app.registry.get_sample_value("tripline_collector_snapshots_total", {"result": result})
    return value or 0.0


def test_a_ticket_opened_before_the_snapshot_gets_it_when_it_arrives(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _running(tmp_path, hold="0s") as (app, runner):
            await eventually(lambda: _ticket(app) is not None)
            await eventually(lambda: _snapshotted(app))
            ticket = _ticket(app)
            assert ticket is not None and ticket.snapshot is not None
            snap = ticket.snapshot
            assert snap["processes"] > 0
            assert snap["top_memory"], "the agent's own process at least"
            assert 1.0 <= snap["cpu_span_seconds"] <= 3.0
            assert snap["uptime_seconds"] > 0
            assert any(f["mountpoint"] for f in snap["filesystems"])
            assert ticket.snapshot_taken_at is not None
            assert ticket.opened_at <= ticket.snapshot_taken_at <= app.clock()
            assert ticket.to_dict()["snapshot"] == snap
            assert runner.snapshotter.stats.answered == 1
            assert _counter(app, "requested") == 1 and _counter(app, "answered") == 1

    asyncio.run(scenario())


def test_a_snapshot_taken_while_pending_is_on_the_ticket_when_it_opens(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _running(tmp_path, hold="3s") as (app, runner):
            # Asked when the rule went pending, answered before the 3 s hold ends.
            await eventually(lambda: runner.snapshotter.stats.answered == 1)
            assert _ticket(app) is None
            await eventually(lambda: _ticket(app) is not None)
            ticket = _ticket(app)
            assert ticket is not None and ticket.snapshot is not None
            assert ticket.snapshot_taken_at is not None
            assert ticket.snapshot_taken_at <= ticket.opened_at
            # one request for pending and firing: the second falls in min_interval
            assert _counter(app, "requested") == 1
            assert _counter(app, "rate_limited") >= 1

    asyncio.run(scenario())


async def _api_token(app: CollectorApp, scope: list[str] | None) -> dict[str, str]:
    with app.store.transaction() as conn:
        _, secret = apitokens.create_token(
            conn, f"ops-{scope}", scope, actor="test", now=app.clock()
        )
    return {"Authorization": f"Bearer {secret}"}


def test_an_operator_asks_through_the_api(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with _running(tmp_path, hold="1h", snapshot_min_interval=3600) as (app, runner):
            with app.store.read() as conn:
                agent_id = agents_store.list_agents(conn)[0].agent_id
            base = f"http://127.0.0.1:{app.http_port}/api/v1"
            ops = await _api_token(app, ["acme"])
            others = await _api_token(app, ["globex"])
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                # The rule went pending at the first report: that request may be in
                # flight; the operator's call then waits for its answer.
                first = await http.post(f"/agents/{agent_id}/snapshot", headers=ops, json={})
                assert first.status_code == 200, first.text
                body = first.json()
                assert body["agent_id"] == agent_id
                assert body["snapshot"]["processes"] > 0
                # Asked again within snapshot_min_interval: the same snapshot, not a new
                # measurement on the PC.
                again = await http.post(f"/agents/{agent_id}/snapshot", headers=ops)
                assert again.status_code == 200
                assert again.json()["request_id"] == body["request_id"]
                assert runner.snapshotter.stats.answered == 1
                hidden = await http.post(f"/agents/{agent_id}/snapshot", headers=others)
                assert hidden.status_code == 404
                unknown = await http.post("/agents/nosuchagent/snapshot", headers=ops)
                assert unknown.status_code == 404
                anonymous = await http.post(f"/agents/{agent_id}/snapshot")
                assert anonymous.status_code == 401
            with app.store.read() as conn:
                audit = [(e.action, e.target) for e in apitokens.audit_entries(conn)]
            assert audit.count(("agent.snapshot", f"agent/{agent_id}")) == 2

    asyncio.run(scenario())


def test_an_agent_that_does_not_answer_costs_a_504_and_nothing_else(tmp_path: Path) -> None:
    async def scenario() -> None:
        flags = {"snapshot_timeout": 1, "snapshot_min_interval": 0.01}
        async with _running(tmp_path, hold="1h", answer=False, **flags) as (app, runner):
            with app.store.read() as conn:
                agent_id = agents_store.list_agents(conn)[0].agent_id
            base = f"http://127.0.0.1:{app.http_port}/api/v1"
            ops = await _api_token(app, None)
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                silent = await http.post(f"/agents/{agent_id}/snapshot", headers=ops)
                assert silent.status_code == 504
                assert "did not answer" in silent.json()["error"]
                # the stream goes on: reports are still acknowledged
                acked = runner.transport.stats.acked_seq
                await eventually(lambda: runner.transport.stats.acked_seq > acked + 2)
                assert runner.transport.stats.disconnects == 0
                assert runner.snapshotter.stats.answered == 0

    asyncio.run(scenario())


def test_an_offline_agent_is_a_504_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.format(hold="1h"))
        async with running_collector(tmp_path / "c", rules=rules) as app:
            runner = AgentRunner(_agent_config(tmp_path / "a", app.grpc_port))
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            await eventually(lambda: runner.transport.stats.acked_seq >= 1)
            stop.set()
            await task
            with app.store.read() as conn:
                agent_id = agents_store.list_agents(conn)[0].agent_id
            await eventually(lambda: not app.pipeline.snapshots.connected(agent_id))
            ops = await _api_token(app, None)
            base = f"http://127.0.0.1:{app.http_port}/api/v1"
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                offline = await http.post(f"/agents/{agent_id}/snapshot", headers=ops)
            assert offline.status_code == 504
            assert "no open stream" in offline.json()["error"]

    asyncio.run(scenario())


def test_unsolicited_and_invalid_snapshots_are_refused_and_the_stream_goes_on(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.format(hold="1h"))
        async with running_collector(tmp_path / "c", rules=rules) as app:
            async with aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                stub = pb_grpc.CollectorStub(channel)
                enrolled = await stub.Enroll(
                    pb.EnrollRequest(enrollment_token=TOKEN, host=pb.HostInfo(hostname="pc"))
                )
                call = stub.Connect(metadata=(("authorization", f"Bearer {enrolled.credential}"),))
                await call.write(
                    pb.AgentMessage(
                        hello=pb.Hello(
                            agent_version="x", instance_id="i1", sent_at_seconds=app.clock()
                        )
                    )
                )
                assert (await call.read()).WhichOneof("kind") == "welcome"
                # nobody asked for this one
                await call.write(
                    pb.AgentMessage(snapshot=pb.Snapshot(request_id="0" * 32, processes=1))
                )
                # and this one is not even a request id the collector could have issued
                await call.write(
                    pb.AgentMessage(snapshot=pb.Snapshot(request_id="rm -rf /", processes=1))
                )
                report = pb.Report(
                    instance_id="i1",
                    seq=1,
                    collected_at_seconds=app.clock(),
                    samples=[pb.Sample(name="memory_total_bytes", value=1.0)],
                )
                await call.write(pb.AgentMessage(report=report))
                kinds = []
                while True:
                    message = await call.read()
                    kinds.append(message.WhichOneof("kind"))
                    if kinds[-1] == "ack":
                        break
                # the collector asked for a snapshot (the rule went pending), then acked
                assert kinds == ["snapshot_request", "ack"]
                call.cancel()
            assert _counter(app, "unsolicited") == 1
            assert _counter(app, "invalid") == 1

    asyncio.run(scenario())


def test_a_flood_of_snapshots_is_cut_like_a_flood_of_reports(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_collector(tmp_path / "c", max_report_burst_per_agent=5) as app:
            async with aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                stub = pb_grpc.CollectorStub(channel)
                enrolled = await stub.Enroll(
                    pb.EnrollRequest(enrollment_token=TOKEN, host=pb.HostInfo(hostname="pc"))
                )
                call = stub.Connect(metadata=(("authorization", f"Bearer {enrolled.credential}"),))
                hello = pb.Hello(agent_version="x", instance_id="i1", sent_at_seconds=app.clock())
                await call.write(pb.AgentMessage(hello=hello))
                assert (await call.read()).WhichOneof("kind") == "welcome"
                flood = pb.AgentMessage(snapshot=pb.Snapshot(request_id="0" * 32))
                with contextlib.suppress(aio.AioRpcError, aio.UsageError):
                    for _ in range(50):
                        await call.write(flood)

                # The collector ends the stream; the client may see INTERNAL instead of
                # RESOURCE_EXHAUSTED while it is still writing (grpc/grpc#36066), so the
                # refusal is checked on the collector's side.
                async def drained() -> None:
                    with contextlib.suppress(aio.AioRpcError):
                        while True:
                            message = await call.read()
                            assert message is not aio.EOF, "the stream ended cleanly"

                await asyncio.wait_for(drained(), 10)  # TimeoutError: the stream went on
            limited = app.registry.get_sample_value(
                "tripline_collector_limit_hits_total", {"limit": "reports_per_second"}
            )
            assert limited == 1
            assert _counter(app, "rate_limited") == 1
            assert _counter(app, "unsolicited") <= 6

    asyncio.run(scenario())
