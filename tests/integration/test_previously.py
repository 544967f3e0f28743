"""What fixed it last time, and the snapshot a ticket keeps, on a real database (SQLite
always, PostgreSQL when the run has one), with known tickets and a fake clock."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect

from tests.conftest import FakeClock
from tests.integration.ticket_helpers import POLICY, clear, fire
from tripline.collector import enrollment, ticketmodel, ticketqueries, tickets, ticketsnapshots
from tripline.collector.agents_store import AgentRecord
from tripline.collector.store import Store

HOUR = 3600.0


def _show(store: Store, ticket_id: int) -> ticketmodel.Ticket:
    with store.read() as conn:
        return ticketqueries.get_ticket(conn, ticket_id)


def _episode(
    store: Store,
    agent: AgentRecord,
    clock: FakeClock,
    *,
    took: float,
    how: str,
    note: str | None = None,
    comments: tuple[str, ...] = (),
    **fire_args: Any,
) -> int:
    """One ticket opened now and ended `took` seconds later; the clock then moves past
    the reopen window, so the next episode opens a new ticket."""
    change = fire(store, agent, clock.now, **fire_args)
    assert change.kind == "opened"
    for text in comments:
        with store.transaction() as conn:
            tickets.comment(conn, change.ticket_id, actor="bob", text=text, now=clock.now + 1)
    clock.advance(took)
    if how == "auto":
        with store.transaction() as conn:
            tickets.on_alert_resolved(
                conn,
                customer=agent.customer,
                agent_id=agent.agent_id,
                rule=fire_args.get("rule", "FilesystemAlmostFull"),
                labels=fire_args.get("labels", (("mountpoint", "/"), ("device", "sda1"))),
                value=0.5,
                reason="cleared",
                now=clock.now,
            )
    else:
        with store.transaction() as conn:
            tickets.resolve(conn, change.ticket_id, actor=how, now=clock.now, note=note)
    clock.advance(POLICY.reopen_window + HOUR)
    return change.ticket_id


def test_a_first_ticket_has_no_history(store: Store, agent: AgentRecord) -> None:
    change = fire(store, agent, 1_700_000_000.0)
    shown = _show(store, change.ticket_id)
    assert shown.previously == {"scope": None, "tickets": []}
    assert shown.to_dict()["previously"] == {"scope": None, "tickets": []}


def test_the_last_three_tickets_on_the_pc_say_how_they_ended(
    store: Store, agent: AgentRecord, clock: FakeClock
) -> None:
    oldest = _episode(store, agent, clock, took=60, how="alice", note="too old to show")
    auto = _episode(store, agent, clock, took=300, how="auto")
    noted = _episode(
        store, agent, clock, took=2 * HOUR, how="alice", note="emptied C:\\Windows\\Temp"
    )
    commented = _episode(
        store,
        agent,
        clock,
        took=90,
        how="bob",
        comments=("looking", "moved the Outlook archive to the NAS"),
        # another mountpoint: the same rule on the same PC still counts
        labels=(("mountpoint", "/home"), ("device", "sda2")),
    )
    now = fire(store, agent, clock.now)
    shown = _show(store, now.ticket_id)
    assert shown.previously is not None
    assert shown.previously["scope"] == "agent"
    earlier = shown.previously["tickets"]
    assert [t["id"] for t in earlier] == [commented, noted, auto]
    assert oldest not in [t["id"] for t in earlier]
    by_id = {t["id"]: t for t in earlier}
    assert by_id[auto]["auto_resolved"] is True
    assert by_id[auto]["resolved_by"] == "tripline"
    assert by_id[auto]["note"] is None
    assert by_id[auto]["took_seconds"] == 300
    assert by_id[noted]["resolved_by"] == "alice"
    assert by_id[noted]["note"] == "emptied C:\\Windows\\Temp"
    assert by_id[noted]["took_seconds"] == 2 * HOUR
    # resolved without a note: the last comment says what was done
    assert by_id[commented]["note"] == "moved the Outlook archive to the NAS"
    assert by_id[commented]["auto_resolved"] is False
    assert by_id[commented]["took_seconds"] == 90


def test_without_history_on_the_pc_the_customers_other_pcs_count(
    store: Store, agent: AgentRecord, clock: FakeClock
) -> None:
    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, "acme", now=clock.now)
    with store.transaction() as conn:
        other, _ = enrollment.enroll_agent(
            conn, token, hostname="pc-02", site="hq", inventory={}, now=clock.now
        )
    with store.transaction() as conn:
        _, globex_token = enrollment.create_token(conn, "globex", now=clock.now)
    with store.transaction() as conn:
        stranger, _ = enrollment.enroll_agent(
            conn, globex_token, hostname="gx-01", site="hq", inventory={}, now=clock.now
        )
    theirs = _episode(store, other, clock, took=600, how="carol", note="replaced the disk")
    _episode(store, stranger, clock, took=60, how="auto")  # another customer: never shown
    _episode(store, other, clock, took=60, how="auto", rule="CpuBusy")  # another rule
    mine = fire(store, agent, clock.now)
    shown = _show(store, mine.ticket_id)
    assert shown.previously is not None
    assert shown.previously["scope"] == "customer"
    assert [(t["id"], t["hostname"], t["note"]) for t in shown.previously["tickets"]] == [
        (theirs, "pc-02", "replaced the disk")
    ]


def test_a_reopened_ticket_does_not_list_itself(
    store: Store, agent: AgentRecord, clock: FakeClock
) -> None:
    first = fire(store, agent, clock.now)
    clear(store, agent, clock.advance(60))
    again = fire(store, agent, clock.advance(60))  # within the reopen window
    assert again.kind == "reopened" and again.ticket_id == first.ticket_id
    assert _show(store, again.ticket_id).previously == {"scope": None, "tickets": []}


def test_snapshots_attach_to_open_tickets_lacking_one_and_a_reopen_replaces_it(
    store: Store, agent: AgentRecord, clock: FakeClock
) -> None:
    disk = fire(store, agent, clock.now)
    offline = fire(store, agent, clock.now, rule="AgentOffline", labels=())
    done = fire(store, agent, clock.now, rule="CpuBusy", labels=())
    with store.transaction() as conn:
        tickets.resolve(conn, done.ticket_id, actor="alice", now=clock.now)
    first = {"top_cpu": [{"pid": 1, "name": "a"}]}
    with store.transaction() as conn:
        attached = ticketsnapshots.attach_to_open(
            conn, agent_id=agent.agent_id, data=first, taken_at=clock.advance(2),
            skip_rules=("AgentOffline",),
        )  # fmt: skip
    assert attached == [disk.ticket_id]
    shown = _show(store, disk.ticket_id)
    assert (shown.snapshot, shown.snapshot_taken_at) == (first, clock.now)
    assert _show(store, offline.ticket_id).snapshot is None
    assert _show(store, done.ticket_id).snapshot is None
    # A later one does not replace what was taken while the problem first held.
    with store.transaction() as conn:
        assert ticketsnapshots.attach_to_open(
            conn, agent_id=agent.agent_id, data={"x": 1}, taken_at=clock.advance(5)
        ) == [offline.ticket_id]
    assert _show(store, disk.ticket_id).snapshot == first
    with store.transaction() as conn:
        ticketsnapshots.replace(conn, disk.ticket_id, {"y": 2}, clock.now)
    assert _show(store, disk.ticket_id).snapshot == {"y": 2}


def test_migration_5_indexes_the_history_query(store: Store) -> None:
    with store.read() as conn:
        names = {ix["name"] for ix in inspect(conn).get_indexes("tickets")}
    assert {"ix_tickets_agent_rule_resolved", "ix_tickets_customer_rule_resolved"} <= names
