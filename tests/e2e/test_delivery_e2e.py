"""A ticket's events reach a webhook exactly once, in order, through a receiver outage
and a collector killed with SIGKILL and restarted; two collectors on one PostgreSQL share
the outbox, and one dying mid-delivery leaves its route to the other."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Receiver, free_port, postgres_schema
from tests.e2e.conftest import TOKEN, Cluster, by_rule, eventually, write_rules
from tripline.collector import enrollment, ticketmodel, tickets
from tripline.collector.delivery_leases import lease_owner
from tripline.collector.store import Store

pytestmark = pytest.mark.e2e


def test_webhook_delivery_survives_outage_and_collector_restart(
    cluster: Cluster, tmp_path: Path, receiver: Receiver
) -> None:
    rules = tmp_path / "rules.yaml"
    write_rules(rules, 0)
    config = tmp_path / "collector.yaml"
    config.write_text(
        "collector:\n"
        "  routes:\n"
        "    - name: psa\n"
        f"      webhook: {{url: '{receiver.url}', secret: s3cret}}\n"
        "      match: {rules: [MemoryPresent]}\n"
    )
    flags = (
        "--config", str(config),
        "--rules", str(rules),
        "--customer", f"acme={TOKEN}",
        "--interval", "1",
    )  # fmt: skip
    collector = cluster.collector(*flags).start()
    collector.wait_ready()
    cluster.agent(collector, TOKEN).start()

    eventually(lambda: receiver.bodies(), what="webhook got the opened event")
    [opened] = receiver.bodies()
    ticket_id = opened["ticket"]["id"]
    assert opened["event"]["kind"] == "opened"
    assert opened["ticket"]["customer"] == "acme"

    # The receiver goes down; the condition clears meanwhile.
    receiver.statuses = [503] * 10_000
    write_rules(rules, 1e30)
    collector.signal(signal.SIGHUP)
    eventually(
        lambda: [
            t
            for t in by_rule(cluster.tickets(collector.data_dir), "MemoryPresent")
            if t["status"] == "resolved"
        ],
        what="ticket resolved while the receiver is down",
    )
    collector.kill()
    assert len(receiver.requests) == 1  # nothing accepted during the outage

    # Receiver back, collector restarted: the pending event goes out, once.
    receiver.statuses = []
    restarted = cluster.collector(
        *flags,
        grpc_port=collector.grpc_port,
        http_port=collector.http_port,
        name="collector-restarted",
    ).start()
    restarted.wait_ready()
    eventually(lambda: len(receiver.requests) >= 2, what="resolved delivered after restart")
    keys = [(b["idempotency_key"], b["event"]["kind"]) for b in receiver.bodies()]
    assert keys == [(f"{ticket_id}-1", "opened"), (f"{ticket_id}-2", "resolved")]
    # counted once the delivery is recorded, just after the receiver answered
    delivered = 'tripline_collector_deliveries_total{result="delivered",route="psa"} 1.0'
    eventually(lambda: delivered in restarted.http_get("/metrics")[1], what="delivery counted")
    assert restarted.stop() == 0


# -- several collectors on one PostgreSQL share the outbox -------------------------------

NO_RULES = """
rules:
  - name: NeverSent
    metric: a_metric_no_agent_sends
    op: ">"
    threshold: 0
    severity: info
    tier: 1
    summary: "{host}"
