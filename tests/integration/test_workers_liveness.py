"""Liveness across the workers of ``--workers N``: two pipelines on one real SQLite file,
each with its own fake clock, as two worker processes would run them.

Worker A holds the agent's stream; its commits land seconds after each report arrives
(a saturated writer). Worker B learns the agent's last-seen times only from those commits
and its periodic sync, so its view lags by the interval plus A's commit lag plus its
sync period — past the offline threshold. B must not call the agent offline while A hears
it; A opens the ticket on time when the agent stops; B opens it (later) when A cannot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from prometheus_client import CollectorRegistry

from tests.conftest import FakeClock
from tripline.alerts.rules import parse_rules
from tripline.collector import enrollment, tickets
from tripline.collector.committer import Committer
from tripline.collector.config import load_collector_config
from tripline.collector.convert import decode_hello, decode_report
from tripline.collector.liveness import RECONNECT_GRACE
from tripline.collector.pipeline import Pipeline
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.sessions import Session
from tripline.collector.state import LiveState
from tripline.collector.store import AgentRecord, Store
from tripline.v1 import tripline_pb2 as pb

T0 = 1_700_000_000.0
INTERVAL = 10.0
OFFLINE_AFTER = 3 * INTERVAL  # the default: three intervals
COMMIT_LAG = 20.0  # A commits each report this long after receiving it
RULES = "rules: []\n"


class Worker:
    def __init__(self, db: Path, workers: int) -> None:
        self.clock = FakeClock(T0)
        config = load_collector_config(
            None,
            environ={},
            flags={"data_dir": db.parent, "interval": INTERVAL, "workers": workers},
        )
        assert config.effective_offline_after == OFFLINE_AFTER
        self.store = Store(f"sqlite:///{db}")
        self.store.migrate()
        metrics = CollectorMetrics(CollectorRegistry())
        self.committer = Committer(self.store, metrics)
        self.pipeline = Pipeline(
            store=self.store,
            state=LiveState(window=900.0),
            rules=parse_rules(RULES, "rules.yaml"),
            config=config,
            metrics=metrics,
            committer=self.committer,
            clock=self.clock,
        )

    def offline_tickets(self) -> list[tickets.Ticket]:
        with self.store.read() as conn:
            return [t for t in tickets.list_tickets(conn) if t.rule == "AgentOffline"]


async def _connect(worker: Worker, agent: AgentRecord) -> Session:
    hello = pb.Hello(
        agent_version="test",
        instance_id="i-1",
        sent_at_seconds=worker.clock(),
        host=pb.HostInfo(hostname=agent.hostname),
    )
    return await worker.pipeline.open_session(agent, decode_hello(hello))


async def _report(worker: Worker, session: Session, seq: int, received_at: float) -> None:
    """A report A received at `received_at` and commits now (its clock set back to the
    arrival, as A's pipeline stamps last-seen at arrival)."""
    worker.clock.now = received_at
    msg = pb.Report(instance_id="i-1", seq=seq, collected_at_seconds=received_at)
    msg.samples.add(name="uptime_seconds", value=86400.0)
    assert await worker.pipeline.apply(
        session, decode_report(msg, instance_id="i-1", max_samples=100)
    )


def _run(db: Path, scenario: Callable[[Worker, Worker, AgentRecord], Awaitable[None]]) -> None:
    async def main() -> None:
        a, b = Worker(db, workers=2), Worker(db, workers=2)
        with a.store.transaction() as conn:
            _, token = enrollment.create_token(conn, "acme", now=T0)
            agent, _ = enrollment.enroll_agent(
                conn, token, hostname="pc-01", site="hq", inventory={}, now=T0
            )
        tasks = [asyncio.create_task(w.committer.run()) for w in (a, b)]
        try:
            a.pipeline.restore(T0)
            b.pipeline.restore(T0)
            await scenario(a, b, agent)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            a.store.close()
            b.store.close()

    asyncio.run(main())


def test_a_worker_does_not_call_offline_an_agent_the_other_worker_hears_late(
    tmp_path: Path,
) -> None:
    async def scenario(a: Worker, b: Worker, agent: AgentRecord) -> None:
        session = await _connect(a, agent)
        arrivals = [T0 + INTERVAL * k for k in range(1, 60)]  # every 10 s for ~10 minutes
        seq = 0
        for second in range(1, 600):
            now = T0 + second
            # A commits what arrived COMMIT_LAG ago (seconds behind, as at saturation)
            while arrivals and arrivals[0] + COMMIT_LAG <= now:
                seq += 1
                await _report(a, session, seq, arrivals.pop(0))
            await b.pipeline.tick(now)  # B ticks every second, syncing every 7.5 s
            assert b.offline_tickets() == [], f"B opened an offline ticket at T0+{second}"
        # B's view did lag past the offline threshold: the case this test is about
        assert b.pipeline.liveness.elsewhere == {agent.agent_id}

    _run(tmp_path / "tripline.db", scenario)


def test_the_holder_opens_the_offline_ticket_on_time_and_the_other_worker_if_it_cannot(
    tmp_path: Path,
) -> None:
    async def scenario(a: Worker, b: Worker, agent: AgentRecord) -> None:
        session = await _connect(a, agent)
        last = T0 + 200  # the agent reports every 10 s until then, then falls silent
        for seq, at in enumerate(range(int(T0) + 10, int(last) + 1, 10), start=1):
            await _report(a, session, seq, float(at))
            await b.pipeline.tick(float(at))
        # A holds the stream: it calls the agent offline OFFLINE_AFTER after the last report
        for second in range(1, 40):
            await a.pipeline.tick(last + second)
            await b.pipeline.tick(last + second)
        [ticket] = a.offline_tickets()
        assert ticket.opened_at == last + OFFLINE_AFTER

    _run(tmp_path / "tripline.db", scenario)


def test_without_the_holder_the_other_worker_opens_it_after_the_peer_lag(tmp_path: Path) -> None:
    async def scenario(a: Worker, b: Worker, agent: AgentRecord) -> None:
        session = await _connect(a, agent)
        last = T0 + 200
        for seq, at in enumerate(range(int(T0) + 10, int(last) + 1, 10), start=1):
            await _report(a, session, seq, float(at))
            await b.pipeline.tick(float(at))
        # A is gone (it never ticks again): B judges the agent, allowing for the lag
        peer_lag = b.pipeline.liveness.peer_lag
        assert peer_lag == max(OFFLINE_AFTER, RECONNECT_GRACE)
        second = 0
        while not b.offline_tickets():
            second += 1
            assert second < 400, "B never opened the offline ticket"
            await b.pipeline.tick(last + second)
        [ticket] = b.offline_tickets()
        assert last + OFFLINE_AFTER + peer_lag <= ticket.opened_at
        assert ticket.opened_at <= last + OFFLINE_AFTER + peer_lag + OFFLINE_AFTER / 4 + 1

    _run(tmp_path / "tripline.db", scenario)
