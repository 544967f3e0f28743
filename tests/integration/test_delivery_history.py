"""Delivered tickets carry the snapshot and, when they open, what ended the rule's
earlier tickets on the PC: in the webhook payload and the mail, on a real SQLite file."""

from __future__ import annotations

from tests.conftest import T0
from tests.integration.delivery_helpers import enrolled_agent, fire
from tripline.collector import delivery_outbox, tickets, ticketsnapshots
from tripline.collector.sinks import email_message
from tripline.collector.store import Store


def test_an_opening_is_delivered_with_its_snapshot_and_history(store: Store) -> None:
    agent_id = enrolled_agent(store)
    earlier = fire(store, agent_id, "DiskFull", T0)
    with store.transaction() as conn:
        tickets.resolve(
            conn, earlier, actor="alice", now=T0 + 600, note="emptied the\r\nBcc: x@y recycle bin"
        )
    now = fire(store, agent_id, "DiskFull", T0 + 86_400)
    assert now != earlier
    snapshot = {"top_cpu": [{"pid": 42, "name": "backup.exe", "cpu_ratio": 0.9, "cmdline": "b"}]}
    with store.transaction() as conn:
        ticketsnapshots.replace(conn, now, snapshot, T0 + 86_401)
        batch = delivery_outbox.pending(conn, "hook", 0)
    opened = [d for d in batch if d.ticket["id"] == now and d.event["kind"] == "opened"]
    assert len(opened) == 1
    ticket = opened[0].ticket
    assert ticket["snapshot"] == snapshot and ticket["snapshot_taken_at"] == T0 + 86_401
    assert ticket["previously"]["scope"] == "agent"
    [before] = ticket["previously"]["tickets"]
    assert (before["id"], before["resolved_by"], before["took_seconds"]) == (earlier, "alice", 600)
    assert opened[0].payload()["ticket"]["previously"] == ticket["previously"]
    # events other than openings carry no history (it only matters when a ticket opens)
    resolved = [d for d in batch if d.event["kind"] == "resolved"]
    assert resolved and "previously" not in resolved[0].ticket
    body = email_message(opened[0], sender="t@msp.example", to=["h@msp.example"]).get_content()
    assert "backup.exe (pid 42)" in body
    assert "Previously:" in body
    assert f"#{earlier} on pc-01 resolved by alice: emptied the Bcc: x@y recycle bin" in body