"""


@dataclass
class SharedHook:
    """A webhook receiver that counts every key it accepts, and can hold one chosen key's
    request unanswered until released (a receiver stalled mid-delivery)."""

    port: int
    accepted: list[str] = field(default_factory=list)
    hold_key: str | None = None
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def keys(self) -> list[str]:
        with self.lock:
            return list(self.accepted)


@pytest.fixture
def shared_hook() -> Iterator[SharedHook]:
    rec = SharedHook(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            key = self.headers["x-tripline-idempotency-key"]
            if key == rec.hold_key and not rec.held.is_set():
                rec.held.set()
                rec.release.wait(60)
                return  # its sender is gone by now: never answered, never accepted
            with rec.lock:
                rec.accepted.append(key)
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", rec.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield rec
    rec.release.set()
    server.shutdown()
    server.server_close()


def _fire_and_clear(store: Store, agent_id: str, rules: list[str], at: float) -> list[int]:
    opened = []
    for rule in rules:
        with store.transaction() as conn:
            opened.append(
                tickets.on_alert_firing(
                    conn,
                    customer="acme",
                    agent_id=agent_id,
                    hostname="pc-01",
                    rule=rule,
                    labels=(),
                    severity="warning",
                    tier=1,
                    summary=rule,
                    runbook=None,
                    value=1.0,
                    threshold=0.5,
                    context={},
                    now=at,
                    policy=ticketmodel.TicketPolicy(),
                ).ticket_id
            )
        with store.transaction() as conn:
            tickets.on_alert_resolved(
                conn,
                customer="acme",
                agent_id=agent_id,
                rule=rule,
                labels=(),
                value=0.0,
                reason="cleared",
                now=at + 1,
            )
    return opened


@pytest.mark.postgres
def test_two_collectors_on_postgresql_share_deliveries_without_races(
    cluster: Cluster, tmp_path: Path, shared_hook: SharedHook
) -> None:
    with postgres_schema("tripline_deliv_") as pg_url:
        rules = tmp_path / "rules.yaml"
        rules.write_text(NO_RULES)
        config = tmp_path / "collector.yaml"
        config.write_text(
            "collector:\n"
            "  delivery_lease: 2s\n"
            "  routes:\n"
            "    - name: psa\n"
            f"      webhook: {{url: '{shared_hook.url}', timeout: 1}}\n"
        )
        flags = ("--config", str(config), "--rules", str(rules), "--database-url", pg_url)
        a = cluster.collector(*flags, data_dir=tmp_path / "a", name="collector-a").start()
        b = cluster.collector(*flags, data_dir=tmp_path / "b", name="collector-b").start()
        a.wait_ready()
        b.wait_ready()
        store = Store(pg_url)
        try:
            eventually(
                lambda: _scalar(store, "SELECT count(*) FROM delivery_routes") == 1,
                what="route registered",
            )
            with store.transaction() as conn:
                _, token = enrollment.create_token(conn, "acme", now=time.time())
            with store.transaction() as conn:
                agent, _ = enrollment.enroll_agent(
                    conn, token, hostname="pc-01", site="", inventory={}, now=time.time()
                )
            # Many events, written while both collectors poll the outbox.
            opened: list[int] = []
            for batch in range(4):
                names = [f"Rule{batch}_{i}" for i in range(5)]
                opened += _fire_and_clear(store, agent.agent_id, names, time.time())
            expected = {f"{t}-{seq}" for t in opened for seq in (1, 2)}
            eventually(lambda: set(shared_hook.keys()) >= expected, what="every event delivered")
            keys = shared_hook.keys()
            assert sorted(keys) == sorted(expected)  # none twice
            for ticket in opened:
                assert [k for k in keys if k.startswith(f"{ticket}-")] == [
                    f"{ticket}-1",
                    f"{ticket}-2",
                ]

            # The collector holding the route dies mid-delivery; the other takes over once
            # the lease has expired, and the stalled event is not lost.
            holder = _scalar(store, "SELECT owner FROM delivery_leases WHERE route = 'psa'")
            dying, survivor = (a, b) if holder == lease_owner(str(a.data_dir.resolve())) else (b, a)
            assert holder == lease_owner(str(dying.data_dir.resolve()))
            [stalled] = _fire_and_clear(store, agent.agent_id, ["Stalled"], time.time())
            shared_hook.hold_key = f"{stalled}-1"
            eventually(shared_hook.held.is_set, what="delivery stalled at the receiver")
            dying.kill()
            eventually(
                lambda: {f"{stalled}-1", f"{stalled}-2"} <= set(shared_hook.keys()),
                what="the survivor delivers the stalled event after the lease",
            )
            assert shared_hook.keys()[-2:] == [f"{stalled}-1", f"{stalled}-2"]
            assert len(shared_hook.keys()) == len(expected) + 2
            for proc in (a, b):
                died = [line for line in proc.log_lines() if "died" in line.get("message", "")]
                assert died == [], died
            metrics = survivor.http_get("/metrics")[1]
            assert 'tripline_collector_delivery_restarts_total{route="psa"} 0.0' in metrics
            assert survivor.http_get("/readyz")[0] == 200
            assert survivor.stop() == 0
        finally:
            store.close()


def _scalar(store: Store, sql: str) -> Any:
    with store.read() as conn:
        return conn.exec_driver_sql(sql).scalar()
