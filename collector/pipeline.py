"""The collector's core: apply reports, evaluate rules, drive tickets.

The gRPC servicer decodes messages and calls in here; this module knows nothing of gRPC.
Evaluation is the pure alerts engine; this module feeds it live state, commits what it
returns (alert states and ticket changes, in the transaction that records the report's
seq) and only then lets the caller acknowledge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from alerts.engine import AlertKey, AlertState, Target, Transition, evaluate_agent
from alerts.rules import RuleSet
from collector import tickets
from collector.committer import Committer
from collector.config import CollectorConfig
from collector.convert import Hello, Report
from collector.selfmetrics import CollectorMetrics
from collector.state import AgentLive, LiveState
from collector.store import AgentRecord, SeqAlreadyApplied, Store

log = logging.getLogger(__name__)


@dataclass
class Session:
    """One agent's Connect stream after Hello."""

    agent: AgentRecord
    instance_id: str
    applied_seq: int
    clock_offset: float  # collector clock minus agent clock, measured at Hello
    live: AgentLive


def ticket_policy(config: CollectorConfig) -> tickets.TicketPolicy:
    t = config.tickets
    return tickets.TicketPolicy(
        reopen_window=t.reopen_window,
        flap_count=t.flap_count,
        flap_window=t.flap_window,
        escalate_after={1: t.escalate_tier1_after, 2: t.escalate_tier2_after},
    )


def ticket_context(live: AgentLive, report_context: Mapping[str, Any]) -> dict[str, Any]:
    """What the first line needs on the ticket: processes, disks, uptime, memory."""
    filesystems = []
    for name, labels, value in sorted(live.latest()):
        if name == "filesystem_used_ratio":
            label_map = dict(labels)
            filesystems.append(
                {
                    **label_map,
                    "used_ratio": round(value, 4),
                    "avail_bytes": live.value("filesystem_avail_bytes", **label_map),
                    "size_bytes": live.value("filesystem_size_bytes", **label_map),
                }
            )
    return {
        "top_cpu": list(report_context.get("top_cpu", [])),
        "top_memory": list(report_context.get("top_memory", [])),
        "logged_in_users": list(report_context.get("logged_in_users", [])),
        "filesystems": filesystems,
        "uptime_seconds": live.value("uptime_seconds"),
        "memory_used_ratio": live.value("memory_used_ratio"),
        "cpu_usage_ratio": live.value("cpu_usage_ratio"),
        "load1": live.value("load1"),
    }


