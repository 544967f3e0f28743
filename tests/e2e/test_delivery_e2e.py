"""A ticket's events reach a webhook exactly once, in order, through a receiver outage
and a collector killed with SIGKILL and restarted."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.conftest import Receiver
from tests.e2e.conftest import Cluster, eventually
from tests.e2e.test_lifecycle import TOKEN, by_rule, write_rules

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
