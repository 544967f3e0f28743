"""Faults injected into real processes: each test breaks one thing and counts exactly
what survived. Nothing acknowledged is lost, nothing is applied twice, no ticket is
lost or doubled, and every part recovers by itself once the fault is gone."""

from __future__ import annotations

import contextlib
import os
import queue
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import Cluster, Collector, Proc, eventually
from tests.e2e.tcpproxy import TcpProxy
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

pytestmark = pytest.mark.e2e

TOKEN = "tle_e2e_faults_J6OEo1nRRczPVK2v5Zeh28ZUcZGY"

RULES = """
rules:
  - name: MemoryPresent
    metric: memory_total_bytes
    op: ">"
    threshold: 0
    for: 2s
    severity: warning
    tier: 1
    summary: "{host} has memory"
  - name: MemoryPresentSlow
    metric: memory_total_bytes
    op: ">"
    threshold: 0
    for: 20s
    severity: info
    tier: 1
    summary: "{host} has had memory for 20 s"
  - name: AgentOffline
    builtin: offline
    severity: critical
    tier: 1
    summary: "{host} stopped reporting"
"""


# -- reading what survived ---------------------------------------------------------------


def instances(db: Path) -> list[tuple[str, str, int, int]]:
    """(agent_id, instance_id, applied_seq, reports_applied) of every agent instance."""
    with sqlite3.connect(db, timeout=10) as conn:
        return list(
            conn.execute(
                "SELECT agent_id, instance_id, applied_seq, reports_applied FROM agent_instances"
            )
        )


def applied_seq(db: Path) -> int:
    rows = instances(db)
    return rows[0][2] if rows else 0


def spool_state(spool: Path) -> tuple[str, int, int]:
    """(instance_id, last_seq, dropped_total) persisted by the agent's spool."""
    with sqlite3.connect(spool, timeout=10) as conn:
        instance_id, last_seq, dropped = conn.execute(
            "SELECT instance_id, last_seq, dropped_total FROM spool_state"
        ).fetchone()
    return str(instance_id), int(last_seq), int(dropped)


def spool_seqs(spool: Path) -> list[int]:
    with sqlite3.connect(spool, timeout=10) as conn:
        return [int(row[0]) for row in conn.execute("SELECT seq FROM reports ORDER BY seq")]


def integrity(path: Path) -> str:
    with sqlite3.connect(path, timeout=10) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def metric(collector: Collector, name: str, agent_id: str) -> float | None:
    status, body = collector.http_get("/metrics")
    if status != 200:
        return None
    pattern = re.compile(rf'^{name}\{{agent_id="{re.escape(agent_id)}"[^}}]*\}} (\S+)$', re.M)
    found = pattern.search(body)
    return float(found.group(1)) if found else None


