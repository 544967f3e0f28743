"""/metrics passes `promtool check metrics` whatever a hostname or mount point contains.

A collector runs in-process on loopback; a client enrolls and streams over real gRPC a
report holding everything this PC's agent probes send plus series with hostile label
values; the scraped body goes through promtool and Prometheus' own parser.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc import aio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import running_collector
from tripline.agent.probes import Prober
from tripline.collector.app import CollectorApp
from tripline.collector.convert import decode_report
from tripline.collector.exposition import SeriesExposition
from tripline.collector.state import LiveState
from tripline.collector.wirecheck import InvalidMessage
from tripline.common import catalogue
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

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
    ("temperature_celsius", {"chip": "coretemp", "sensor": 'Core "0"'}, 48.0),
    ("battery_charge_ratio", {}, 0.8),
    ("processes", {}, 212.0),
    ("agent_spool_reports", {}, 0.0),
    ("agent_spool_bytes", {}, 0.0),
    ("agent_spool_dropped_reports_total", {}, 0.0),
    ("agent_reconnects_total", {}, 1.0),
    ("agent_reports_rejected_total", {}, 0.0),
    ("agent_probe_errors_total", {"probe": "sensors"}, 2.0),
    # an extra metric (not in the catalogue) with a hostile label value
    ("custom_check_up", {"check": HOSTNAME}, 1.0),
]


def promtool_collector(
    data_dir: Path, customers: dict[str, str] | None = None, interval: float = 1
) -> AbstractAsyncContextManager[CollectorApp]:
    return running_collector(
        data_dir,
        customers=customers or {"acme": TOKEN},
        interval=interval,
        evaluation_interval=1.0,  # the default
        # The hostile agent opens a stream per case on purpose: Hello rate limits have
        # their own tests (test_limits.py) and would only refuse the cases here.
        max_hellos_per_second_per_agent=1e6,
        max_hello_burst_per_agent=1_000_000,
        max_connects_per_second_per_peer=1e6,
        max_connect_burst_per_peer=1_000_000,
    )


def esc(value: str) -> str:
    return value.replace("\n", "\\x0a")


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
        # This PC's real values may trip a default rule (CpuSaturated on a busy machine),
        # and a pending rule asks for a snapshot: the collector may send that first.
        while reply.WhichOneof("kind") == "snapshot_request":
            reply = await call.read()
        assert reply.WhichOneof("kind") == "ack", reply
        assert reply.ack.seq == 1
        await call.done_writing()
        return enrolled.agent_id


async def scrape(tmp_path: Path) -> tuple[str, str]:
    async with promtool_collector(tmp_path / "collector") as app:
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
    # control characters are escaped at the edge (\\x0a), quotes and backslashes by the format
    ours = {"agent_id": agent_id, "customer": "acme", "host": esc(HOSTNAME), "site": esc(SITE)}

    def labels_of(family: str) -> list[dict[str, str]]:
        return [s.labels for s in families[family].samples]

    assert labels_of("tripline_agent_up") == [ours]
    assert families["tripline_agent_up"].samples[0].value == 1.0
    fs = [
        (s.labels, s.value)
        for s in families["tripline_filesystem_used_ratio"].samples
        if s.labels["mountpoint"] == esc(MOUNTPOINT)
    ]
    assert fs == [
        ({**ours, "mountpoint": esc(MOUNTPOINT), "fstype": "ext4", "device": esc(DEVICE)}, 0.5)
    ]
    reads = [
        s for s in families["tripline_disk_read_bytes"].samples if s.labels["device"] == esc(DEVICE)
    ]
    assert [(s.name, s.value) for s in reads] == [("tripline_disk_read_bytes_total", 123456.0)]
    assert families["tripline_disk_read_bytes"].type == "counter"
    assert labels_of("tripline_x_custom_check_up") == [{**ours, "check": esc(HOSTNAME)}]
    assert [s.value for s in families["tripline_processes"].samples] == [212.0]
    # the collector's own dropped counter, not a second family from the agent's series
    assert labels_of("tripline_agent_spool_dropped_reports") == [ours]
    assert "tripline_collector_reports_applied" in families
    assert "tripline_memory_total_bytes" in families


# -- a hostile agent of one customer, a good agent of another ---------------------------

GOOD_TOKEN = "tle_r8KhQqYuns8co-Ee9edMABPR27ejq_jANPsLE8X2FrA"
NASTY = 'a\nb\r"c\\d\te\x00f\x1b]52;c;SGk=\x07g\x85h\x7f\u2028'
# Each entry goes in its own report: the collector rejects some whole, applies others.
BATTERY: list[list[tuple[str, dict[str, str], float]]] = [
    [("load1\n", {}, 1.0)],  # a trailing newline passed ^...$ with match
    [("memory_used_ratio_total", {}, 5.0)],  # a counter shadowing a core gauge
    [("memory_used_ratio", {}, 0.5), ("memory_used_ratio_count", {}, 1.0)],
    [("disk_read_bytes", {"device": "sda"}, 1.0)],  # a core counter without _total
    [("load1_sum", {}, 1.0), ("load1_bucket", {"le": "1"}, 1.0), ("load1_created", {}, 1.0)],
    [("load1_info", {"quantile": "0.5"}, 1.0)],
    [("cpu_usage_ratio", {"foo": "bar"}, 0.1)],  # a label the core family does not have
    [("custom_up", {"customer": "globex"}, 1.0)],
    [("custom_up", {"exported_customer": "globex"}, 1.0)],
    [("custom_up", {"job": "x", "instance": "y"}, 1.0)],
    [("custom_up", {"agent_id": "someone-else", "host": "h", "site": "s"}, 1.0)],
    [("custom_up", {"__name__": "load1"}, 1.0)],
    [("custom_up", {"a\n": "v"}, 1.0)],
    [("custom_nasty", {"path": NASTY}, 1.0)],
    [("custom_nasty", {"path": "x" * 1024}, 2.0)],
    [("agent_up", {}, 0.0), ("tripline_agent_up", {}, 0.0), ("collector_up", {}, 0.0)],
    [("agent_spool_dropped_reports_total", {}, 1e9)],
    [("process_count", {}, 1.0), ("processes", {}, 2.0)],  # one series after mapping
    [("process_count", {}, 3.0)],
    [("_", {}, 2.0), ("x_total", {}, 3.0)],
    [("big", {}, 1e308), ("tiny", {}, 5e-324), ("negzero", {}, -0.0)],
    [("nan", {}, math.nan)],
    [("é", {}, 1.0)],
    [("a:b", {}, 1.0)],  # colons are for recording rules; promtool refuses them
]
GOOD_SERIES: list[tuple[str, dict[str, str], float]] = [
    ("memory_used_ratio", {}, 0.25),
    ("load1", {}, 0.5),
    ("processes", {}, 99.0),
    ("disk_read_bytes_total", {"device": "sda"}, 1000.0),
    ("filesystem_used_ratio", {"mountpoint": "/", "fstype": "ext4", "device": "/dev/sda1"}, 0.4),
    ("cpu_usage_ratio", {}, 0.3),
    ("cpu_core_usage_ratio", {"cpu": "0"}, 0.35),
]
# The good agent's series as Prometheus exposes them.
GOOD_EXPOSED = [
    ("tripline_memory_used_ratio", {}, 0.25),
    ("tripline_load1", {}, 0.5),
    ("tripline_processes", {}, 99.0),
    ("tripline_disk_read_bytes_total", {"device": "sda"}, 1000.0),
    (
        "tripline_filesystem_used_ratio",
        {"mountpoint": "/", "fstype": "ext4", "device": "/dev/sda1"},
        0.4,
    ),
    ("tripline_cpu_usage_ratio", {}, 0.3),
    ("tripline_cpu_core_usage_ratio", {"cpu": "0"}, 0.35),
]


async def _send(
    stub: pb_grpc.CollectorStub,
    credential: str,
    host: pb.HostInfo,
    reports: list[list[tuple[str, dict[str, str], float]]],
) -> list[str]:
    """One stream per report; returns the status name each ended with (OK when acked)."""
    outcomes = []
    for seq, samples in enumerate(reports, start=1):
        call = stub.Connect(metadata=(("authorization", f"Bearer {credential}"),))
        now = time.time()
        await call.write(
            pb.AgentMessage(hello=pb.Hello(instance_id="i-1", host=host, sent_at_seconds=now))
        )
        try:
            assert (await call.read()).WhichOneof("kind") == "welcome"
            report = pb.Report(
                instance_id="i-1",
                seq=seq,
                collected_at_seconds=now,
                samples=[pb.Sample(name=n, labels=lb, value=v) for n, lb, v in samples],
            )
            await call.write(pb.AgentMessage(report=report))
            reply = await call.read()
            assert reply.WhichOneof("kind") == "ack", reply
            outcomes.append("OK")
            await call.done_writing()
        except aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
            outcomes.append(exc.code().name)
    return outcomes


async def _hostile_and_good(app: CollectorApp) -> tuple[str, str, list[str], str]:
    huge = "h" * 200_000 + NASTY
    hostile_host = pb.HostInfo(
        hostname=huge, os=NASTY * 100, os_release=NASTY, tags={"k\n": NASTY * 50}
    )
    good_host = pb.HostInfo(hostname="good-pc", os="Windows")
    async with aio.insecure_channel(
        f"127.0.0.1:{app.grpc_port}", options=[("grpc.max_send_message_length", 16 * 2**20)]
    ) as channel:
        stub = pb_grpc.CollectorStub(channel)
        hostile = await stub.Enroll(
            pb.EnrollRequest(enrollment_token=TOKEN, host=hostile_host, site=NASTY * 10)
        )
        good = await stub.Enroll(pb.EnrollRequest(enrollment_token=GOOD_TOKEN, host=good_host))
        outcomes = await _send(stub, hostile.credential, hostile_host, BATTERY)
        # Each report is a full snapshot: the last one holds everything accepted, at once.
        accepted = list(
            {
                (name, tuple(sorted(labels.items()))): (name, labels, value)
                for i, outcome in enumerate(outcomes)
                if outcome == "OK"
                for name, labels, value in reversed(BATTERY[i])
            }.values()
        )
        outcomes = await _send(stub, hostile.credential, hostile_host, [*BATTERY, accepted])
        assert await _send(stub, good.credential, good_host, [GOOD_SERIES]) == ["OK"]
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{app.http_port}/metrics")
    assert response.status_code == 200
    return hostile.agent_id, good.agent_id, outcomes, response.text


def test_a_hostile_agent_cannot_break_metrics_or_hide_another_customers_series(
    tmp_path: Path, promtool: str
) -> None:
    async def scenario() -> tuple[str, str, list[str], str]:
        async with promtool_collector(
            tmp_path / "collector", customers={"acme": TOKEN, "globex": GOOD_TOKEN}
        ) as app:
            return await _hostile_and_good(app)

    hostile_id, good_id, outcomes, body = asyncio.run(scenario())
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60
    )
    problems = (checked.stdout + checked.stderr).strip()
    assert checked.returncode == 0 and problems == "", f"promtool: {problems}"
    # what the edge refuses, it refuses whole with INVALID_ARGUMENT; the rest, together
    rejected = [i for i, o in enumerate(outcomes) if o != "OK"]
    assert rejected == [0, 6, 7, 8, 9, 10, 11, 12, 17, 21, 22, 23], outcomes

    families = list(text_string_to_metric_families(body))
    names = [f.name for f in families]
    assert len(names) == len(set(names))
    good = {"agent_id": good_id, "customer": "globex", "host": "good-pc", "site": ""}
    found = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in families
        for s in f.samples
        if s.labels.get("agent_id") == good_id
    }
    for name, labels, value in GOOD_EXPOSED:
        assert (name, tuple(sorted({**good, **labels}.items())), value) in found, name
    types = {f.name: f.type for f in families}
    assert types["tripline_memory_used_ratio"] == "gauge"
    assert types["tripline_disk_read_bytes"] == "counter"
    assert types["tripline_processes"] == "gauge"
    assert types["tripline_x_memory_used_ratio_total"] == "unknown"
    # the hostile agent's share of the page is bounded, its host label cut to 253
    hostile_lines = [line for line in body.splitlines() if f'agent_id="{hostile_id}"' in line]
    assert sum(len(line) + 1 for line in hostile_lines) < 300 * 1024
    host_values = {
        s.labels["host"]
        for f in families
        for s in f.samples
        if s.labels.get("agent_id") == hostile_id
    }
    assert all(len(h) <= 253 and "\n" not in h and "\x1b" not in h for h in host_values)
    # processes once, however an old agent names it
    assert [
        s.value
        for f in families
        if f.name == "tripline_processes"
        for s in f.samples
        if s.labels["agent_id"] == hostile_id
    ] == [3.0]


def test_a_real_prometheus_scrapes_the_page_a_hostile_agent_reports_to(tmp_path: Path) -> None:
    """Debian's Prometheus, with the shipped scrape job, scrapes the collector after the
    hostile battery: the target is up without a scrape error and the good customer's
    series are queryable."""
    from tests.prometheus_server import Prometheus, prometheus_binary

    binary = prometheus_binary()

    wanted = {name for name, _, _ in GOOD_EXPOSED}

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        # agents stay up (and their series exposed) for the minutes Prometheus may take
        async with promtool_collector(
            tmp_path / "collector", customers={"acme": TOKEN, "globex": GOOD_TOKEN}, interval=60
        ) as app:
            _, good_id, _, _ = await _hostile_and_good(app)
            prom = Prometheus(binary, tmp_path, app.http_port)
            prom.start()
            try:
                deadline = time.monotonic() + 60
                while True:
                    targets = await asyncio.to_thread(prom.api, "/api/v1/targets")
                    active = (targets or {}).get("activeTargets", [])
                    good = await asyncio.to_thread(
                        prom.query, f'{{customer="globex", agent_id="{good_id}"}}'
                    )
                    names = {series["metric"]["__name__"] for series in good or ()}
                    if active and active[0]["health"] != "unknown" and names >= wanted:
                        return active, good
                    assert time.monotonic() < deadline, (targets, prom.log_path.read_text())
                    await asyncio.sleep(0.5)
            finally:
                prom.stop()

    active, good = asyncio.run(scenario())
    assert [(t["health"], t["lastError"]) for t in active] == [("up", "")]
    assert wanted <= {series["metric"]["__name__"] for series in good}


# -- property: whatever is accepted, the page stays valid -----------------------------------

_NAME_PARTS = st.sampled_from(
    [*sorted(catalogue.BY_NAME), "process_count", "x", "jobs", "load1", "memory_used_ratio"]
)
_SUFFIXES = st.sampled_from(["", "_total", "_count", "_sum", "_bucket", "_created", "_info"])
_names = st.one_of(
    st.builds(lambda a, b: a + b, _NAME_PARTS, _SUFFIXES),
    st.text(max_size=12),
    st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}\n?", fullmatch=True),
)
_label_names = st.one_of(
    st.sampled_from(
        ["cpu", "device", "mountpoint", "le", "quantile", "job", "customer", "exported_host"]
    ),
    st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,10}\n?", fullmatch=True),
)
_label_values = st.one_of(st.text(max_size=30), st.sampled_from(["\n", '"', "\\", "\x1b[0m"]))
_samples = st.lists(
    st.builds(
        pb.Sample,
        name=_names,
        labels=st.dictionaries(_label_names, _label_values, max_size=3),
        value=st.floats(allow_nan=False),
    ),
    max_size=8,
)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(agents=st.lists(_samples, min_size=1, max_size=3))
def test_any_accepted_reports_render_a_page_promtool_accepts(
    agents: list[list[pb.Sample]], promtool: str
) -> None:
    state = LiveState(window=900.0)
    exposition = SeriesExposition(state, lambda live: True)
    for i, samples in enumerate(agents):
        live = state.ensure(f"a-{i}", customer=f"c{i % 2}", hostname=f"pc-{i}", site="")
        msg = pb.Report(instance_id="i", seq=1, collected_at_seconds=1.7e9, samples=samples)
        try:
            report = decode_report(msg, instance_id="i", max_samples=100)
        except InvalidMessage:
            continue
        state.record(live, 1.7e9, report.samples)
        live.last_seen = 1.7e9
        exposition.update(live, report.samples)
    body = exposition.render().decode()
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, text=True, timeout=60
    )
    problems = (checked.stdout + checked.stderr).strip()
    assert checked.returncode == 0 and problems == "", f"promtool: {problems}\n\n{body}"
    names = [f.name for f in text_string_to_metric_families(body)]
    assert len(names) == len(set(names))
