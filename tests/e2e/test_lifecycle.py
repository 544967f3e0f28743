"""End to end with real processes: a ticket opens, resolves on SIGHUP, an offline ticket
opens when the agent dies, and a collector SIGKILLed mid-stream loses and doubles nothing."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.conftest import TOKEN, Cluster, by_rule, eventually, write_rules

pytestmark = pytest.mark.e2e


def test_ticket_opens_resolves_on_sighup_and_offline_opens(
    cluster: Cluster, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    write_rules(rules, 0)
    collector = cluster.collector(
        "--rules",
        str(rules),
        "--customer",
        f"acme={TOKEN}",
        "--interval",
        "1",
        "--offline-after",
        "4",
    ).start()
    collector.wait_ready()
    agent = cluster.agent(collector, TOKEN).start()
    data = collector.data_dir

    opened = eventually(
        lambda: [
            t for t in by_rule(cluster.tickets(data), "MemoryPresent") if t["status"] == "open"
        ],
        what="MemoryPresent ticket opened",
    )
    assert len(opened) == 1
    ticket = opened[0]
    assert ticket["customer"] == "acme"
    assert ticket["severity"] == "warning" and ticket["tier"] == 1
    assert ticket["value"] > 0
    assert ticket["runbook"].startswith("Nothing to do")
    context = ticket["context"]
    assert any(fs["mountpoint"] == "/" for fs in context["filesystems"]), context
    assert context["top_memory"], "top processes by memory travel with the ticket"
    assert context["uptime_seconds"] > 0
    shown = cluster.ticket(data, ticket["id"])
    assert [(e["kind"], e["actor"]) for e in shown["events"]] == [("opened", "tripline")]

    # The metrics page shows this PC.
    status, body = collector.http_get("/metrics")
    assert status == 200
    assert f'tripline_agent_up{{agent_id="{ticket["agent_id"]}"' in body
    assert "tripline_filesystem_used_ratio{" in body

    # A broken rule file on SIGHUP is refused; the old rules keep running.
    rules.write_text("rules:\n  - name: Broken\n    op: '>'\n")
    collector.signal(signal.SIGHUP)
    eventually(
        lambda: any(
            line.get("msg") == "rule reload failed, keeping the previous rules"
            for line in collector.log_lines()
        ),
        what="rule reload error logged",
    )
    assert collector.http_get("/readyz")[0] == 200

    # Out-of-reach threshold + SIGHUP: the condition clears and the ticket auto-resolves.
    write_rules(rules, 1e30)
    collector.signal(signal.SIGHUP)
    resolved = eventually(
        lambda: [
            t for t in by_rule(cluster.tickets(data), "MemoryPresent") if t["status"] == "resolved"
        ],
        what="MemoryPresent ticket auto-resolved",
    )
    assert resolved[0]["id"] == ticket["id"]
    assert resolved[0]["resolved_value"] > 0
    assert resolved[0]["resolved_by"] == "tripline"
    shown = cluster.ticket(data, ticket["id"])
    assert [e["kind"] for e in shown["events"]] == ["opened", "resolved"]

    # The agent dies: after the offline threshold an AgentOffline ticket opens.
    agent.kill()
    offline = eventually(
        lambda: [
            t for t in by_rule(cluster.tickets(data), "AgentOffline") if t["status"] == "open"
        ],
        what="AgentOffline ticket opened",
    )
    assert offline[0]["severity"] == "critical"
    assert offline[0]["agent_id"] == ticket["agent_id"]
    status, body = collector.http_get("/metrics")
    assert f'tripline_agent_up{{agent_id="{ticket["agent_id"]}"' in body
    up_line = next(
        line
        for line in body.splitlines()
        if line.startswith(f'tripline_agent_up{{agent_id="{ticket["agent_id"]}"')
    )
    assert up_line.endswith(" 0.0")
    assert collector.stop() == 0


def applied_counts(db: Path) -> list[tuple[str, str, int, int]]:
    with sqlite3.connect(db) as conn:
        return list(
            conn.execute(
                "SELECT agent_id, instance_id, applied_seq, reports_applied FROM agent_instances"
            )
        )


def test_collector_sigkill_mid_stream_applies_every_seq_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    write_rules(rules, 0)
    flags = ("--rules", str(rules), "--customer", f"acme={TOKEN}", "--interval", "1")
    collector = cluster.collector(*flags).start()
    collector.wait_ready()
    agent = cluster.agent(collector, TOKEN).start()
    db = collector.data_dir / "tripline.db"
    eventually(lambda: applied_counts(db) and applied_counts(db)[0][2] >= 3, what="3 reports")

    collector.kill()  # SIGKILL, mid-stream: the agent keeps collecting into its spool
    spool = tmp_path / "agent" / "spool.db"

    def spooled() -> int:
        with sqlite3.connect(spool) as conn:
            return int(conn.execute("SELECT count(*) FROM reports").fetchone()[0])

    eventually(lambda: spooled() >= 3, what="agent spooling while the collector is down")

    restarted = cluster.collector(
        *flags,
        grpc_port=collector.grpc_port,
        http_port=collector.http_port,
        name="collector-restarted",
    ).start()
    restarted.wait_ready()
    before = applied_counts(db)[0][2]
    eventually(lambda: applied_counts(db)[0][2] >= before + 5, what="backlog replayed")
    assert agent.stop() == 0

    [(_, _, applied_seq, reports_applied)] = applied_counts(db)
    # exactly once: as many applications as seqs, no seq skipped or doubled
    assert reports_applied == applied_seq
    with sqlite3.connect(spool) as conn:
        left = [row[0] for row in conn.execute("SELECT seq FROM reports ORDER BY seq")]
        (last_seq,) = conn.execute("SELECT last_seq FROM spool_state").fetchone()
    # Nothing lost: every seq the collector has not applied is still in the spool. The
    # spool may also still hold a report applied just before the stop whose ack had not
    # arrived yet (the next Welcome's applied_seq clears it); it holds a contiguous tail.
    assert set(range(applied_seq + 1, int(last_seq) + 1)) <= set(left)
    assert left == list(range(left[0], int(last_seq) + 1)) if left else applied_seq == last_seq
    tickets = by_rule(cluster.tickets(restarted.data_dir), "MemoryPresent")
    assert len(tickets) == 1 and tickets[0]["status"] == "open"
    assert restarted.stop() == 0
