"""Ticket lifecycle on a real database (SQLite always, PostgreSQL when the run has one)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from tests.integration.ticket_helpers import CONTEXT, LABELS, POLICY, clear, fire
from tripline.collector import agent_instances, enrollment, ticketmodel, ticketqueries, tickets
from tripline.collector.agents_store import AgentRecord
from tripline.collector.schema import ticket_events
from tripline.collector.schema import tickets as tickets_table
from tripline.collector.store import Store
from tripline.collector.ticketmodel import (
    InvalidTicketTransition,
    Ticket,
    TicketChange,
    TicketNotFound,
    TicketPolicy,
)

T0 = 1_700_000_000.0


def get(store: Store, ticket_id: int) -> Ticket:
    with store.read() as conn:
        return ticketqueries.get_ticket(conn, ticket_id)


def test_problem_key_ignores_label_order_and_separates_problems() -> None:
    key = ticketmodel.problem_key("acme", "agt_1", "DiskFull", (("a", "1"), ("b", "2")))
    assert key == ticketmodel.problem_key("acme", "agt_1", "DiskFull", (("b", "2"), ("a", "1")))
    assert len(key) == 64
    others = {
        ticketmodel.problem_key("globex", "agt_1", "DiskFull", (("a", "1"), ("b", "2"))),
        ticketmodel.problem_key("acme", "agt_2", "DiskFull", (("a", "1"), ("b", "2"))),
        ticketmodel.problem_key("acme", "agt_1", "CpuHigh", (("a", "1"), ("b", "2"))),
        ticketmodel.problem_key("acme", "agt_1", "DiskFull", (("a", "1"),)),
        ticketmodel.problem_key("acme", "agt_1|DiskFull", "", (("a", "1"), ("b", "2"))),
    }
    assert key not in others and len(others) == 5


def test_firing_opens_one_ticket_with_its_context(store: Store, agent: AgentRecord) -> None:
    opened = fire(store, agent, T0)
    assert opened.kind == "opened"
    # Same problem, labels in another order, later: the same ticket, untouched.
    assert fire(store, agent, T0 + 60, labels=tuple(reversed(LABELS))) == TicketChange(
        opened.ticket_id, "unchanged"
    )
    ticket = get(store, opened.ticket_id)
    assert (ticket.status, ticket.tier, ticket.severity, ticket.customer) == (
        "open",
        1,
        "warning",
        "acme",
    )
    assert (ticket.value, ticket.threshold, ticket.context) == (0.97, 0.9, CONTEXT)
    assert (ticket.opened_at, ticket.tier_since, ticket.updated_at) == (T0, T0, T0)
    assert ticket.labels == (("device", "sda1"), ("mountpoint", "/"))
    assert ticket.runbook == "Empty the recycle bin."
    assert ticket.event_seq == 1 and len(ticket.events) == 1
    event = ticket.events[0]
    assert (event.seq, event.at, event.kind, event.actor) == (1, T0, "opened", "tripline")
    assert event.data == {"value": 0.97, "threshold": 0.9, "context": CONTEXT}
    json.dumps(ticket.to_dict())
    assert ticket.to_dict()["labels"] == {"device": "sda1", "mountpoint": "/"}


def test_auto_resolve_records_value_and_time(store: Store, agent: AgentRecord) -> None:
    assert clear(store, agent, T0) is None
    opened = fire(store, agent, T0)
    assert clear(store, agent, T0 + 900, value=0.81) == TicketChange(opened.ticket_id, "resolved")
    assert clear(store, agent, T0 + 960) is None
    ticket = get(store, opened.ticket_id)
    assert (ticket.status, ticket.resolved_at, ticket.resolved_value) == (
        "resolved",
        T0 + 900,
        0.81,
    )
    assert (ticket.resolved_by, ticket.resolve_reason) == ("tripline", "below 0.85 for 2m")
    assert [(e.kind, e.actor, e.at) for e in ticket.events] == [
        ("opened", "tripline", T0), ("resolved", "tripline", T0 + 900),
    ]  # fmt: skip
    assert ticket.events[1].data == {"value": 0.81, "reason": "below 0.85 for 2m"}


def test_a_problem_back_soon_reopens_and_later_opens_anew(store: Store, agent: AgentRecord) -> None:
    first = fire(store, agent, T0, tier=2).ticket_id
    with store.transaction() as conn:
        tickets.acknowledge(conn, first, actor="alice", now=T0 + 10)
    with store.transaction() as conn:
        assert tickets.escalate_due(conn, now=T0 + 10_000, policy=POLICY) == []
    clear(store, agent, T0 + 100)
    reopened = fire(store, agent, T0 + 100 + 3599, value=0.99, context={"uptime_seconds": 5.0})
    assert reopened == TicketChange(first, "reopened")
    ticket = get(store, first)
    assert (ticket.status, ticket.tier, ticket.reopen_count, ticket.flapping) == (
        "open",
        1,
        1,
        False,
    )
    assert (ticket.acknowledged_at, ticket.acknowledged_by, ticket.resolved_at) == (
        None,
        None,
        None,
    )
    assert (ticket.value, ticket.context, ticket.opened_at) == (0.99, {"uptime_seconds": 5.0}, T0)
    assert ticket.tier_since == T0 + 3699
    assert ticket.events[-1].kind == "reopened" and ticket.events[-1].data["value"] == 0.99
    # Resolved for a full reopen window: the next occurrence is a new ticket.
    clear(store, agent, T0 + 4000)
    fresh = fire(store, agent, T0 + 4000 + 3600)
    assert fresh.kind == "opened" and fresh.ticket_id != first
    assert get(store, first).status == "resolved"


def test_a_ticket_that_keeps_coming_back_is_marked_flapping_once(
    store: Store, agent: AgentRecord
) -> None:
    ticket_id = fire(store, agent, T0).ticket_id
    now = T0
    for reopen in range(1, 5):
        now += 600
        clear(store, agent, now)
        now += 60
        assert fire(store, agent, now) == TicketChange(ticket_id, "reopened")
        assert get(store, ticket_id).flapping is (reopen >= POLICY.flap_count)
    ticket = get(store, ticket_id)
    assert ticket.reopen_count == 4
    assert [e.kind for e in ticket.events].count("flapping") == 1
    flap = next(e for e in ticket.events if e.kind == "flapping")
    assert (flap.at, flap.actor, flap.data["reopens"]) == (T0 + 3 * 660, "tripline", 3)


def test_reopens_spread_wider_than_the_flap_window_do_not_flap(
    store: Store, agent: AgentRecord
) -> None:
    policy = TicketPolicy(reopen_window=3600.0, flap_count=3, flap_window=3000.0)
    ticket_id = fire(store, agent, T0, policy=policy).ticket_id
    for n in range(1, 6):
        clear(store, agent, T0 + n * 2000 - 100)
        fire(store, agent, T0 + n * 2000, policy=policy)
    assert get(store, ticket_id).reopen_count == 5
    assert get(store, ticket_id).flapping is False


def test_unacknowledged_tickets_escalate_up_to_tier_three(store: Store, agent: AgentRecord) -> None:
    ticket_id = fire(store, agent, T0).ticket_id

    def escalate(now: float) -> list[TicketChange]:
        with store.transaction() as conn:
            return tickets.escalate_due(conn, now=now, policy=POLICY)

    assert escalate(T0 + 1799) == []
    assert escalate(T0 + 1800) == [TicketChange(ticket_id, "escalated")]
    assert (get(store, ticket_id).tier, get(store, ticket_id).tier_since) == (2, T0 + 1800)
    assert escalate(T0 + 1800 + 3599) == []
    assert escalate(T0 + 1800 + 3600) == [TicketChange(ticket_id, "escalated")]
    assert escalate(T0 + 100_000) == []
    ticket = get(store, ticket_id)
    assert ticket.tier == 3
    assert [(e.kind, e.data) for e in ticket.events[1:]] == [
        ("escalated", {"from_tier": 1, "to_tier": 2}),
        ("escalated", {"from_tier": 2, "to_tier": 3}),
    ]


def test_acknowledged_tickets_stop_escalating(store: Store, agent: AgentRecord) -> None:
    ticket_id = fire(store, agent, T0).ticket_id
    with store.transaction() as conn:
        assert tickets.escalate_due(conn, now=T0 + 1800, policy=POLICY) != []
        tickets.acknowledge(conn, ticket_id, actor="bob", now=T0 + 1900)
    with store.transaction() as conn:
        assert tickets.escalate_due(conn, now=T0 + 100_000, policy=POLICY) == []
    assert get(store, ticket_id).tier == 2


def test_the_timeline_keeps_every_change_in_order_with_its_actor(
    store: Store, agent: AgentRecord
) -> None:
    ticket_id = fire(store, agent, T0).ticket_id
    with store.transaction() as conn:
        tickets.escalate_due(conn, now=T0 + 1800, policy=POLICY)
        tickets.comment(conn, ticket_id, actor="alice", text="looking at it", now=T0 + 1850)
        acked = tickets.acknowledge(conn, ticket_id, actor="alice", now=T0 + 1900)
    assert (acked.status, acked.acknowledged_at, acked.acknowledged_by) == (
        "acknowledged",
        T0 + 1900,
        "alice",
    )
    clear(store, agent, T0 + 2000)
    with store.transaction() as conn:
        tickets.comment(conn, ticket_id, actor="bob", text="was the backup job", now=T0 + 2100)
    fire(store, agent, T0 + 2200)
    with store.transaction() as conn:
        resolved = tickets.resolve(
            conn, ticket_id, actor="bob", now=T0 + 2300, note="moved backups to D:"
        )
    assert (resolved.resolved_by, resolved.resolve_reason, resolved.resolved_value) == (
        "bob", "moved backups to D:", None,
    )  # fmt: skip
    timeline = [(e.seq, e.kind, e.actor) for e in resolved.events]
    assert timeline == [
        (1, "opened", "tripline"),
        (2, "escalated", "tripline"),
        (3, "commented", "alice"),
        (4, "acknowledged", "alice"),
        (5, "resolved", "tripline"),
        (6, "commented", "bob"),
        (7, "reopened", "tripline"),
        (8, "resolved", "bob"),
    ]
    assert [e.at for e in resolved.events] == sorted(e.at for e in resolved.events)
    assert resolved.events[2].message == "looking at it"
    assert resolved.event_seq == 8 and resolved.updated_at == T0 + 2300


def test_operators_cannot_act_on_a_resolved_ticket_twice(store: Store, agent: AgentRecord) -> None:
    ticket_id = fire(store, agent, T0).ticket_id
    with store.transaction() as conn:
        tickets.acknowledge(conn, ticket_id, actor="alice", now=T0 + 1)
    with (
        pytest.raises(InvalidTicketTransition, match="already acknowledged by alice"),
        store.transaction() as conn,
    ):
        tickets.acknowledge(conn, ticket_id, actor="bob", now=T0 + 2)
    with store.transaction() as conn:
        tickets.resolve(conn, ticket_id, actor="alice", now=T0 + 3)
    for act in (
        lambda conn: tickets.acknowledge(conn, ticket_id, actor="bob", now=T0 + 4),
        lambda conn: tickets.resolve(conn, ticket_id, actor="bob", now=T0 + 4),
    ):
        with pytest.raises(InvalidTicketTransition) as caught, store.transaction() as conn:
            act(conn)
        assert caught.value.ticket_id == ticket_id
    assert get(store, ticket_id).event_seq == 3
    for act in (
        lambda conn: tickets.acknowledge(conn, 999, actor="bob", now=T0),
        lambda conn: ticketqueries.get_ticket(conn, 999),
        lambda conn: tickets.comment(conn, 999, actor="bob", text="hi", now=T0),
    ):
        with pytest.raises(TicketNotFound), store.transaction() as conn:
            act(conn)


def test_lists_and_counts(store: Store, agent: AgentRecord) -> None:
    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, "globex", now=T0)
    with store.transaction() as conn:
        other, _ = enrollment.enroll_agent(
            conn, token, hostname="gx-01", site="", inventory={}, now=T0
        )
    disk = fire(store, agent, T0).ticket_id
    cpu = fire(
        store, agent, T0 + 1, rule="CpuHigh", labels=(), severity="critical", tier=2
    ).ticket_id
    gx = fire(store, other, T0 + 2, customer="globex").ticket_id
    with store.transaction() as conn:
        tickets.acknowledge(conn, cpu, actor="alice", now=T0 + 3)
        tickets.resolve(conn, gx, actor="alice", now=T0 + 4)
    with store.read() as conn:
        assert [t.id for t in ticketqueries.list_tickets(conn)] == [gx, cpu, disk]
        assert [t.id for t in ticketqueries.list_tickets(conn, customer="acme")] == [cpu, disk]
        assert [t.id for t in ticketqueries.list_tickets(conn, status="open")] == [disk]
        assert [
            t.id for t in ticketqueries.list_tickets(conn, status=("open", "acknowledged"))
        ] == [
            cpu,
            disk,
        ]
        assert [t.id for t in ticketqueries.list_tickets(conn, agent_id=other.agent_id)] == [gx]
        assert [t.id for t in ticketqueries.list_tickets(conn, limit=1, offset=1)] == [cpu]
        assert ticketqueries.list_tickets(conn)[0].events == ()
        assert ticketqueries.count_by_state(conn) == {
            ("open", "warning", 1): 1, ("acknowledged", "critical", 2): 1,
            ("resolved", "warning", 1): 1,
        }  # fmt: skip
        with pytest.raises(ValueError, match="closed"):
            ticketqueries.list_tickets(conn, status="closed")  # type: ignore[arg-type]


def test_bad_input_is_refused_not_swallowed(store: Store, agent: AgentRecord) -> None:
    with pytest.raises(ValueError, match="tier"):
        fire(store, agent, T0, tier=4)
    # An unknown agent breaks a foreign key: that must surface, not read as "unchanged".
    with pytest.raises(IntegrityError):
        fire(store, agent, T0, agent_id="agt_missing")
    with pytest.raises(ValueError, match="text"):
        ticket_id = fire(store, agent, T0).ticket_id
        with store.transaction() as conn:
            tickets.comment(conn, ticket_id, actor="alice", text="  ", now=T0)


# -- two collectors on one database --------------------------------------------------------


def _race(racers: list[Store], agent: AgentRecord, rule: str) -> list[TicketChange]:
    barrier = threading.Barrier(len(racers))
    results: list[TicketChange] = []
    errors: list[BaseException] = []

    def run(racer: Store) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(fire(racer, agent, T0, rule=rule))
        except BaseException as error:  # handed to the main thread's assertion
            errors.append(error)

    threads = [threading.Thread(target=run, args=(racer,)) for racer in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results


def test_racing_collectors_open_exactly_one_ticket(
    store_url: str, store: Store, agent: AgentRecord
) -> None:
    racers = [Store(store_url), Store(store_url)]
    for round_ in range(5):
        results = _race(racers, agent, f"Rule{round_}")
        assert sorted(r.kind for r in results) == ["opened", "unchanged"]
        assert len({r.ticket_id for r in results}) == 1
    with store.read() as conn:
        assert conn.scalar(select(func.count()).select_from(tickets_table)) == 5
        assert conn.scalar(select(func.count()).select_from(ticket_events)) == 5
    for racer in racers:
        racer.close()


def _wait_until_blocked_on_a_lock(store: Store, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    while time.monotonic() < deadline:
        with store.read() as conn:
            if conn.scalar(query):
                return
        time.sleep(0.01)
    raise AssertionError("the second collector never waited on the first one's insert")


def test_the_loser_of_an_insert_race_keeps_its_transaction(
    store_url: str, store: Store, agent: AgentRecord
) -> None:
    """Only PostgreSQL lets both collectors get as far as the INSERT (SQLite serializes
    writers at BEGIN): the loser hits the unique index, and its savepoint keeps the rest."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite serializes writers at BEGIN IMMEDIATE; the insert race cannot happen")
    winner, loser = Store(store_url), Store(store_url)
    outcome: dict[str, Any] = {}

    def lose() -> None:
        try:
            with loser.transaction() as conn:
                outcome["change"] = tickets.on_alert_firing(
                    conn, customer="acme", agent_id=agent.agent_id, hostname="pc-01",
                    rule="FilesystemAlmostFull", labels=LABELS, severity="warning", tier=1,
                    summary="s", runbook=None, value=0.97, threshold=0.9, context={},
                    now=T0, policy=POLICY,
                )  # fmt: skip
                agent_instances.record_applied(
                    conn, agent.agent_id, "boot-1", 7, dropped_total=0, now=T0
                )
        except BaseException as error:  # handed to the main thread's assertion
            outcome["error"] = error

    with winner.transaction() as conn:
        won = tickets.on_alert_firing(
            conn, customer="acme", agent_id=agent.agent_id, hostname="pc-01",
            rule="FilesystemAlmostFull", labels=LABELS, severity="warning", tier=1,
            summary="s", runbook=None, value=0.97, threshold=0.9, context={},
            now=T0, policy=POLICY,
        )  # fmt: skip
        thread = threading.Thread(target=lose)
        thread.start()
        _wait_until_blocked_on_a_lock(store)
    thread.join(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    assert won.kind == "opened"
    assert outcome["change"] == TicketChange(won.ticket_id, "unchanged")
    with store.read() as conn:
        assert agent_instances.applied_seq(conn, agent.agent_id, "boot-1") == 7
    winner.close()
    loser.close()
