"""/metrics passes `promtool check metrics` whatever a hostname or mount point contains.

A collector runs in-process on loopback; a client enrolls and streams over real gRPC a
report holding everything this PC's agent probes send plus series with hostile label
values; the scraped body goes through promtool and Prometheus' own parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from grpc import aio
from prometheus_client.parser import text_string_to_metric_families

from agent.probes import Prober
from collector.app import CollectorApp
from collector.config import load_collector_config
from protos.tripline.v1 import tripline_pb2 as pb
from protos.tripline.v1 import tripline_pb2_grpc as pb_grpc

TOKEN = "tle_acme_promtool_q7Iqlrx1dUu6ZwVr7kR7m0JluV7xGmas"
HOSTNAME = 'pc "quoted" \\ back\nslash'
MOUNTPOINT = '/mnt/we"ird\\path\nx'
DEVICE = 'C:\\Dev "1"\nice'
SITE = 'branch "2"\\\n'

# series a real agent sends but probes of this PC may not: self metrics, sensors
EXTRA: list[tuple[str, dict[str, str], float]] = [
    ("filesystem_used_ratio", {"mountpoint": MOUNTPOINT, "fstype": "ext4", "device": DEVICE}, 0.5),
    ("filesystem_size_bytes", {"mountpoint": MOUNTPOINT, "fstype": "ext4", "device": DEVICE}, 1e12),
    (
        "filesystem_avail_bytes",
        {"mountpoint": MOUNTPOINT, "fstype": "ext4", "device": DEVICE},
        5e11,
    ),
    ("disk_read_bytes_total", {"device": DEVICE}, 123456.0),
    ("disk_written_bytes_total", {"device": DEVICE}, 654321.0),
    ("temperature_celsius", {"sensor": "coretemp", "label": 'Core "0"'}, 48.0),
    ("battery_charge_ratio", {}, 0.8),
    ("process_count", {}, 212.0),
    ("agent_spool_reports", {}, 0.0),
    ("agent_spool_bytes", {}, 0.0),
    ("agent_spool_dropped_reports_total", {}, 0.0),
    ("agent_reconnects_total", {}, 1.0),
    ("agent_reports_rejected_total", {}, 0.0),
    ("agent_probe_errors_total", {"probe": "sensors"}, 2.0),
    # an agent label named like a target label is kept as exported_host
    ("custom_check_up", {"host": HOSTNAME}, 1.0),
]


@contextlib.asynccontextmanager
async def running_collector(data_dir: Path) -> AsyncIterator[CollectorApp]:
    config = load_collector_config(
        None,
        environ={},
        flags={
            "listen": "127.0.0.1:0",
            "http_listen": "127.0.0.1:0",
            "data_dir": data_dir,
            "customers": {"acme": TOKEN},
            "interval": 1,
            "plaintext": True,
        },
    )
    app = CollectorApp(config)
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=0.1)


def probe_samples() -> list[pb.Sample]:
    """Everything this PC's probes report, plus EXTRA (which wins on the same series)."""
    prober = Prober(collect_processes=False)
    prober.collect(time.time())  # ratios need two snapshots
    collection = prober.collect(time.time())
    extra_keys = {(name, tuple(sorted(labels.items()))) for name, labels, _ in EXTRA}
    samples = [
        pb.Sample(name=s.name, labels=dict(s.labels), value=s.value)
        for s in collection.samples
        if (s.name, tuple(sorted(s.labels))) not in extra_keys
    ]
    samples += [pb.Sample(name=n, labels=labels, value=v) for n, labels, v in EXTRA]
    return samples


async def stream_one_report(app: CollectorApp) -> str:
    """Enroll, Hello, one Report, wait for its Ack; returns the agent id."""
    host = pb.HostInfo(hostname=HOSTNAME, os="Linux", cpu_count=4)
    async with aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = pb_grpc.CollectorStub(channel)
        enrolled = await stub.Enroll(pb.EnrollRequest(enrollment_token=TOKEN, host=host, site=SITE))
        call = stub.Connect(metadata=(("authorization", f"Bearer {enrolled.credential}"),))
        now = time.time()
        await call.write(
            pb.AgentMessage(hello=pb.Hello(instance_id="i-1", host=host, sent_at_seconds=now))
        )
        assert (await call.read()).WhichOneof("kind") == "welcome"
        report = pb.Report(
            instance_id="i-1", seq=1, collected_at_seconds=now, samples=probe_samples()
        )
        await call.write(pb.AgentMessage(report=report))
        reply = await call.read()
        assert reply.WhichOneof("kind") == "ack", reply
        assert reply.ack.seq == 1
        await call.done_writing()
        return enrolled.agent_id


async def scrape(tmp_path: Path) -> tuple[str, str]:
    async with running_collector(tmp_path / "collector") as app:
        agent_id = await stream_one_report(app)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{app.http_port}/metrics")
        assert response.status_code == 200
        return agent_id, response.text


def test_metrics_pass_promtool_with_hostile_labels(tmp_path: Path, promtool: str) -> None:
    agent_id, body = asyncio.run(scrape(tmp_path))
    checked = subprocess.run(
        [promtool, "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = (checked.stdout + checked.stderr).strip()
    assert checked.returncode == 0 and problems == "", f"promtool: {problems}\n\n{body}"

    families = {f.name: f for f in text_string_to_metric_families(body)}
    ours = {"agent_id": agent_id, "customer": "acme", "host": HOSTNAME, "site": SITE}

    def labels_of(family: str) -> list[dict[str, str]]:
        return [s.labels for s in families[family].samples]

    assert labels_of("tripline_agent_up") == [ours]
    assert families["tripline_agent_up"].samples[0].value == 1.0
    fs = [
        (s.labels, s.value)
        for s in families["tripline_filesystem_used_ratio"].samples
        if s.labels["mountpoint"] == MOUNTPOINT
    ]
    assert fs == [({**ours, "mountpoint": MOUNTPOINT, "fstype": "ext4", "device": DEVICE}, 0.5)]
    reads = [
        s for s in families["tripline_disk_read_bytes"].samples if s.labels["device"] == DEVICE
    ]
    assert [(s.name, s.value) for s in reads] == [("tripline_disk_read_bytes_total", 123456.0)]
    assert families["tripline_disk_read_bytes"].type == "counter"
    assert labels_of("tripline_custom_check_up") == [{**ours, "exported_host": HOSTNAME}]
    assert [s.value for s in families["tripline_processes"].samples] == [212.0]
    # the collector's own dropped counter, not a second family from the agent's series
    assert labels_of("tripline_agent_spool_dropped_reports") == [ours]
    assert "tripline_collector_reports_applied" in families
    assert "tripline_memory_total_bytes" in families