def by_rule(tickets: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    return [t for t in tickets if t["rule"] == rule]


def log_has(proc: Proc, msg: str, **fields: Any) -> int:
    """How many of the process's JSON log lines carry ``msg`` and ``fields``."""
    return sum(
        1
        for line in proc.log_lines()
        if line.get("msg") == msg and all(line.get(k) == v for k, v in fields.items())
    )


def start_collector(cluster: Cluster, *flags: str, failpoints: str = "", **kw: Any) -> Collector:
    collector = cluster.collector(*flags, **kw)
    if failpoints:
        collector.env = {**collector.env, "TRIPLINE_FAILPOINTS": failpoints}
    collector.start()
    collector.wait_ready()
    return collector


def restart(cluster: Cluster, old: Collector, *flags: str, name: str, **kw: Any) -> Collector:
    return start_collector(
        cluster,
        *flags,
        grpc_port=old.grpc_port,
        http_port=old.http_port,
        data_dir=old.data_dir,
        name=name,
        **kw,
    )


def died(proc: Proc) -> int | None:
    assert proc.popen is not None
    return proc.popen.poll()


def start_agent(
    cluster: Cluster, collector: Collector, name: str = "agent", via: str = "", **config: Any
) -> Proc:
    """An agent collecting every second that retries within a second (its backoff
    would otherwise grow past the collector's offline threshold during an outage);
    ``via`` is another address to reach the collector by (a proxy)."""
    settings = {"interval": "1s", "backoff_max": "1s", **config}
    path = cluster.tmp / f"{name}.yaml"
    path.write_text("agent:\n" + "".join(f"  {k}: {v}\n" for k, v in settings.items()))
    proc = cluster.agent(collector, TOKEN, "--config", str(path), name=name)
    if via:
        proc.args[proc.args.index("--collector") + 1] = via
    return proc.start()


# -- 1. a long collector outage fills the agent's spool ------------------------------------


def test_long_outage_spool_drops_oldest_counts_them_and_replays_the_rest_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    # A report is ~3.5 kB: the spool holds about three, so a few seconds' outage overflows it.
    flags = ("--customer", f"acme={TOKEN}", "--interval", "1")
    collector = start_collector(cluster, *flags)
    agent = start_agent(cluster, collector, spool_max_bytes=12000)
    db = collector.data_dir / "tripline.db"
    spool = tmp_path / "agent" / "spool.db"
    eventually(lambda: applied_seq(db) >= 2, what="2 reports applied")

    collector.kill()
    applied_before = applied_seq(db)
    # Once the agent has seen the stream end no more acks arrive: its oldest spooled seq
    # is then fixed until the first drop.
    eventually(lambda: log_has(agent, "stream ended"), what="agent saw the collector go")
    kept = spool_seqs(spool)
    assert spool_state(spool)[2] == 0, "the spool overflowed before the first look"
    oldest = kept[0] if kept else spool_state(spool)[1] + 1
    # Applied but not yet acknowledged when the collector died: the agent cannot tell
    # them from unsent reports, so dropping them counts them as dropped too.
    applied_unacked = applied_before + 1 - oldest
    assert applied_unacked >= 0
    eventually(lambda: spool_state(spool)[2] >= 5, what="spool full: 5 reports dropped")
    # Oldest first: what is left is the newest, contiguous tail.
    left = spool_seqs(spool)
    assert left == list(range(left[0], left[-1] + 1))
    assert left[0] > applied_before + 1, "the oldest unacknowledged reports were dropped"

    restarted = restart(cluster, collector, *flags, name="collector-back")
    agent_id = instances(db)[0][0]

    def drained() -> bool:
        _, last_seq, dropped = spool_state(spool)
        shown = metric(restarted, "tripline_agent_spool_dropped_reports_total", agent_id)
        return applied_seq(db) >= last_seq and shown == dropped

    eventually(drained, what="backlog replayed and the drop count shown")
    assert agent.stop() == 0

    instance_id, last_seq, dropped = spool_state(spool)
    [(_, applied_instance, seq, reports_applied)] = instances(db)
    assert applied_instance == instance_id
    assert seq == last_seq
    # Every seq not dropped applied exactly once: the applications count the distinct seqs
    # (the dropped ones the collector had already applied counted among them).
    assert reports_applied == last_seq - dropped + applied_unacked
    shown = metric(restarted, "tripline_agent_spool_dropped_reports_total", agent_id)
    assert shown == dropped >= 5
    assert log_has(restarted, "agent connected", agent_id=agent_id) == 1
    assert restarted.stop() == 0


# -- 2. the agent SIGKILLed again and again --------------------------------------------------


def test_agent_sigkill_loop_keeps_spool_intact_and_seq_continuing(
    cluster: Cluster, tmp_path: Path
) -> None:
    collector = start_collector(cluster, "--customer", f"acme={TOKEN}", "--interval", "1")
    db = collector.data_dir / "tripline.db"
    spool = tmp_path / "agent" / "spool.db"
    agent = start_agent(cluster, collector)
    eventually(lambda: applied_seq(db) >= 1, what="enrolled and reporting")
    instance_id, last_seq, _ = spool_state(spool)
    identity = (tmp_path / "agent" / "identity.json").read_text()
    rng = random.Random(3)
    for kill in range(5):
        # A random moment: mid-collection, mid-append, mid-send or idle.
        time.sleep(rng.uniform(0.2, 1.8))
        agent.kill()
        assert integrity(spool) == "ok", f"spool corrupt after kill {kill}"
        now_instance, now_last, dropped = spool_state(spool)
        assert now_instance == instance_id and now_last >= last_seq and dropped == 0
        last_seq = now_last
        agent = start_agent(cluster, collector)

    eventually(lambda: applied_seq(db) >= last_seq + 3, what="seq continues after the kills")
    assert agent.stop() == 0
    assert integrity(spool) == "ok"
    assert (tmp_path / "agent" / "identity.json").read_text() == identity
    final_instance, final_last, dropped = spool_state(spool)
    [(_, applied_instance, seq, reports_applied)] = instances(db)
    assert final_instance == applied_instance == instance_id
    assert dropped == 0
    # Each seq applied once though the killed agents resent what they had not seen acked.
    assert reports_applied == seq
    # Nothing lost: what the collector has not applied is still in the spool.
    assert set(range(seq + 1, final_last + 1)) <= set(spool_seqs(spool))
    assert collector.stop() == 0


# -- 3. the collector SIGKILLed between the steps of applying a report ----------------------


def alert_clock(db: Path, rule: str) -> tuple[str, float] | None:
    with sqlite3.connect(db, timeout=10) as conn:
        row = conn.execute(
            "SELECT phase, active_since FROM alert_states WHERE rule = ?", (rule,)
        ).fetchone()
    return None if row is None else (str(row[0]), float(row[1]))


def test_collector_killed_before_commit_and_after_commit_applies_once_keeps_clocks(
    cluster: Cluster, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    flags = ("--rules", str(rules), "--customer", f"acme={TOKEN}", "--interval", "1")
    first = start_collector(cluster, *flags, failpoints="before_commit@4")
    db = first.data_dir / "tripline.db"
    spool = tmp_path / "agent" / "spool.db"
    agent = start_agent(cluster, first)

    eventually(lambda: died(first) is not None, what="failpoint before_commit tripped")
    assert died(first) == -9
    # The fourth report's transaction never committed: three applied, the fourth spooled.
    [(_, _, seq, reports_applied)] = instances(db)
    assert seq == reports_applied == 3
    slow = alert_clock(db, "MemoryPresentSlow")
    assert slow is not None and slow[0] == "pending"
    pending_since = slow[1]
    eventually(lambda: spool_state(spool)[1] >= 6, what="agent spooling while down")

    second = restart(
        cluster, first, *flags, name="collector-2", failpoints="after_commit_before_ack@3"
    )
    eventually(lambda: died(second) is not None, what="failpoint after_commit_before_ack tripped")
    assert died(second) == -9
    [(_, _, seq, reports_applied)] = instances(db)
    # Three more committed; the last one's Ack was never sent, so the agent still holds it.
    assert seq == reports_applied == 6
    assert seq in spool_seqs(spool)
    assert alert_clock(db, "MemoryPresentSlow") == ("pending", pending_since)
    eventually(lambda: spool_state(spool)[1] >= seq + 2, what="agent spooling while down")

    third = restart(cluster, first, *flags, name="collector-3")
    started = time.time()
    assert started < pending_since + 20, "the slow alert must still be pending at the restart"
    data = third.data_dir
    opened = eventually(
        lambda: by_rule(cluster.tickets(data), "MemoryPresentSlow"),
        deadline=40,
        what="slow ticket opened",
    )
    # The `for: 20s` clock ran across both crashes: firing 20 s after it first went
    # pending, not 20 s after the restart.
    assert 20 <= opened[0]["opened_at"] - pending_since < started + 20 - pending_since
    assert opened[0]["opened_at"] - pending_since < 23
    seq_then = applied_seq(db)
    eventually(lambda: applied_seq(db) >= seq_then + 2, what="reporting on")
    assert agent.stop() == 0

    [(_, _, seq, reports_applied)] = instances(db)
    assert reports_applied == seq
    tickets = cluster.tickets(data)
    fast = by_rule(tickets, "MemoryPresent")
    assert len(fast) == 1 and fast[0]["status"] == "open"
    assert [e["kind"] for e in cluster.ticket(data, fast[0]["id"])["events"]] == ["opened"]
    assert len(by_rule(tickets, "MemoryPresentSlow")) == 1
    assert not by_rule(tickets, "AgentOffline")
    assert third.stop() == 0


# -- 4. a connection blackholed: no reset, only silence --------------------------------------


def test_blackholed_connection_detected_by_keepalive_and_agent_reconnects(
    cluster: Cluster, tmp_path: Path
) -> None:
    collector = start_collector(cluster, "--customer", f"acme={TOKEN}", "--interval", "1")
    db = collector.data_dir / "tripline.db"
    with TcpProxy(("127.0.0.1", collector.grpc_port)) as proxy:
        agent = start_agent(
            cluster, collector, via=proxy.address, keepalive_time="2s", keepalive_timeout="2s"
        )
        eventually(lambda: applied_seq(db) >= 3, what="reporting through the proxy")
        assert log_has(agent, "connected") == 1

        proxy.blackhole()
        cut = time.monotonic()
        stuck = applied_seq(db)
        eventually(
            lambda: log_has(agent, "stream ended", code="UNAVAILABLE"),
            deadline=20,
            what="dead peer detected",
        )
        detected = time.monotonic() - cut
        # keepalive 2 s + 2 s timeout, plus one ping period of slack; the defaults
        # (30 s + 10 s) would take ten times as long.
        assert detected < 8, f"blackhole noticed after {detected:.1f}s"
        # Nothing went through meanwhile (at most a report already in flight).
        assert applied_seq(db) <= stuck + 1

        proxy.restore()
        eventually(lambda: log_has(agent, "connected") == 2, deadline=20, what="reconnected")
        assert proxy.accepted >= 2
        eventually(lambda: applied_seq(db) >= stuck + 5, what="reporting again")
        assert agent.stop() == 0

    _, last_seq, dropped = spool_state(tmp_path / "agent" / "spool.db")
    [(_, _, seq, reports_applied)] = instances(db)
    # The reports swallowed by the hole were resent; each applied once.
    assert dropped == 0 and reports_applied == seq
    assert set(range(seq + 1, last_seq + 1)) <= set(spool_seqs(tmp_path / "agent" / "spool.db"))
    assert collector.stop() == 0


# -- 5. the store refuses writes ---------------------------------------------------------------


def grpc_health(collector: Collector) -> int:
    with grpc.insecure_channel(collector.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="tripline.v1.Collector")
        return int(stub.Check(request, timeout=5).status)


def test_locked_store_withholds_acks_reports_not_serving_and_recovers(
    cluster: Cluster, tmp_path: Path
) -> None:
    collector = start_collector(cluster, "--customer", f"acme={TOKEN}", "--interval", "1")
    db = collector.data_dir / "tripline.db"
    spool = tmp_path / "agent" / "spool.db"
    agent = start_agent(cluster, collector)
    eventually(lambda: applied_seq(db) >= 2, what="reporting")
    assert grpc_health(collector) == health_pb2.HealthCheckResponse.SERVING

    # Another writer holds the database longer than the store's 5 s busy timeout.
    lock = sqlite3.connect(db, timeout=10, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        held = applied_seq(db)
        eventually(lambda: collector.http_get("/readyz")[0] == 503, what="/readyz 503")
        assert "store unavailable" in collector.http_get("/readyz")[1]
        eventually(
            lambda: grpc_health(collector) == health_pb2.HealthCheckResponse.NOT_SERVING,
            what="gRPC health NOT_SERVING",
        )
        refused = eventually(
            lambda: [
                line
                for line in agent.log_lines()
                if line.get("msg") == "stream ended" and line.get("code") == "UNAVAILABLE"
            ],
            what="agent told UNAVAILABLE",
        )
        assert "report not applied, resend later" in refused[0]["error"]
        reconnect = next(
            line
            for line in agent.log_lines()
            if line.get("msg") == "reconnecting" and line["ts"] >= refused[0]["ts"]
        )
        # The collector's retry-after (5 s) outweighs the agent's own 1 s backoff.
        assert reconnect["in_seconds"] >= 5
        # Not acknowledged: the agent keeps every report since the last applied one.
        assert applied_seq(db) == held
        _, last_seq, dropped = spool_state(spool)
        assert dropped == 0 and set(range(held + 1, last_seq + 1)) <= set(spool_seqs(spool))
        assert last_seq > held
    finally:
        lock.execute("ROLLBACK")
        lock.close()

    eventually(
        lambda: grpc_health(collector) == health_pb2.HealthCheckResponse.SERVING,
        what="gRPC health SERVING again",
    )
    eventually(lambda: collector.http_get("/readyz")[0] == 200, what="/readyz 200 again")
    eventually(lambda: applied_seq(db) >= last_seq + 1, what="backlog applied")
    assert agent.stop() == 0
    [(_, _, seq, reports_applied)] = instances(db)
    assert reports_applied == seq
    assert set(range(seq + 1, spool_state(spool)[1] + 1)) <= set(spool_seqs(spool))
    assert collector.stop() == 0


# -- a client speaking the real protocol, with a clock of its own --------------------------


class ProtocolAgent:
    """Enrolls and streams hand-made reports over real gRPC; its clock is the test's
    plus ``offset`` seconds, for the collected_at and Hello.sent_at it sends."""

    def __init__(self, collector: Collector, hostname: str, offset: float = 0.0) -> None:
        self.offset = offset
        self.instance_id = uuid.uuid4().hex
        self.seq = 0
        self.acked = 0
        self._channel = grpc.insecure_channel(collector.address)
        stub = pb_grpc.CollectorStub(self._channel)
        host = pb.HostInfo(hostname=hostname, os="Linux", cpu_count=1)
        enrolled = stub.Enroll(pb.EnrollRequest(enrollment_token=TOKEN, host=host), timeout=10)
        self.agent_id = enrolled.agent_id
        self._outbox: queue.Queue[pb.AgentMessage | None] = queue.Queue()
        hello = pb.Hello(
            agent_version="test",
            instance_id=self.instance_id,
            host=host,
            sent_at_seconds=self.clock(),
        )
        self._outbox.put(pb.AgentMessage(hello=hello))
        self._call = stub.Connect(
            iter(self._outbox.get, None),
            metadata=(("authorization", f"Bearer {enrolled.credential}"),),
        )
        first = next(self._call)
        assert first.WhichOneof("kind") == "welcome"
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def clock(self) -> float:
        return time.time() + self.offset

    def report(self, **values: float) -> int:
        self.seq += 1
        samples = [pb.Sample(name=name, value=value) for name, value in values.items()]
        report = pb.Report(
            instance_id=self.instance_id,
            seq=self.seq,
            collected_at_seconds=self.clock(),
            samples=samples,
        )
        self._outbox.put(pb.AgentMessage(report=report))
        return self.seq

    def close(self) -> None:
        self._outbox.put(None)
        self._reader.join(10)
        self._channel.close()

    def _read(self) -> None:
        with contextlib.suppress(grpc.RpcError):
            for message in self._call:
                if message.WhichOneof("kind") == "ack":
                    self.acked = max(self.acked, message.ack.seq)


# -- 6. agent clocks hours off --------------------------------------------------------------------

SKEW_RULES = """
rules:
  - name: ValueHigh
    metric: test_value
    op: ">"
    threshold: 0.5
    for: 2s
    severity: warning
    tier: 1
    summary: "{host}: test_value high"
  - name: AgentOffline
    builtin: offline
    severity: critical
    tier: 1
    summary: "{host} stopped reporting"
"""

HOURS = 5 * 3600.0


def test_agent_clock_hours_off_liveness_and_alert_clocks_use_collector_time(
    cluster: Cluster, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SKEW_RULES)
    collector = start_collector(
        cluster,
        "--rules",
        str(rules),
        "--customer",
        f"acme={TOKEN}",
        "--interval",
        "1",
        "--offline-after",
        "3",
    )
    data = collector.data_dir
    ahead = ProtocolAgent(collector, "clock-ahead", offset=+HOURS)
    behind = ProtocolAgent(collector, "clock-behind", offset=-HOURS)
    clients = (ahead, behind)
    try:
        started = time.time()
        # Report for twice the offline threshold; each check runs between two reports.
        while time.time() - started < 7:
            for client in clients:
                client.report(test_value=1.0)
            last_report = time.time()
            eventually(lambda: all(c.acked == c.seq for c in clients), what="acked")
            for client in clients:
                shown = metric(
                    collector, "tripline_agent_last_report_timestamp_seconds", client.agent_id
                )
                assert shown is not None and abs(shown - time.time()) < 3, (client.offset, shown)
                assert metric(collector, "tripline_agent_up", client.agent_id) == 1.0
            time.sleep(0.5)  # the reporting cadence, not a wait for an outcome
        tickets = cluster.tickets(data)
        assert not by_rule(tickets, "AgentOffline"), "reporting agents must not be offline"
        high = {t["agent_id"]: t for t in by_rule(tickets, "ValueHigh")}
        assert set(high) == {ahead.agent_id, behind.agent_id}
        for ticket in high.values():
            # `for: 2s` measured on the collector's clock: not at once (agent 5 h ahead
            # would look like 5 h held) and not never (5 h behind).
            assert 2 <= ticket["opened_at"] - started < 5, ticket["opened_at"] - started
    finally:
        for client in clients:
            client.close()

    offline = eventually(
        lambda: (
            found if len(found := by_rule(cluster.tickets(data), "AgentOffline")) == 2 else None
        ),
        deadline=20,
        what="both agents offline by the collector's clock",
    )
    for ticket in offline:
        silent = ticket["opened_at"] - last_report
        assert 3 <= silent < 6, f"offline after {silent:.1f}s of silence, threshold 3s"
    assert collector.stop() == 0


# -- 7. the ticket store under concurrent writers ------------------------------------------------

FLIP_RULES = """
rules:
  - name: Flipping
    metric: test_value
    op: ">"
    threshold: 0.5
    for: 0s
    severity: warning
    tier: 1
    summary: "{host}: test_value high"
"""

# The status each event kind may follow, and the status it leaves.
TIMELINE: dict[str, tuple[set[str], str | None]] = {
    "opened": ({"new"}, "open"),
    "acknowledged": ({"open"}, "acknowledged"),
    "escalated": ({"open"}, None),
    "resolved": ({"open", "acknowledged"}, "resolved"),
    "reopened": ({"resolved"}, "open"),
    "flapping": ({"open"}, None),
    "commented": ({"open", "acknowledged", "resolved"}, None),
}


def test_operator_and_engine_writing_one_ticket_lose_no_update(
    cluster: Cluster, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(FLIP_RULES)
    config = tmp_path / "collector.yaml"
    config.write_text(
        "collector:\n  evaluation_interval: 250ms\n"
        "  tickets:\n    escalate_tier1_after: 500ms\n    escalate_tier2_after: 500ms\n"
    )
    collector = start_collector(
        cluster,
        "--config",
        str(config),
        "--rules",
        str(rules),
        "--customer",
        f"acme={TOKEN}",
        "--interval",
        "1",
    )
    data = collector.data_dir
    client = ProtocolAgent(collector, "flipper")
    client.report(test_value=1.0)
    [ticket] = eventually(lambda: cluster.tickets(data), what="ticket opened")

    outcomes: list[tuple[str, str, subprocess.CompletedProcess[str]]] = []

    def operator() -> None:
        for i in range(8):
            action = ("ack", "resolve")[i % 2]
            actor = f"op-{i}"
            result = cluster.cli(
                "tickets", action, str(ticket["id"]), "--actor", actor, "--data-dir", str(data)
            )
            outcomes.append((action, actor, result))

    def engine_kinds() -> set[str]:
        with sqlite3.connect(data / "tripline.db", timeout=10) as conn:
            rows = conn.execute("SELECT kind FROM ticket_events WHERE actor = 'tripline'")
            return {str(row[0]) for row in rows}

    worker = threading.Thread(target=operator)
    worker.start()
    deadline = time.monotonic() + 60
    try:
        value = 1.0
        # Until the operator is done and the engine has resolved, reopened and escalated.
        while worker.is_alive() or not {"resolved", "reopened", "escalated"} <= engine_kinds():
            assert time.monotonic() < deadline, engine_kinds()
            # The engine resolves on 0, reopens on 1, escalates while nobody acknowledges.
            for _ in range(3):
                client.report(test_value=value)
                time.sleep(0.4)  # reporting cadence
            value = 1.0 - value
    finally:
        worker.join(60)
        client.close()
    assert collector.stop() == 0

    shown = cluster.ticket(data, ticket["id"])
    events = shown["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert shown["event_seq"] == len(events)
    # No lost update: every operator change that succeeded is on the timeline exactly
    # once, every refused one not at all, and a refusal says why.
    kinds = {"ack": "acknowledged", "resolve": "resolved"}
    for action, actor, result in outcomes:
        mine = [e for e in events if e["actor"] == actor]
        if result.returncode == 0:
            assert [e["kind"] for e in mine] == [kinds[action]], (actor, result.stdout)
        else:
            assert mine == [], (actor, result.stderr)
            assert re.search(r"already (acknowledged|resolved)|it is resolved", result.stderr)
    assert any(r.returncode == 0 for _, _, r in outcomes)
    # Replayed in order, the timeline is a valid life of a ticket ending in its status.
    status, tier = "new", 1
    for event in events:
        allowed, after = TIMELINE[event["kind"]]
        assert status in allowed, f"{event['kind']} after {status}: {events}"
        if event["kind"] == "escalated":
            assert event["data"]["from_tier"] == tier
            tier = event["data"]["to_tier"]
        if event["kind"] in {"opened", "reopened"}:
            tier = 1
        status = after or status
    assert status == shown["status"] and tier == shown["tier"]
    engine = {e["kind"] for e in events if e["actor"] == "tripline"}
    assert {"resolved", "reopened", "escalated"} <= engine, "the engine wrote concurrently"
    assert len(cluster.tickets(data)) == 1, "reopened, never duplicated"


# -- store faults under a running collector: health tells the truth ------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs of its own: full for real, without filling the machine's disk."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    # Unbuffered: the write that meets ENOSPC raises here, and closing has nothing to flush.
    with open(filler, "wb", buffering=0) as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 4096)
    return filler


def unready_throughout(collector: Collector, samples: int = 20) -> list[tuple[int, int]]:
    """(/readyz status, gRPC health) sampled ``samples`` times, 0.2 s apart: one condition
    seen over seconds, not a fixed wait for something to happen."""
    seen = []
    for _ in range(samples):
        seen.append((collector.http_get("/readyz")[0], grpc_health(collector)))
        time.sleep(0.2)
    return seen


NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVING = health_pb2.HealthCheckResponse.SERVING


def refused_writes(collector: Collector) -> list[dict[str, Any]]:
    return [line for line in collector.log_lines() if line.get("msg") == "store refuses writes"]


def test_full_disk_keeps_not_serving_until_a_real_write_succeeds_then_applies_once(
    cluster: Cluster, tmp_path: Path, small_fs: Path
) -> None:
    collector = start_collector(
        cluster, "--customer", f"acme={TOKEN}", "--interval", "1", data_dir=small_fs / "data"
    )
    db = collector.data_dir / "tripline.db"
    spool = tmp_path / "agent" / "spool.db"
    agent = start_agent(cluster, collector)
    eventually(lambda: applied_seq(db) >= 2, what="reporting")

    filler = fill(small_fs)
    eventually(lambda: collector.http_get("/readyz")[0] == 503, what="/readyz 503")
    held = applied_seq(db)
    # Every sample, not one in ten: the 1 s tick's empty commit must not pass for a write.
    assert set(unready_throughout(collector)) == {(503, NOT_SERVING)}
    status, body = collector.http_get("/readyz")
    assert status == 503 and "full" in body, body
    assert applied_seq(db) == held, "a report was applied on a full disk"
    assert spool_state(spool)[1] > held, "the agent kept reporting, into its spool"
    # One line for the transition, not one per failed batch or tick.
    assert len(refused_writes(collector)) == 1, refused_writes(collector)

    filler.unlink()
    eventually(lambda: grpc_health(collector) == SERVING, what="SERVING once space is back")
    eventually(lambda: collector.http_get("/readyz")[0] == 200, what="/readyz 200")
    eventually(lambda: applied_seq(db) > spool_state(spool)[1] - 1, what="backlog applied")
    assert agent.stop() == 0
    [(_, _, seq, reports_applied)] = instances(db)
    assert reports_applied == seq, "a report was applied twice or lost"
    assert log_has(collector, "store writable again") >= 1
    assert integrity(db) == "ok"
    assert collector.stop() == 0


def test_unwritable_database_keeps_not_serving_until_writable_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    collector = start_collector(cluster, "--customer", f"acme={TOKEN}", "--interval", "1")
    db = collector.data_dir / "tripline.db"
    agent = start_agent(cluster, collector)
    eventually(lambda: applied_seq(db) >= 2, what="reporting")
    files = [str(db), f"{db}-wal"]
    locked = subprocess.run(["chattr", "+i", *files], capture_output=True, text=True)
    if locked.returncode != 0:
        pytest.skip(f"chattr +i not permitted here: {locked.stderr.strip()}")
    try:
        eventually(lambda: grpc_health(collector) == NOT_SERVING, what="NOT_SERVING")
        held = applied_seq(db)
        assert set(unready_throughout(collector)) == {(503, NOT_SERVING)}
        assert "store unavailable" in collector.http_get("/readyz")[1]
        assert applied_seq(db) == held
    finally:
        subprocess.run(["chattr", "-i", *files], check=False)
    eventually(lambda: collector.http_get("/readyz")[0] == 200, what="/readyz 200 again")
    eventually(lambda: applied_seq(db) > held + 1, what="reports applied again")
    assert agent.stop() == 0
    [(_, _, seq, reports_applied)] = instances(db)
    assert reports_applied == seq
    assert collector.stop() == 0


def test_database_deleted_under_the_collector_stops_ingestion_then_restore_applies_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    flags = ("--customer", f"acme={TOKEN}", "--interval", "1")
    collector = start_collector(cluster, *flags)
    db = collector.data_dir / "tripline.db"
    backup = tmp_path / "tripline.db.backup"
    spool = tmp_path / "agent" / "spool.db"
    agent = start_agent(cluster, collector)
    eventually(lambda: applied_seq(db) >= 2, what="reporting")

    # The operator's backup is a hard link: the same file, so it holds every commit.
    os.link(db, backup)
    db.unlink()
    eventually(lambda: grpc_health(collector) == NOT_SERVING, what="NOT_SERVING", deadline=10)
    status, body = collector.http_get("/readyz")
    assert status == 503 and "deleted" in body and str(db) in body, body
    [error] = [line for line in refused_writes(collector) if line["level"] == "error"]
    assert str(db) in error["reason"] and "put the database back" in error["reason"]
    refused = eventually(
        lambda: [
            line
            for line in agent.log_lines()
            if line.get("msg") == "stream ended" and "not applied" in line.get("error", "")
        ],
        what="the agent told UNAVAILABLE, report not applied",
    )
    assert refused[-1]["code"] == "UNAVAILABLE"
    # From here on nothing may be acknowledged: the spool keeps every seq from its oldest.
    kept = spool_seqs(spool)
    first_unacked = kept[0] if kept else spool_state(spool)[1] + 1
    assert set(unready_throughout(collector, samples=10)) == {(503, NOT_SERVING)}
    _, last_seq, dropped = spool_state(spool)
    assert dropped == 0 and last_seq > first_unacked
    assert set(range(first_unacked, last_seq + 1)) <= set(spool_seqs(spool)), (
        "a report was acknowledged into the deleted file"
    )
    assert not db.exists(), "an empty database was created in place of the deleted one"

    assert collector.stop() == 0
    os.replace(backup, db)
    restarted = restart(cluster, collector, *flags, name="collector-restored")
    eventually(lambda: applied_seq(db) >= last_seq, what="the spooled reports applied")
    assert agent.stop() == 0
    [(_, _, seq, reports_applied)] = instances(db)
    assert reports_applied == seq, "a report was applied twice or lost"
    assert restarted.stop() == 0


def start_refused(cluster: Cluster, data_dir: Path, name: str) -> tuple[int, list[str]]:
    """Start a collector on ``data_dir`` that must exit: (exit code, its output lines)."""
    proc = cluster.collector(data_dir=data_dir, name=name).start()
    assert proc.popen is not None
    code = proc.popen.wait(30)
    return code, [line for line in proc.log().splitlines() if line.strip()]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_database_at_start_is_one_line_naming_the_file_and_exit_2(
    cluster: Cluster, tmp_path: Path, damage: str
) -> None:
    data = tmp_path / "data"
    # Owner-only, as the collector keeps them: a looser mode adds its "tightened
    # permissions" warning, which is not what this test is about.
    data.mkdir(mode=0o700)
    db = data / "tripline.db"
    if damage == "garbage":
        db.write_bytes(random.Random(7).randbytes(64 * 1024))
        db.chmod(0o600)
    else:
        collector = start_collector(cluster, "--customer", f"acme={TOKEN}", data_dir=data)
        assert collector.stop() == 0
        whole = db.read_bytes()
        db.write_bytes(whole[: len(whole) // 2])
    code, lines = start_refused(cluster, data, f"collector-{damage}")
    assert code == 2
    assert len(lines) == 1, lines
    assert str(db) in lines[0] and "backup" in lines[0] and ".recover" in lines[0]
    assert "Traceback" not in lines[0]


def test_second_collector_on_one_data_dir_refused_and_starts_after_the_first_is_killed(
    cluster: Cluster,
) -> None:
    first = start_collector(cluster, "--customer", f"acme={TOKEN}")
    assert first.popen is not None
    code, lines = start_refused(cluster, first.data_dir, "second")
    assert code == 2
    assert len(lines) == 1, lines
    assert f"pid {first.popen.pid}" in lines[0] and str(first.data_dir) in lines[0]
    assert first.http_get("/readyz")[0] == 200, "the first collector must go on serving"

    first.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
    third = start_collector(cluster, "--customer", f"acme={TOKEN}", data_dir=first.data_dir)
    assert grpc_health(third) == SERVING
    assert third.stop() == 0


# -- hostile connections: idle sockets, slowloris, huge chunked bodies ---------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

HOSTILE_ENV = {
    "TRIPLINE_COLLECTOR_HELLO_TIMEOUT": "2s",
    "TRIPLINE_COLLECTOR_CONNECTION_IDLE_TIMEOUT": "3s",
    "TRIPLINE_COLLECTOR_HTTP_HEADER_TIMEOUT": "2s",
    "TRIPLINE_COLLECTOR_HTTP_BODY_TIMEOUT": "5s",
}


def start_limited(cluster: Cluster, nofile: int) -> Collector:
    """A collector started with a soft open-file limit of half ``nofile`` and a hard
    limit of ``nofile`` (the old unit left it at 1,024): it raises the soft limit to the
    hard one at start, and no further."""
    collector = cluster.collector("--customer", f"acme={TOKEN}", "--interval", "1")
    collector.env = {**collector.env, **HOSTILE_ENV}
    log = open(collector.log_path, "ab")  # noqa: SIM115 - closed with the process
    collector.popen = subprocess.Popen(
        [
            "prlimit",
            f"--nofile={nofile // 2}:{nofile}",
            sys.executable,
            "-m",
            "tripline.collector.cli",
            *collector.args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=collector.env,
    )
    log.close()
    collector.wait_ready()
    return collector


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the other end closed ``sock`` (EOF or reset); never blocks."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def scraped(collector: Collector, name: str, **labels: str) -> float:
    status, body = collector.http_get("/metrics")
    assert status == 200, status
    selector = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(rf"^{name}(?:\{{{selector}\}})? (\S+)$", body, re.M)
    return float(found.group(1)) if found else 0.0


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_idle_sockets_under_1024_descriptors_never_cut_metrics_or_agents(
    cluster: Cluster, tmp_path: Path
) -> None:
    """1,100 idle sockets on each port and 50 gRPC connections that finish the HTTP/2
    handshake but open no stream, against a collector held to 1,024 descriptors: /metrics
    and /readyz keep answering, the idle gRPC sockets are closed within the handshake and
    idle timeouts, a real agent keeps reporting, and failed accepts are logged rate-limited."""
    collector = start_limited(cluster, 1024)
    capacity = dict(open_files_soft=1024, open_files_hard=1024, grpc_connections=704)
    assert log_has(collector, "connection capacity", **capacity) == 1
    start_agent(cluster, collector)
    db = collector.data_dir / "tripline.db"
    eventually(lambda: applied_seq(db) >= 2, what="the agent reports")

    opened = time.monotonic()
    http_idle = [socket.create_connection(("127.0.0.1", collector.http_port)) for _ in range(1100)]
    grpc_idle = [socket.create_connection(("127.0.0.1", collector.grpc_port)) for _ in range(1100)]
    h2_idle = []
    for _ in range(50):
        sock = socket.create_connection(("127.0.0.1", collector.grpc_port))
        sock.sendall(H2_PREFACE + H2_EMPTY_SETTINGS)
        h2_idle.append(sock)
    for sock in [*http_idle, *grpc_idle, *h2_idle]:
        sock.setblocking(False)
    try:
        before = applied_seq(db)
        # answered while every idle socket is still held (the HTTP ones live 2 s at most)
        eventually(lambda: collector.http_get("/readyz")[0] == 200, 10, "/readyz answers")
        eventually(lambda: collector.http_get("/metrics")[0] == 200, 10, "/metrics answers")
        # hello_timeout 2 s bounds the handshake, connection_idle_timeout 3 s a connection
        # without calls; 20 s from opening leaves room for a loaded machine
        left = max(1.0, opened + 20 - time.monotonic())
        eventually(lambda: all(closed_by_peer(s) for s in grpc_idle), left, "idle gRPC closed")
        left = max(1.0, opened + 20 - time.monotonic())
        eventually(lambda: all(closed_by_peer(s) for s in h2_idle), left, "stream-less h2 closed")
        for _ in range(3):  # and after, not once by luck
            eventually(lambda: collector.http_get("/readyz")[0] == 200, 10, "/readyz answers")
            eventually(lambda: collector.http_get("/metrics")[0] == 200, 10, "/metrics answers")
        eventually(lambda: all(closed_by_peer(s) for s in http_idle), 20, "idle HTTP closed")
        eventually(lambda: applied_seq(db) >= before + 3, 20, "the agent kept reporting")
        assert collector.alive()
    finally:
        for sock in [*http_idle, *grpc_idle, *h2_idle]:
            sock.close()
    evicted = scraped(
        collector, "tripline_collector_http_connections_closed_total", reason="evicted_idle"
    )
    timed_out = scraped(
        collector, "tripline_collector_http_connections_closed_total", reason="header_timeout"
    )
    assert evicted + timed_out >= 1100 - 256, (evicted, timed_out)
    refused = scraped(collector, "tripline_collector_accept_errors_total", port="http")
    lines = log_has(collector, "cannot accept HTTP connections: out of system resources")
    # each failed accept counted; at most one line per 10 s of the test
    assert lines <= 1 + (time.monotonic() - opened) / 10, (lines, refused)
    assert lines == 0 or refused >= lines


def test_slowloris_and_a_huge_chunked_body_are_cut(cluster: Cluster, tmp_path: Path) -> None:
    """Headers sent a byte at a time are cut after http_header_timeout with 408; a
    chunked body past the API's limit gets 413 without the collector's memory growing by
    the body's size; a body that stalls is cut after http_body_timeout."""
    collector = cluster.collector("--customer", f"acme={TOKEN}")
    collector.env = {**collector.env, **HOSTILE_ENV}
    collector.start()
    collector.wait_ready()
    created = cluster.cli(
        "api-tokens", "create", "--name", "ops", "--data-dir", str(collector.data_dir)
    )
    assert created.returncode == 0, created.stderr
    api_token = created.stdout.strip().splitlines()[-1]

    # slowloris: one header byte every 0.3 s
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
    sock = socket.create_connection(("127.0.0.1", collector.http_port))
    start = time.monotonic()
    answer = b""
    try:
        for byte in request:
            sock.sendall(bytes([byte]))
            sock.settimeout(0.3)
            with contextlib.suppress(TimeoutError):
                chunk = sock.recv(4096)
                answer += chunk
                if not chunk:
                    break
    except OSError:
        pass
    finally:
        sock.close()
    took = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
    assert 1.5 <= took <= 8, took
    assert (
        scraped(
            collector, "tripline_collector_http_connections_closed_total", reason="header_timeout"
        )
        == 1
    )

    # a chunked body of up to 200 MiB to an API route that reads a JSON body
    assert collector.popen is not None
    pid = collector.popen.pid
    rss_before = rss_kib(pid)
    sock = socket.create_connection(("127.0.0.1", collector.http_port))
    sock.sendall(
        b"POST /api/v1/tickets/1/comment HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + api_token.encode() + b"\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"[" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sock.setblocking(False)
    answer, sent = b"", 0
    while sent < 200 * 2**20 and not answer:
        try:
            sock.sendall(frame)
            sent += len(chunk)
        except BlockingIOError:
            time.sleep(0.001)
        except OSError:
            break
        with contextlib.suppress(BlockingIOError, OSError):
            answer += sock.recv(65536)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), (answer[:200], sent)
    assert sent < 20 * 2**20, f"the collector read {sent} bytes before answering"
    assert rss_kib(pid) - rss_before < 30 * 1024, "RSS grew by tens of MiB"

    # a body that stalls halfway
    sock = socket.create_connection(("127.0.0.1", collector.http_port))
    sock.sendall(
        b"POST /api/v1/tickets/1/comment HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: Bearer " + api_token.encode() + b"\r\n"
        b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"te'
    )
    sock.settimeout(15)
    start = time.monotonic()
    with contextlib.suppress(OSError):
        while sock.recv(4096):
            pass
    sock.close()
    assert 4 <= time.monotonic() - start <= 12
    assert (
        scraped(
            collector, "tripline_collector_http_connections_closed_total", reason="body_timeout"
        )
        == 1
    )
    assert collector.http_get("/readyz")[0] == 200


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
