"""The pipeline's side of correlated problems: feeds `alerts.grouping.Correlator` with the
alerts that fire and clear, and commits its decisions as group tickets
(`grouptickets.py`).

Which alerts group: the built-in offline rule by site (the collector's `site_outage`
settings), and every rule with a `group` option. A firing alert the correlator takes
opens no ticket of its own; the decision is made before the commit (memory only) and
handed to it, and memory learns what fired only once the commit succeeded.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Connection

from tripline.alerts.engine import AlertKey, AlertState, Transition
from tripline.alerts.grouping import Action, Correlator, Firing, Join, Open, Own, Resolve
from tripline.alerts.model import Grouping, Rule, RuleSet
from tripline.collector import grouptickets, ticketmodel
from tripline.collector.committer import Committer
from tripline.collector.config import SiteOutageSettings
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.state import AgentLive, LiveState

log = logging.getLogger(__name__)

ContextFor = Callable[[str], dict[str, Any]]


def group_rules(rules: RuleSet, site_outage: SiteOutageSettings) -> dict[str, Rule]:
    """Rule name -> rule, for the rules whose alerts group (the offline rule's `group` is
    the site outage settings)."""
    out = {rule.name: rule for rule in rules.threshold_rules if rule.group is not None}
    if site_outage.enabled:
        spec = Grouping(
            by="site",
            min_agents=site_outage.min_agents,
            within=site_outage.within,
            min_ratio=site_outage.min_ratio,
        )
        offline = rules.offline_rule
        out[offline.name] = dataclasses.replace(offline, group=spec)
    return out


class Correlation:
    def __init__(
        self,
        *,
        rules: RuleSet,
        site_outage: SiteOutageSettings,
        state: LiveState,
        unreported: set[str],
        committer: Committer,
        metrics: CollectorMetrics,
        policy: ticketmodel.TicketPolicy,
    ) -> None:
        self.site_outage = site_outage
        self.state = state
        self._unreported = unreported  # the liveness tracker's set, shared: never reassigned
        self.committer = committer
        self.metrics = metrics
        self.policy = policy
        self.rules = group_rules(rules, site_outage)
        # rules of groups still open survive a rule reload until those groups resolve
        self._known: dict[str, Rule] = dict(self.rules)
        self.correlator = Correlator({n: r.group for n, r in self.rules.items() if r.group})

    def set_rules(self, rules: RuleSet) -> None:
        self.rules = group_rules(rules, self.site_outage)
        self._known.update(self.rules)
        self.correlator.set_specs({n: r.group for n, r in self.rules.items() if r.group})

    def population(self, customer: str, site: str) -> int:
        """The PCs of a customer (site "") or of one of its sites that have ever reported."""
        return sum(
            1
            for live in self.state.agents.values()
            if live.customer == customer
            and (not site or live.site == site)
            and live.agent_id not in self._unreported
        )

    def _populations(self) -> Callable[[str, str], int]:
        counts: Counter[tuple[str, str]] = Counter()
        for live in self.state.agents.values():
            if live.agent_id in self._unreported:
                continue
            counts[(live.customer, "")] += 1
            counts[(live.customer, live.site)] += 1
        return lambda customer, site: counts[(customer, site)]

    # -- around each commit of alert transitions --------------------------------------------

    def absorb(
        self,
        live: AgentLive,
        transitions: Iterable[Transition],
        windowed: Callable[[Transition], bool],
    ) -> dict[AlertKey, Firing]:
        """The firing transitions that group, each with whether the correlator takes it
        (opens no ticket of its own): decide before the commit, pass the taken keys to it
        and `observe` after it."""
        decided: dict[AlertKey, Firing] = {}
        for tr in transitions:
            if tr.kind != "firing" or tr.rule.name not in self.rules or windowed(tr):
                continue
            decided[tr.key] = Firing(
                key=tr.key,
                customer=live.customer,
                site=live.site,
                hostname=live.hostname,
                since=tr.at,
                value=tr.value,
                summary=tr.summary,
            )
        return decided

    def taken(self, firings: Mapping[AlertKey, Firing], now: float) -> set[AlertKey]:
        population = self.population
        return {
            key
            for key, firing in firings.items()
            if self.correlator.should_absorb(firing, population, now)
        }

    def observe(
        self,
        transitions: Iterable[Transition],
        firings: Mapping[AlertKey, Firing],
        taken: set[AlertKey],
    ) -> None:
        """After the commit: what fired and cleared."""
        for tr in transitions:
            if tr.kind == "resolved":
                self.correlator.cleared(tr.key)
            elif tr.key in firings:
                self.correlator.fired(firings[tr.key], absorbed=tr.key in taken)
        if taken:
            self.metrics.ticket_transitions.labels("grouped").inc(len(taken))

    def forget_agent(self, agent_id: str) -> None:
        self.correlator.forget_agent(agent_id)

    # -- restart --------------------------------------------------------------------------

    def restore(
        self, conn: Connection, alert_states: Mapping[str, Mapping[AlertKey, AlertState]]
    ) -> None:
        """Open group tickets and the grouped alerts firing, from the store after a restart."""
        grouptickets.restore(conn, self.correlator, self.rules)
        members = {k for g in self.correlator.groups.values() for k in g.members}
        for agent_id, states in alert_states.items():
            live = self.state.agents.get(agent_id)
            if live is None:
                continue
            for key, state in states.items():
                rule = self.rules.get(key.rule)
                if rule is None or state.phase != "firing":
                    continue
                since = state.firing_since if state.firing_since is not None else state.active_since
                context = {
                    **dict(key.labels),
                    "host": live.hostname,
                    "customer": live.customer,
                    "agent_id": agent_id,
                    "site": live.site,
                    "rule": rule.name,
                    "metric": rule.metric,
                    "value": state.value,
                    "threshold": rule.threshold,
                }
                firing = Firing(
                    key, live.customer, live.site, live.hostname, since, state.value,
                    rule.render_summary(context),
                )  # fmt: skip
                # A member of a restored group has no ticket of its own.
                self.correlator.fired(firing, absorbed=key in members)

    # -- the periodic pass --------------------------------------------------------------------

    async def run(self, now: float, context_for: ContextFor) -> int:
        """Commit what the correlator decides now; returns how many ticket changes."""
        actions = self.correlator.plan(now, self._populations())
        if not actions:
            return 0
        contexts = {
            firing.key.agent_id: context_for(firing.key.agent_id)
            for action in actions
            for firing in _own_tickets(action)
        }

        def work(conn: Connection) -> list[int]:
            return [self._apply(conn, action, contexts, now) for action in actions]

        results = await self.committer.submit(work)
        for action, ticket_id in zip(actions, results, strict=True):
            self._learn(action, ticket_id, now)
        return len(actions)

    def _rule(self, action: Action) -> Rule:
        name = action.firing.key.rule if isinstance(action, Own) else action.key[0]
        return self._known[name]

    def _apply(
        self, conn: Connection, action: Action, contexts: Mapping[str, dict[str, Any]], now: float
    ) -> int:
        rule = self._rule(action)
        context_for = contexts.__getitem__
        if isinstance(action, Open):
            return grouptickets.open_group(
                conn, action, rule, now=now, policy=self.policy
            ).ticket_id
        if isinstance(action, Join):
            group = self.correlator.groups[action.key]
            grouptickets.join_group(conn, action, rule, group, now=now)
            return action.ticket_id
        if isinstance(action, Resolve):
            grouptickets.resolve_group(
                conn, action, rule, now=now, policy=self.policy, context_for=context_for
            )
            return action.ticket_id
        change = grouptickets.own_ticket(
            conn, action.firing, rule, now=now, policy=self.policy, context_for=context_for
        )
        return change.ticket_id

    def _learn(self, action: Action, ticket_id: int, now: float) -> None:
        if isinstance(action, Open):
            self.correlator.opened(action, ticket_id, now)
            kind = "group_opened"
        elif isinstance(action, Join):
            self.correlator.joined(action)
            kind = "group_joined"
        elif isinstance(action, Resolve):
            self.correlator.resolved(action)
            kind = "group_resolved"
        else:
            self.correlator.owned(action)
            kind = "ungrouped"
        self.metrics.ticket_transitions.labels(kind).inc()
        log.info(
            "group ticket %s",
            kind,
            extra={
                "ticket_id": ticket_id,
                "rule": self._rule(action).name,
                "customer": action.firing.customer if isinstance(action, Own) else action.key[1],
            },
        )


def _own_tickets(action: Action) -> tuple[Firing, ...]:
    if isinstance(action, Resolve):
        return action.still
    if isinstance(action, Own):
        return (action.firing,)
    return ()
