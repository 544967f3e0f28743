"""Liveness: which agents count as up, and whose silence counts as offline now.

An agent is up while the collector heard from it within the offline threshold. Around
that rule sit the cases that must not open an offline ticket: the grace after a
collector restart (agents reconnect on their backoff), an agent enrolled that never
reported (a token could otherwise mint hundreds of silent agents, each a critical
ticket), and an office PC outside its customer's business hours. Several collectors
sharing one store each read the last-seen times every collector writes (`sync`).

With ``--workers N`` the worker holding an agent's stream judges it by the reports it
receives; another worker sees them only once that worker has committed them and it has
synced, which at saturation is seconds behind. So an agent last heard by another worker
(`elsewhere`) gets `peer_lag` more silence before this worker calls it offline: the
holder opens the ticket on time, and this worker does only if the holder cannot.

The pipeline owns one `Liveness`; the exposition and the HTTP API ask it through
`Pipeline.is_up`, so a dashboard and a ticket never disagree about an agent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection

from tripline.collector import agent_instances, agents_store
from tripline.collector.business_hours import BusinessHoursWatch
from tripline.collector.config import CollectorConfig
from tripline.collector.state import AgentLive, LiveState
from tripline.collector.store import AgentRecord, Store, StoreUnavailable

log = logging.getLogger(__name__)

# After a restart, agents are presumed alive this long at least: their reconnect
# backoff reaches 60 s (plus jitter) during a longer outage.
RECONNECT_GRACE = 90.0


class Liveness:
    def __init__(
        self,
        *,
        store: Store,
        state: LiveState,
        config: CollectorConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.state = state
        self.clock = clock
        self.offline_after = config.effective_offline_after
        self.watch = BusinessHoursWatch(config.business_hours, config.always_on_tags)
        self._always_on: set[str] = set()  # agent ids with an always-on tag
        # Enrolled, never reported: their silence opens no offline ticket.
        self.unreported: set[str] = set()
        # Last heard by another worker (see the module docstring): judged `peer_lag` later.
        self.elsewhere: set[str] = set()
        self.peer_lag = max(self.offline_after, RECONNECT_GRACE) if config.workers > 1 else 0.0
        self._next_sync = 0.0

    # -- tracking ---------------------------------------------------------------------

    def restore(self, now: float) -> None:
        """Track every agent the store knows after a (re)start, each presumed alive until
        the grace ends (the offline threshold, and at least RECONNECT_GRACE): a collector
        that was down for an hour must not open an offline ticket for every PC it could
        not hear, and agents come back on their reconnect backoff."""
        grace_until = now + max(self.offline_after, RECONNECT_GRACE)
        with self.store.read() as conn:
            last_seen = agents_store.last_seen_all(conn)
            reported = agent_instances.reported_agent_ids(conn)
            agents = agents_store.list_agents(conn)
        for agent in agents:
            if agent.revoked_at is not None:
                continue
            if agent.agent_id not in reported:
                self.unreported.add(agent.agent_id)
            live = self.track(agent)
            live.last_seen = last_seen.get(agent.agent_id) or now
            live.grace_until = grace_until

    def track(self, agent: AgentRecord) -> AgentLive:
        self.note_tags(agent.agent_id, {**agent.tags, **(agent.inventory.get("tags") or {})})
        return self.state.ensure(
            agent.agent_id, customer=agent.customer, hostname=agent.hostname, site=agent.site
        )

    def enrolled(self, agent: AgentRecord, now: float) -> AgentLive:
        """A new agent: tracked, not offline before its first report, and its silence
        opens no ticket until it has reported once."""
        live = self.track(agent)
        live.last_seen = now
        self.unreported.add(agent.agent_id)
        return live

    def heard(self, live: AgentLive, now: float) -> None:
        """A report from the agent was applied: silence from now on is real."""
        live.last_seen = now
        live.grace_until = 0.0
        self.unreported.discard(live.agent_id)
        self.elsewhere.discard(live.agent_id)

    def held(self, agent_id: str) -> None:
        """The agent's stream (or a report) is here now: this process judges it on time."""
        self.elsewhere.discard(agent_id)

    def forget(self, agent_id: str) -> None:
        self.unreported.discard(agent_id)
        self.elsewhere.discard(agent_id)
        self._always_on.discard(agent_id)

    def note_tags(self, agent_id: str, tags: Mapping[str, Any]) -> None:
        if self.watch.always_on(tags):
            self._always_on.add(agent_id)
        else:
            self._always_on.discard(agent_id)

    # -- questions ------------------------------------------------------------------------

    def is_up(self, live: AgentLive, now: float | None = None) -> bool:
        now = self.clock() if now is None else now
        seen = self.seen(live)
        return seen is not None and now - seen < self.threshold(live)

    def threshold(self, live: AgentLive) -> float:
        """The silence after which this process calls the agent offline: the offline
        threshold, plus `peer_lag` for an agent another worker heard last."""
        if live.agent_id in self.elsewhere:
            return self.offline_after + self.peer_lag
        return self.offline_after

    def seen(self, live: AgentLive) -> float | None:
        """Last seen, for liveness: within the restart grace every agent counts as seen."""
        if live.last_seen is None:
            return None
        return max(live.last_seen, live.grace_until - self.offline_after)

    def expected(self, live: AgentLive, now: float) -> bool:
        """Whether this agent's silence counts now. An office PC (business hours set for its
        customer, no always-on tag) is not expected outside business hours, and at their
        start gets a full offline threshold to report before it counts as offline."""
        if live.agent_id in self._always_on:
            return True
        since = self.watch.watched_since(live.customer, now)
        if since is None:
            return False
        seen = since if live.last_seen is None else max(live.last_seen, since)
        return now - seen >= self.threshold(live)

    # -- several collectors -----------------------------------------------------------------

    async def sync(self, now: float) -> None:
        """Take last-seen times from the store, which every collector sharing it advances;
        at most every quarter of the offline threshold.

        Each agent streams to one collector; the others must not call it offline, and
        must watch it (also one enrolled after they started) should its collector die.
        """
        if now < self._next_sync:
            return
        self._next_sync = now + self.offline_after / 4
        known = set(self.state.agents)
        # Agents that may have reported to another collector since.
        unreported = set(self.unreported)

        def load(conn: Connection) -> tuple[dict[str, float], list[AgentRecord | None], set[str]]:
            seen = agents_store.last_seen_all(conn)
            unknown = [a for a in seen if a not in known]
            records = [agents_store.get_agent(conn, a) for a in unknown]
            unsure = unreported | set(unknown)
            reported = agent_instances.reported_agent_ids(conn, unsure) if unsure else set()
            return seen, records, reported

        try:
            seen, records, reported = await asyncio.to_thread(self.store.run_read, load)
        except StoreUnavailable as exc:
            log.warning("last-seen times not synced", extra={"error": str(exc)})
            return
        for record in records:
            if record is not None and record.revoked_at is None:
                self.track(record)
                if record.agent_id not in reported:
                    self.unreported.add(record.agent_id)
        self.unreported -= reported
        for agent_id, at in seen.items():
            live = self.state.agents.get(agent_id)
            if live is not None and (live.last_seen is None or at > live.last_seen):
                live.last_seen = at
                live.grace_until = 0.0  # reported to another collector since
                if not live.connected:  # (its stream here writes last-seen too)
                    self.elsewhere.add(agent_id)
