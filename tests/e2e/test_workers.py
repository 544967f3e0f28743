"""`tripline collector --workers 2`: one port, one page, one ticket per problem, each
report applied once, whichever worker a PC's connection lands on.

A real collector process with two worker processes on SQLite; PCs are gRPC clients in
this test, one channel (one TCP connection) each, so the kernel spreads them over the
workers; /metrics and the tickets are read as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from grpc import aio

from tests.e2e.conftest import Cluster, Collector, eventually
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

TOKEN = "tle_acme_workers_e2e_Qm7Vq2ZrT9xLk4PbN8sWd3Hc"
PCS = 16
# each channel its own TCP connection, as on separate PCs (channels to one target in one
# process share a connection by default)
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
RULES = """\
rules:
  - name: MemoryHigh
    metric: memory_used_ratio
    op: ">"
    threshold: 0.9
    for: 0s
    severity: warning
    tier: 1
    summary: "{host}: memory {value:.0%}"
"""


class Pc:
    """One simulated PC: enrolled once, one channel per connection."""

    def __init__(self, address: str, n: int) -> None:
        self.address = address
        self.host = pb.HostInfo(hostname=f"pc-{n:02d}", os="Linux", cpu_count=4)
        self.agent_id = ""
        self.credential = ""

    async def enroll(self) -> None:
        async with aio.insecure_channel(self.address) as channel:
            stub = pb_grpc.CollectorStub(channel)
            enrolled = await stub.Enroll(pb.EnrollRequest(enrollment_token=TOKEN, host=self.host))
        self.agent_id, self.credential = enrolled.agent_id, enrolled.credential

    async def connect(self) -> None:
        self.channel = aio.insecure_channel(self.address, options=OWN_CONNECTION)
        stub = pb_grpc.CollectorStub(self.channel)
        self.call = stub.Connect(metadata=(("authorization", f"Bearer {self.credential}"),))
        hello = pb.Hello(instance_id="boot-1", host=self.host, sent_at_seconds=time.time())
        await self.call.write(pb.AgentMessage(hello=hello))
        assert (await self.call.read()).WhichOneof("kind") == "welcome"

    async def report(self, seq: int, cpu: float) -> int:
        samples = [
            pb.Sample(name="cpu_usage_ratio", value=cpu),
            pb.Sample(name="memory_used_ratio", value=0.95),
        ]
        report = pb.Report(
            instance_id="boot-1", seq=seq, collected_at_seconds=time.time(), samples=samples
        )
        await self.call.write(pb.AgentMessage(report=report))
        while True:
            reply = await self.call.read()
            if reply.WhichOneof("kind") == "ack":
                return int(reply.ack.seq)

    async def close(self) -> None:
        await self.call.done_writing()
        await self.channel.close()


def page(collector: Collector) -> str:
    status, text = collector.http_get("/metrics")
    assert status == 200, text
    return text


def total(text: str, name: str) -> float:
    return sum(
        float(value)
        for value in re.findall(rf'^{name}\{{worker="\d+"\}} (\S+)$', text, re.MULTILINE)
    )


def per_worker(text: str, name: str) -> dict[str, float]:
    pairs = re.findall(rf'^{name}\{{worker="(\d+)"\}} (\S+)$', text, re.MULTILINE)
    return {worker: float(value) for worker, value in pairs}


def agent_values(text: str, family: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for agent_id, value in re.findall(
        rf'^{family}\{{agent_id="([^"]+)"[^}}]*\}} (\S+)$', text, re.MULTILINE
    ):
        out.setdefault(agent_id, []).append(float(value))
    return out


def test_two_workers_share_the_port_one_page_one_ticket_each_report_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    collector = cluster.collector(
        "--workers", "2", "--customer", f"acme={TOKEN}", "--interval", "1", "--rules", str(rules)
    )
    collector.start()
    collector.wait_ready()
    pcs = [Pc(collector.address, n) for n in range(PCS)]

    async def first_connection() -> None:
        for pc in pcs:
            await pc.enroll()
        for pc in pcs:
            await pc.connect()
        assert [await pc.report(1, 0.25) for pc in pcs] == [1] * PCS
        # while the streams are open: the kernel gave both workers some of them
        streams = per_worker(page(collector), "tripline_collector_streams_open")
        assert set(streams) == {"0", "1"} and all(n > 0 for n in streams.values()), streams
        assert sum(streams.values()) == PCS
        for pc in pcs:
            await pc.close()

    asyncio.run(first_connection())
    ids = {pc.agent_id for pc in pcs}
    text = page(collector)
    assert agent_values(text, "tripline_agent_up").keys() == ids
    assert all(v == [1.0] for v in agent_values(text, "tripline_agent_up").values()), text
    assert agent_values(text, "tripline_cpu_usage_ratio") == {i: [0.25] for i in ids}

    async def reconnect_and_resend() -> None:
        # New connections land on either worker; seq 1 is resent (a spool that had not
        # seen its ack), seq 2 is new with another value.
        for pc in pcs:
            await pc.connect()
        assert [await pc.report(1, 0.25) for pc in pcs] == [1] * PCS
        assert [await pc.report(2, 0.5) for pc in pcs] == [2] * PCS
        text = page(collector)
        # each PC exactly once, with its newest value, whichever worker held it before
        assert agent_values(text, "tripline_cpu_usage_ratio") == {i: [0.5] for i in ids}, text
        assert agent_values(text, "tripline_agent_up").keys() == ids
        for pc in pcs:
            await pc.close()

    asyncio.run(reconnect_and_resend())
    text = page(collector)
    assert total(text, "tripline_collector_reports_applied_total") == 2 * PCS
    assert total(text, "tripline_collector_reports_duplicate_total") == PCS
    assert total(text, "tripline_collector_worker_metrics_errors_total") == 0
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr

    # the workers' private ports answer worker 0 only (the shared secret)
    port = (collector.data_dir / "workers" / "1.port").read_text()
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/internal/v1/workers/owners", timeout=5)
        raise AssertionError("a worker's private port answered without the secret")
    except urllib.error.HTTPError as exc:
        assert exc.code == 403

    def all_tickets() -> list[dict[str, Any]] | None:
        found = cluster.tickets(collector.data_dir)
        return found if len(found) >= PCS else None

    tickets = eventually(all_tickets, what="a ticket per PC")
    assert sorted(t["agent_id"] for t in tickets) == sorted(ids)  # one per problem
    assert collector.stop() == 0


def test_workers_outside_range_are_refused(cluster: Cluster) -> None:
    collector = cluster.collector("--workers", "65")
    collector.start()
    assert collector.popen is not None
    assert collector.popen.wait(30) == 2
    assert "config key 'workers': expected 1..64, got 65" in collector.log()


def test_a_dead_worker_is_restarted_and_the_page_comes_back_whole(cluster: Cluster) -> None:
    collector = cluster.collector("--workers", "2", "--customer", f"acme={TOKEN}")
    collector.start()
    collector.wait_ready()

    def started(index: int) -> list[int]:
        return [
            line["pid"]
            for line in collector.log_lines()
            if line.get("msg") == "worker started" and line.get("worker") == index
        ]

    first = eventually(lambda: started(1), what="worker 1 started")[0]
    eventually(lambda: 'tripline_collector_streams_open{worker="1"}' in page(collector))
    os.kill(first, signal.SIGKILL)
    restarted = eventually(lambda: started(1)[1:], what="worker 1 restarted")
    assert restarted[0] != first
    assert any(line.get("msg") == "worker died; restarting it" for line in collector.log_lines())

    def whole_again() -> bool:
        text = page(collector)
        return 'tripline_collector_streams_open{worker="1"}' in text and (
            'tripline_collector_streams_open{worker="0"}' in text
        )

    eventually(whole_again, what="both workers on the page again")
    assert collector.stop() == 0
    assert not any(started(i) and _alive(started(i)[-1]) for i in (0, 1))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_readyz_of_worker_0_is_ready_only_when_every_worker_serves_and_names_the_one_not(
    cluster: Cluster,
) -> None:
    """A load balancer probes worker 0's /readyz, but agents land on every worker: a
    worker that does not answer (stopped) or is gone (killed, restarting) makes it 503,
    naming that worker; it is 200 again once the worker serves."""
    collector = cluster.collector("--workers", "2", "--customer", f"acme={TOKEN}")
    collector.start()
    collector.wait_ready()
    assert collector.http_get("/readyz") == (200, "ready\n")
    worker1 = eventually(
        lambda: [
            line["pid"]
            for line in collector.log_lines()
            if line.get("msg") == "worker started" and line.get("worker") == 1
        ],
        what="worker 1 started",
    )[0]

    def not_ready() -> str | None:
        status, body = collector.http_get("/readyz")
        return body if status == 503 else None

    os.kill(worker1, signal.SIGSTOP)  # alive, so not restarted, but answering nothing
    try:
        body = eventually(not_ready, what="/readyz 503 while worker 1 is stopped")
        assert body.startswith("worker 1: not answering"), body
        assert "worker 0" not in body  # worker 0 itself serves
    finally:
        os.kill(worker1, signal.SIGCONT)
    eventually(lambda: collector.http_get("/readyz") == (200, "ready\n"), what="ready again")

    os.kill(worker1, signal.SIGKILL)  # dead until the supervisor's restart serves
    body = eventually(not_ready, what="/readyz 503 while worker 1 is dead")
    assert body.startswith("worker 1: "), body
    eventually(lambda: collector.http_get("/readyz") == (200, "ready\n"), what="restarted, ready")
    lines = collector.log_lines()
    assert any(
        line.get("msg") == "worker not ready" and line.get("worker") == 1 for line in lines
    ), "the change is logged"
    assert collector.stop() == 0
