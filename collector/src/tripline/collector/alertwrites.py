"""What an evaluation's result writes, in the transaction that applies the report (or
the timer's): alert states, ticket changes, maintenance-window bookkeeping, and the
diagnostic snapshot a new ticket gets; and when to ask an agent for that snapshot.

The pipeline decides when and under which lock this runs; this module decides what each
transition becomes in the store. It only writes through the connection it is given, so
everything it does commits or rolls back with the report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from tripline.alerts.engine import AlertKey, AlertState, Transition
from tripline.alerts.rules import RuleSet
from tripline.collector import alert_states, suppression, ticketmodel, tickets, ticketsnapshots
from tripline.collector.snapshots import SnapshotBroker
from tripline.collector.state import AgentLive
from tripline.collector.store import Store
from tripline.collector.suppression import Suppressed, Suppression

# The pipeline's logger: these lines were the pipeline's before the split, and log
# filters and tests select them by logger name.
log = logging.getLogger("tripline.collector.pipeline")


class AlertWriter:
    """Turns transitions into store changes; `rules` follows the pipeline's rule set."""

    def __init__(
        self,
        *,
        store: Store,
        rules: RuleSet,
        suppression: Suppression,
        snapshots: SnapshotBroker,
        policy: ticketmodel.TicketPolicy,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.rules = rules
        self.suppression = suppression
        self.snapshots = snapshots
        self.policy = policy
        self.clock = clock

    def want_snapshot(
        self,
        live: AgentLive,
        old: Mapping[AlertKey, AlertState],
        new: Mapping[AlertKey, AlertState],
        transitions: Sequence[Transition],
    ) -> None:
        """Ask the agent for a snapshot when one of its rules went pending or fired (not
        the offline rule: a silent PC cannot answer)."""
        offline = self.rules.offline_rule.name
        pending = any(
            key.rule != offline
            and state.phase == "pending"
            and (key not in old or old[key].phase != "pending")
            for key, state in new.items()
        )
        firing = any(t.kind == "firing" and t.rule.name != offline for t in transitions)
        if pending or firing:
            self.snapshots.want(live.agent_id, "pending" if pending else "firing")

    def _give_snapshot(
        self, conn: Connection, agent_id: str, ticket_id: int, tr: Transition
    ) -> None:
        """An opened or reopened ticket gets the latest snapshot taken since the
        condition began to hold; a reopened one loses its earlier occurrence's."""
        taken = None
        if tr.rule.name != self.rules.offline_rule.name:
            taken = self.snapshots.latest(agent_id, since=tr.at - tr.rule.for_seconds)
        if taken is None:
            ticketsnapshots.clear(conn, ticket_id)  # one may still arrive: it attaches then
        else:
            ticketsnapshots.replace(conn, ticket_id, taken.data, taken.taken_at)

    def write(
        self,
        conn: Connection,
        live: AgentLive,
        changes: Mapping[AlertKey, AlertState | None],
        transitions: list[Transition],
        context: dict[str, Any],
        taken: set[AlertKey] = frozenset(),  # type: ignore[assignment]
    ) -> dict[AlertKey, Suppressed | None]:
        """Returns the suppression bookkeeping to apply once committed (see `_hold`).
        Firing alerts in `taken` belong to a group ticket (see `correlation.py`)."""
        if changes:
            alert_states.save(conn, changes)
        held: dict[AlertKey, Suppressed | None] = {}
        for tr in transitions:
            window = None
            if tr.kind == "firing":
                window = self.suppression.window_for(live, tr.rule.name, tr.at)
            if window is not None:
                held[tr.key] = self.suppression.suppress(conn, live, tr, window)
                continue
            if tr.key in taken:
                continue  # the group ticket lists it (correlation.py commits that)
            change: ticketmodel.TicketChange | None
            if tr.kind == "firing":
                change = tickets.on_alert_firing(
                    conn,
                    customer=live.customer,
                    agent_id=live.agent_id,
                    hostname=live.hostname,
                    rule=tr.rule.name,
                    labels=tr.key.labels,
                    severity=tr.rule.severity,
                    tier=tr.rule.tier,
                    summary=tr.summary,
                    runbook=tr.rule.runbook,
                    value=tr.value,
                    threshold=tr.rule.threshold,
                    context=context,
                    now=tr.at,
                    policy=self.policy,
                    seen_at=self.clock(),
                )
            else:
                # Held back and now clear: it leaves no ticket.
                if suppression.clear_suppressed(
                    conn,
                    customer=live.customer,
                    agent_id=live.agent_id,
                    rule=tr.rule.name,
                    labels=tr.key.labels,
                    now=tr.at,
                ):
                    held[tr.key] = None
                change = tickets.on_alert_resolved(
                    conn,
                    customer=live.customer,
                    agent_id=live.agent_id,
                    rule=tr.rule.name,
                    labels=tr.key.labels,
                    value=tr.value,
                    reason=tr.reason,
                    now=tr.at,
                )
            if change is not None and change.kind in ("opened", "reopened"):
                self._give_snapshot(conn, live.agent_id, change.ticket_id, tr)
            if change is not None:
                log.info(
                    "ticket %s",
                    change.kind,
                    extra={
                        "ticket_id": change.ticket_id,
                        "agent_id": live.agent_id,
                        "customer": live.customer,
                        "rule": tr.rule.name,
                        "labels": dict(tr.key.labels),
                        "value": tr.value,
                    },
                )
        return held
