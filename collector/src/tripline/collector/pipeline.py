"""The collector's core: apply reports, evaluate rules, drive tickets.

The gRPC servicer decodes messages and calls in here; this module knows nothing of gRPC.
Evaluation is the pure alerts engine; this module feeds it live state, commits what it
returns (alert states and ticket changes, in the transaction that records the report's
seq) and only then lets the caller acknowledge.

What each step decides lives elsewhere (liveness.py, suppression.py, correlation.py,
sessions.py, ticketcontext.py, and alertwrites.py for what a transition writes); this
module stays at ~550 lines because what is left is one piece: apply, the timer's tick,
retire and the held-back release take the same per-agent lock, evaluate, commit through
the committer and only then update memory and let the caller acknowledge. The delivery
contract (acknowledge only what is durable, apply exactly once) rests on that order
being the same in each, best read side by side.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from tripline.alerts.engine import AlertKey, AlertState, Target, Transition, evaluate_agent
from tripline.alerts.grouping import Firing
from tripline.alerts.rules import RuleSet
from tripline.collector import (
    agent_instances,
    agents_store,
    alert_states,
    faults,
    tickets,
    ticketsnapshots,
)
from tripline.collector.alertwrites import AlertWriter
from tripline.collector.committer import Committer
from tripline.collector.config import CollectorConfig
from tripline.collector.convert import Hello, Report
from tripline.collector.correlation import Correlation
from tripline.collector.history import HistoryRecorder
from tripline.collector.liveness import Liveness
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.sessions import Session, report_time
from tripline.collector.snapshots import SnapshotBroker
from tripline.collector.state import AgentLive, LiveState
from tripline.collector.store import (
    AgentRecord,
    InstancePosition,
    SeqAlreadyApplied,
    Store,
    StoreUnavailable,
)
from tripline.collector.suppression import Suppressed, Suppression
from tripline.collector.ticketcontext import ticket_context, ticket_policy
from tripline.collector.windowcache import WindowCache
from tripline.common.labels import Labels

log = logging.getLogger(__name__)


def _clocks(state: AlertState | None) -> tuple[object, ...] | None:
    if state is None:
        return None
    return (state.phase, state.active_since, state.firing_since, state.clear_since)


# How often the timer looks for agents revoked by another process (the CLI).
REVOCATION_CHECK_INTERVAL = 30.0


# what it returns is ignored (the exposition answers the bytes it rendered)
ReportListener = Callable[[AgentLive, Sequence[tuple[str, Labels, float]]], object]


def _ignore_report(live: AgentLive, samples: Sequence[tuple[str, Labels, float]]) -> None:
    del live, samples


def _nothing() -> None:
    return None


def _ignore_agent(agent_id: str) -> None:
    del agent_id


class Pipeline:
    """Applies reports, evaluates rules on reports and timers, drives tickets.

    Listeners, given at construction:

    - `on_report(live, samples)`: after each applied report (the exposition);
    - `on_ticket_change()`: after ticket changes commit, so delivery need not wait for
      its next poll;
    - `on_retire(agent_id)`: when a revoked agent is dropped from live state.
    """

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
        liveness: Liveness | None = None,
        on_report: ReportListener = _ignore_report,
        on_ticket_change: Callable[[], None] = _nothing,
        on_retire: Callable[[str], None] = _ignore_agent,
    ) -> None:
        self.store = store
        self.state = state
        self.rules = rules
        self._rule_metrics = frozenset(rule.metric for rule in rules.threshold_rules)
        self.config = config
        self.metrics = metrics
        self.committer = committer
        self.clock = clock
        self.policy = ticket_policy(config)
        # Fresh context from the agent while a problem holds (servicer attaches streams).
        self.snapshots = SnapshotBroker(
            metrics=metrics,
            min_interval=config.snapshot_min_interval,
            timeout=config.snapshot_timeout,
            clock=clock,
        )
        self.offline_after = config.effective_offline_after
        self.alert_states: dict[str, dict[AlertKey, AlertState]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._contexts: dict[str, Mapping[str, Any]] = {}
        self.on_report = on_report
        self.on_ticket_change = on_ticket_change
        self.on_retire = on_retire
        self._next_revocation_check = 0.0
        # Whose silence counts (offline threshold, restart grace, business hours); built
        # before the pipeline when the exposition needs it first.
        self.liveness = liveness or Liveness(store=store, state=state, config=config, clock=clock)
        # Maintenance windows hold alerts back.
        self.suppression = Suppression()
        # What each transition becomes in the store (alertwrites.py).
        self.writer = AlertWriter(
            store=store,
            rules=rules,
            suppression=self.suppression,
            snapshots=self.snapshots,
            policy=self.policy,
            clock=clock,
        )
        self.history = HistoryRecorder(gap=self.offline_after)  # for the service report
        # One ticket for many PCs: a site outage, a rule tripping across a customer.
        self.correlation = Correlation(
            rules=rules,
            site_outage=config.site_outage,
            state=state,
            unreported=self.liveness.unreported,
            committer=committer,
            metrics=metrics,
            policy=self.policy,
        )

    @property
    def windows(self) -> WindowCache:
        """The maintenance windows in force (the API invalidates it after a change)."""
        return self.suppression.windows

    # -- start-up ---------------------------------------------------------------

    def restore(self, now: float) -> None:
        """Load agents, liveness, alert states and held-back alerts from the store after a
        (re)start (see `Liveness.restore` for the grace every agent gets)."""
        for key, alert in self.store.run_read(alert_states.load).items():
            self.alert_states.setdefault(key.agent_id, {})[key] = alert
        self.liveness.restore(now)
        with self.store.read() as conn:
            self.suppression.restore(conn, now)
            self.correlation.restore(conn, self.alert_states)

    def track(self, agent: AgentRecord) -> AgentLive:
        return self.liveness.track(agent)

    def is_up(self, live: AgentLive, now: float | None = None) -> bool:
        return self.liveness.is_up(live, now)

    def set_rules(self, rules: RuleSet) -> None:
        """Swap the rule set; alert state is keyed by rule name, so clocks carry over."""
        self.rules = rules
        self._rule_metrics = frozenset(rule.metric for rule in rules.threshold_rules)
        self.writer.rules = rules
        self.correlation.set_rules(rules)

    # -- sessions and reports ---------------------------------------------------

    async def open_session(self, agent: AgentRecord, hello: Hello) -> Session:
        now = self.clock()
        position = await asyncio.to_thread(
            self.store.run_read,
            lambda c: agent_instances.instance_position(c, agent.agent_id, hello.instance_id),
        )
        if position.applied_seq == 0 and position.report_at is None:
            # A new instance; perhaps a new agent, perhaps enrolled by another collector.
            reported = await asyncio.to_thread(
                self.store.run_read,
                lambda c: agent_instances.reported_agent_ids(c, {agent.agent_id}),
            )
            if not reported:
                self.liveness.unreported.add(agent.agent_id)
        live = self.track(agent)
        self.liveness.held(agent.agent_id)
        if live.last_seen is None:
            live.last_seen = now  # new to this process: not offline before its first report
        # The agent may come from another collector sharing the store (a load balancer
        # moved it): its alert clocks are the store's, not what this process saw last.
        async with self._lock(agent.agent_id):
            self.alert_states[agent.agent_id] = await asyncio.to_thread(
                self.store.run_read, lambda c: alert_states.load(c, agent_id=agent.agent_id)
            )
        live.instance_id = hello.instance_id
        self.liveness.note_tags(agent.agent_id, hello.host.get("tags") or {})
        hostname = str(hello.host.get("hostname") or agent.hostname)
        if hostname != agent.hostname or hello.host != agent.inventory:
            await self.committer.submit(
                lambda conn: agents_store.update_inventory(
                    conn, agent.agent_id, hostname, hello.host, now
                )
            )
            live.hostname = hostname
        return Session(
            agent=agent,
            instance_id=hello.instance_id,
            applied_seq=position.applied_seq,
            clock_offset=now - hello.sent_at,
            live=live,
            position=position,
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
        at = report_time(
            session,
            report,
            now,
            max_clock_skew=self.config.max_clock_skew,
            interval=self.config.interval,
        )
        async with self._lock(agent.agent_id):
            self.state.record(live, at, report.samples, received=now)
            live.last_seen = now
            live.grace_until = 0.0  # heard from: silence from now on is real
            self.liveness.held(agent.agent_id)
            live.last_collected_at = report.collected_at
            self._contexts[agent.agent_id] = report.context
            if report.host is not None:
                self.liveness.note_tags(agent.agent_id, report.host.get("tags") or {})
            old_states = self.alert_states.get(agent.agent_id, {})
            new_states, changes, transitions = self._evaluate(live, at)
            self.writer.want_snapshot(live, old_states, new_states, transitions)
            context = ticket_context(live, report.context) if transitions else {}
            firings, taken = self._grouping(live, transitions, at)

            def work(conn: Connection) -> dict[AlertKey, Suppressed | None]:
                agent_instances.record_applied(
                    conn,
                    agent.agent_id,
                    report.instance_id,
                    report.seq,
                    dropped_total=report.dropped_total,
                    now=now,
                    collected_at=report.collected_at,
                    report_at=at,
                )
                if report.host is not None:
                    hostname = str(report.host.get("hostname") or live.hostname)
                    agents_store.update_inventory(conn, agent.agent_id, hostname, report.host, now)
                self.history.record(
                    conn, agent.agent_id, report.samples, received_at=now, report_at=at
                )
                held = self.writer.write(conn, live, changes, transitions, context, taken)
                faults.hit("before_commit")
                return held

            try:
                held = await self.committer.submit(work)
            except SeqAlreadyApplied:
                # Another collector applied it first (an agent moved mid-outage).
                self.metrics.reports_duplicate.inc()
                session.applied_seq = report.seq
                return False
            faults.hit("after_commit_before_ack")
            self.alert_states[agent.agent_id] = new_states
            self._hold(held)
            self.correlation.observe(transitions, firings, taken)
        session.applied_seq = report.seq
        self.liveness.unreported.discard(agent.agent_id)
        session.position = InstancePosition(report.seq, report.collected_at, at, now)
        live.dropped_reports_total = report.dropped_total
        live.reports_applied += 1
        self.on_report(live, report.samples)
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
        await self.suppression.reload_windows(self.store, now)
        await self.liveness.sync(now)
        if now >= self._next_revocation_check:
            self._next_revocation_check = now + REVOCATION_CHECK_INTERVAL
            revoked = await asyncio.to_thread(self.store.run_read, agents_store.revoked_agent_ids)
            for agent_id in revoked & self.state.agents.keys():
                await self.retire(agent_id, now)
        for live in list(self.state.agents.values()):
            states = self.alert_states.get(live.agent_id, {})
            went_silent = not self.liveness.is_up(live, now) and not any(
                key.rule == self.rules.offline_rule.name for key in states
            )
            if went_silent and not self.liveness.expected(live, now):
                continue  # an office PC after hours: its alerts stay as they are, as offline
            if went_silent and live.agent_id in self.liveness.unreported:
                continue  # enrolled, never reported: nothing it did can have stopped
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
                old_states = self.alert_states.get(live.agent_id, {})
                new_states, changes, transitions = self._evaluate(live, now)
                if not changes:
                    continue
                self.writer.want_snapshot(live, old_states, new_states, transitions)
                context = (
                    ticket_context(live, self._contexts.get(live.agent_id, {}))
                    if transitions
                    else {}
                )
                firings, taken = self._grouping(live, transitions, now)
                held = await self.committer.submit(
                    functools.partial(
                        self.writer.write,
                        live=live,
                        changes=changes,
                        transitions=transitions,
                        context=context,
                        taken=taken,
                    )
                )
                self.alert_states[live.agent_id] = new_states
                self._hold(held)
                self.correlation.observe(transitions, firings, taken)
            self._count(transitions)
        if self.suppression.held:
            await self._release_suppressed(now)
        if await self.correlation.run(now, self._context_for):
            self.on_ticket_change()
        escalated = await self.committer.submit(
            lambda conn: tickets.escalate_due(conn, now=now, policy=self.policy)
        )
        if escalated:
            self.on_ticket_change()
            self.metrics.ticket_transitions.labels("escalated").inc(len(escalated))
            log.info("tickets escalated", extra={"tickets": [c.ticket_id for c in escalated]})

    async def retire(self, agent_id: str, now: float) -> None:
        """Stop watching a revoked agent: its open tickets resolve, its state goes.

        A revoked PC falls silent for good; without this it would open an offline ticket
        nobody can act on. Revocations made by the CLI in another process are found by
        the periodic check in :meth:`tick`; the API retires at once.
        """
        live = self.state.agents.get(agent_id)
        if live is None:
            return
        async with self._lock(agent_id):
            states = self.alert_states.get(agent_id, {})
            firing = [key for key, state in states.items() if state.phase == "firing"]

            def work(conn: Connection) -> None:
                alert_states.save(conn, {key: None for key in states})
                for key in firing:
                    tickets.on_alert_resolved(
                        conn,
                        customer=live.customer,
                        agent_id=agent_id,
                        rule=key.rule,
                        labels=key.labels,
                        value=states[key].value,
                        reason="agent revoked",
                        now=now,
                    )

            await self.committer.submit(work)
            self.alert_states.pop(agent_id, None)
            self.state.forget(agent_id)
            self.snapshots.forget(agent_id)
            self.liveness.forget(agent_id)
            self.history.forget(agent_id)
            self.correlation.forget_agent(agent_id)
            self.on_retire(agent_id)
        log.info("revoked agent retired", extra={"agent_id": agent_id, "resolved": len(firing)})
        if firing:
            self.on_ticket_change()

    # -- snapshots ----------------------------------------------------------------

    async def snapshot_arrived(self, agent_id: str, request_id: str, data: dict[str, Any]) -> None:
        """An agent's answer: kept for tickets opening later, and attached now to its
        open tickets that have none (a ticket that opened before it arrived)."""
        taken = self.snapshots.receive(agent_id, request_id, data)
        if taken is None:
            return
        try:
            attached = await self.committer.submit(
                lambda conn: ticketsnapshots.attach_to_open(
                    conn,
                    agent_id=agent_id,
                    data=taken.data,
                    taken_at=taken.taken_at,
                    skip_rules=(self.rules.offline_rule.name,),
                )
            )
        except StoreUnavailable as exc:
            log.warning(
                "snapshot not attached to tickets", extra={"agent_id": agent_id, "error": str(exc)}
            )
            return
        if attached:
            log.info("snapshot attached", extra={"agent_id": agent_id, "tickets": attached})

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
            last_seen=self.liveness.seen(live),
            offline_after=self.liveness.threshold(live),
        )
        new, transitions = evaluate_agent(
            self.rules, target, self.state.series_data(live, self._rule_metrics), old, now
        )
        # Only what a restart needs is written: phases and clocks, not every evaluation's
        # value and time, which would turn each report into a row update per alert.
        changes: dict[AlertKey, AlertState | None] = {
            key: state for key, state in new.items() if _clocks(old.get(key)) != _clocks(state)
        }
        changes.update({key: None for key in old if key not in new})
        return new, changes, transitions

    def _grouping(
        self, live: AgentLive, transitions: list[Transition], now: float
    ) -> tuple[dict[AlertKey, Firing], set[AlertKey]]:
        """The firing transitions that group, and those a group ticket takes (they open no
        ticket of their own); decided before the commit, from memory only."""
        if not any(tr.kind == "firing" for tr in transitions):
            return {}, set()
        firings = self.correlation.absorb(
            live,
            transitions,
            lambda tr: self.suppression.window_for(live, tr.rule.name, tr.at) is not None,
        )
        return firings, self.correlation.taken(firings, now) if firings else set()

    def _context_for(self, agent_id: str) -> dict[str, Any]:
        live = self.state.agents.get(agent_id)
        return {} if live is None else ticket_context(live, self._contexts.get(agent_id, {}))

    def _count(self, transitions: list[Transition]) -> None:
        for tr in transitions:
            self.metrics.ticket_transitions.labels(tr.kind).inc()
        if transitions:
            self.on_ticket_change()

    # -- maintenance windows --------------------------------------------------------

    def _hold(self, held: Mapping[AlertKey, Suppressed | None]) -> None:
        """Apply committed suppression bookkeeping to memory (None: no longer held)."""
        added = self.suppression.hold(held)
        if added:
            self.metrics.ticket_transitions.labels("suppressed").inc(added)

    async def _release_suppressed(self, now: float) -> None:
        """Open the tickets of held-back alerts that outlived every matching window."""
        for key, held, live in self.suppression.releasable(self.state.agents, now):
            lock = self._lock(key.agent_id)
            if lock.locked():
                continue  # a report is being applied; the next tick looks again
            async with lock:
                state = self.alert_states.get(key.agent_id, {}).get(key)
                firing = live if state is not None and state.phase == "firing" else None
                context = (
                    {}
                    if live is None
                    else ticket_context(live, self._contexts.get(key.agent_id, {}))
                )
                change = await self.committer.submit(
                    functools.partial(
                        self.suppression.release,
                        held=held,
                        live=firing,
                        state=state,
                        context=context,
                        now=now,
                        policy=self.policy,
                    )
                )
                self.suppression.held.pop(key, None)
            if change is not None:
                self.metrics.ticket_transitions.labels("released").inc()
                self.on_ticket_change()
                log.info(
                    "ticket %s after maintenance window",
                    change.kind,
                    extra={
                        "ticket_id": change.ticket_id,
                        "agent_id": key.agent_id,
                        "rule": key.rule,
                    },
                )
