"""Firing and clearing one filesystem alert of an agent straight through the ticket
engine, with a flap-aware policy (test_tickets.py, test_previously.py)."""

from __future__ import annotations

from typing import Any

from tripline.collector import tickets
from tripline.collector.agents_store import AgentRecord
from tripline.collector.store import Store
from tripline.collector.ticketmodel import TicketChange, TicketPolicy

POLICY = TicketPolicy(reopen_window=3600.0, flap_count=3, flap_window=6 * 3600.0)
CONTEXT = {
    "top_processes": [{"name": "backup.exe", "pid": 4242, "cpu_ratio": 0.71}],
    "filesystems": [{"mountpoint": "C:\\", "used_ratio": 0.97}],
    "uptime_seconds": 86400.0,
}
LABELS = (("mountpoint", "/"), ("device", "sda1"))


def fire(store: Store, agent: AgentRecord, now: float, **overrides: Any) -> TicketChange:
    args: dict[str, Any] = {
        "customer": agent.customer,
        "agent_id": agent.agent_id,
        "hostname": agent.hostname,
        "rule": "FilesystemAlmostFull",
        "labels": LABELS,
        "severity": "warning",
        "tier": 1,
        "summary": "pc-01: / is 97% full",
        "runbook": "Empty the recycle bin.",
        "value": 0.97,
        "threshold": 0.9,
        "context": CONTEXT,
        "now": now,
        "policy": POLICY,
    }
    args.update(overrides)
    with store.transaction() as conn:
        return tickets.on_alert_firing(conn, **args)


def clear(store: Store, agent: AgentRecord, now: float, value: float = 0.8) -> TicketChange | None:
    with store.transaction() as conn:
        return tickets.on_alert_resolved(
            conn, customer=agent.customer, agent_id=agent.agent_id, rule="FilesystemAlmostFull",
            labels=LABELS, value=value, reason="below 0.85 for 2m", now=now,
        )  # fmt: skip
