"""One agent and its tickets written straight to the store, for the delivery tests
(test_delivery.py, test_delivery_history.py)."""

from __future__ import annotations

from tests.conftest import T0
from tripline.collector import enrollment, ticketmodel, tickets
from tripline.collector.store import Store


def enrolled_agent(store: Store, customer: str = "acme") -> str:
    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, customer, now=T0)
    with store.transaction() as conn:
        agent, _ = enrollment.enroll_agent(
            conn, token, hostname="pc-01", site="hq", inventory={}, now=T0
        )
    return agent.agent_id


def fire(store: Store, agent_id: str, rule: str, at: float, customer: str = "acme") -> int:
    with store.transaction() as conn:
        change = tickets.on_alert_firing(
            conn,
            customer=customer,
            agent_id=agent_id,
            hostname="pc-01",
            rule=rule,
            labels=(("mountpoint", "C:"),),
            severity="warning",
            tier=1,
            summary=f"pc-01: {rule}",
            runbook="clean up",
            value=0.97,
            threshold=0.9,
            context={"filesystems": [{"mountpoint": "C:", "used_ratio": 0.97}]},
            now=at,
            policy=ticketmodel.TicketPolicy(),
        )
    return change.ticket_id


def clear(store: Store, agent_id: str, rule: str, at: float, customer: str = "acme") -> None:
    with store.transaction() as conn:
        tickets.on_alert_resolved(
            conn,
            customer=customer,
            agent_id=agent_id,
            rule=rule,
            labels=(("mountpoint", "C:"),),
            value=0.5,
            reason="cleared",
            now=at,
        )