class Pipeline:
    def __init__(
        self,
        *,
        store: Store,
        state: LiveState,
        rules: RuleSet,
        config: CollectorConfig,
        metrics: CollectorMetrics,
        committer: Committer,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.state = state
        self.rules = rules
        self.config = config
        self.metrics = metrics
        self.committer = committer
        self.clock = clock
        self.policy = ticket_policy(config)
        self.offline_after = config.effective_offline_after
        self.alert_states: dict[str, dict[AlertKey, AlertState]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._contexts: dict[str, Mapping[str, Any]] = {}

    # -- start-up ---------------------------------------------------------------

    def restore(self, now: float) -> None:
        """Load agents, liveness and alert states from the store after a (re)start.

        Every agent gets a grace of one offline threshold from now: a collector that was
        down for an hour must not open an offline ticket for every PC it could not hear.
        """
        for key, alert in self.store.load_alert_states().items():
            self.alert_states.setdefault(key.agent_id, {})[key] = alert
        last_seen = self.store.last_seen_all()
        for agent in self.store.list_agents():
            if agent.revoked_at is not None:
                continue
            live = self.track(agent)
            live.last_seen = max(last_seen.get(agent.agent_id) or 0.0, now)

    def track(self, agent: AgentRecord) -> AgentLive:
        return self.state.ensure(
            agent.agent_id, customer=agent.customer, hostname=agent.hostname, site=agent.site
        )

    def is_up(self, live: AgentLive, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        return live.last_seen is not None and now - live.last_seen < self.offline_after

    def set_rules(self, rules: RuleSet) -> None:
        """Swap the rule set; alert state is keyed by rule name, so clocks carry over."""
        self.rules = rules

    # -- sessions and reports ---------------------------------------------------

    async def open_session(self, agent: AgentRecord, hello: Hello) -> Session:
        now = self.clock()
        applied = await asyncio.to_thread(self.store.applied_seq, agent.agent_id, hello.instance_id)
        live = self.track(agent)
        live.instance_id = hello.instance_id
        hostname = str(hello.host.get("hostname") or agent.hostname)
        if hostname != agent.hostname or hello.host != agent.inventory:
            await self.committer.submit(
                lambda conn: self.store.update_inventory(
                    agent.agent_id, hostname, hello.host, now, conn=conn
                )
            )
            live.hostname = hostname
        return Session(
            agent=agent,
            instance_id=hello.instance_id,
            applied_seq=applied,
            clock_offset=now - hello.sent_at,
            live=live,
        )

    async def apply(self, session: Session, report: Report) -> bool:
        """Apply one report exactly once; return False for a duplicate seq.

        Returns after the report's effects are committed; raises StoreUnavailable
        when they could not be (the caller must not acknowledge then).
        """
        self.metrics.reports_received.inc()
        if report.seq <= session.applied_seq:
            self.metrics.reports_duplicate.inc()
            return False
        agent = session.agent
        live = session.live
        now = self.clock()
        # The agent's clock is trusted for spacing between its own samples, never for
        # liveness; a corrected time in the future is clamped to now.
        at = min(report.collected_at + session.clock_offset, now)
        async with self._lock(agent.agent_id):
            self.state.record(live, at, report.samples)
            live.last_seen = now
            live.last_collected_at = report.collected_at
            self._contexts[agent.agent_id] = report.context
            new_states, changes, transitions = self._evaluate(live, at)
            context = ticket_context(live, report.context) if transitions else {}

            def work(conn: Connection) -> None:
                self.store.record_applied(
                    conn,
                    agent.agent_id,
                    report.instance_id,
                    report.seq,
                    dropped_total=report.dropped_total,
                    now=now,
                )
                if report.host is not None:
                    hostname = str(report.host.get("hostname") or live.hostname)
                    self.store.update_inventory(
                        agent.agent_id, hostname, report.host, now, conn=conn
                    )
                self._commit_alerts(conn, live, changes, transitions, context)

            try:
                await self.committer.submit(work)
            except SeqAlreadyApplied:
                # Another collector applied it first (an agent moved mid-outage).
                self.metrics.reports_duplicate.inc()
                session.applied_seq = report.seq
                return False
            self.alert_states[agent.agent_id] = new_states
        session.applied_seq = report.seq
        live.dropped_reports_total = report.dropped_total
        live.reports_applied += 1
        self.metrics.reports_applied.inc()
        self.metrics.samples_received.inc(len(report.samples))
        self._count(transitions)
        return True

    # -- timers -------------------------------------------------------------------

    async def tick(self, now: float | None = None) -> None:
        """Evaluate what time alone can change, then escalate overdue tickets.

        Without new reports only timers move alerts: a pending `for` elapsing, a clear
        hold elapsing, an agent falling silent. Agents with none of those are skipped,
        so a tick over thousands of quiet agents stays cheap.
        """
        now = self.clock() if now is None else now
        for live in list(self.state.agents.values()):
            states = self.alert_states.get(live.agent_id, {})
            went_silent = not self.is_up(live, now) and not any(
                key.rule == self.rules.offline_rule.name for key in states
            )
            timers = any(s.phase == "pending" or s.clear_since is not None for s in states.values())
            if not (went_silent or timers):
                continue
            if not went_silent and live.last_point_at is None:
                # Restored after a restart and not reported since: without its series
                # every alert would read "series gone". Wait for its first report.
                continue
            lock = self._lock(live.agent_id)
            if lock.locked():
                continue  # a report is being applied: it evaluates this agent anyway
            async with lock:
                new_states, changes, transitions = self._evaluate(live, now)
                if not changes:
                    continue
                context = (
                    ticket_context(live, self._contexts.get(live.agent_id, {}))
                    if transitions
                    else {}
                )
                await self.committer.submit(
                    lambda conn, live=live, changes=changes, transitions=transitions, context=context: (  # noqa: E501
                        self._commit_alerts(conn, live, changes, transitions, context)
                    )
                )
                self.alert_states[live.agent_id] = new_states
            self._count(transitions)
        escalated = await self.committer.submit(
            lambda conn: tickets.escalate_due(conn, now=now, policy=self.policy)
        )
        if escalated:
            self.metrics.ticket_transitions.labels("escalated").inc(len(escalated))
            log.info("tickets escalated", extra={"tickets": [c.ticket_id for c in escalated]})

    # -- internals ----------------------------------------------------------------

    def _lock(self, agent_id: str) -> asyncio.Lock:
        lock = self._locks.get(agent_id)
        if lock is None:
            lock = self._locks[agent_id] = asyncio.Lock()
        return lock

    def _evaluate(
        self, live: AgentLive, now: float
    ) -> tuple[dict[AlertKey, AlertState], dict[AlertKey, AlertState | None], list[Transition]]:
        old = self.alert_states.get(live.agent_id, {})
        target = Target(
            agent_id=live.agent_id,
            customer=live.customer,
            host=live.hostname,
            site=live.site,
            last_seen=live.last_seen,
            offline_after=self.offline_after,
        )
        new, transitions = evaluate_agent(
            self.rules, target, self.state.series_data(live), old, now
        )
        changes: dict[AlertKey, AlertState | None] = {
            key: state for key, state in new.items() if old.get(key) != state
        }
        changes.update({key: None for key in old if key not in new})
        return new, changes, transitions

    def _commit_alerts(
        self,
        conn: Connection,
        live: AgentLive,
        changes: Mapping[AlertKey, AlertState | None],
        transitions: list[Transition],
        context: dict[str, Any],
    ) -> None:
        if changes:
            self.store.save_alert_states(conn, changes)
        for tr in transitions:
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
                )
            else:
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

    def _count(self, transitions: list[Transition]) -> None:
        for tr in transitions:
            self.metrics.ticket_transitions.labels(tr.kind).inc()
