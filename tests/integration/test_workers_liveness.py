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

from tests.conftest import T0, FakeClock
from tests.integration.conftest import MakeRig, PipelineRig
from tripline.collector import ticketmodel, ticketqueries
from tripline.collector.liveness import RECONNECT_GRACE
from tripline.collector.sessions import Session
from tripline.collector.store import AgentRecord

INTERVAL = 10.0
OFFLINE_AFTER = 3 * INTERVAL  # the default: three intervals
COMMIT_LAG = 20.0  # A commits each report this long after receiving it
RULES = "rules: []\n"


class Worker(PipelineRig):
    """A worker process's pipeline; its clock is its own."""

    def offline_tickets(self) -> list[ticketmodel.Ticket]:
        with self.store.read() as conn:
            return [t for t in ticketqueries.list_tickets(conn) if t.rule == "AgentOffline"]


async def _report(worker: Worker, session: Session, seq: int, received_at: float) -> None:
    """A report A received at `received_at` and commits now (its clock set back to the
    arrival, as A's pipeline stamps last-seen at arrival)."""
    worker.clock.now = received_at
    msg = worker.message(seq, collected_at=received_at)
    msg.samples.add(name="uptime_seconds", value=86400.0)
    assert await worker.apply(session, msg)


def _run(
    pipeline_rig: MakeRig, scenario: Callable[[Worker, Worker, AgentRecord], Awaitable[None]]
) -> None:
    def worker() -> Worker:
        made: Worker = pipeline_rig(
            FakeClock(T0), rules=RULES, rig=Worker, interval=INTERVAL, workers=2
        )
        assert made.config.effective_offline_after == OFFLINE_AFTER
        return made

    async def main() -> None:
        a, b = worker(), worker()
        agent = a.enroll("pc-01", now=T0)
        async with a.committing(), b.committing():
            a.pipeline.restore(T0)
            b.pipeline.restore(T0)
            await scenario(a, b, agent)

    asyncio.run(main())


def test_a_worker_does_not_call_offline_an_agent_the_other_worker_hears_late(
    pipeline_rig: MakeRig,
) -> None:
    async def scenario(a: Worker, b: Worker, agent: AgentRecord) -> None:
        session = await a.connect(agent)
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

    _run(pipeline_rig, scenario)


def test_the_holder_opens_the_offline_ticket_on_time_and_the_other_worker_if_it_cannot(
    pipeline_rig: MakeRig,
) -> None:
    async def scenario(a: Worker, b: Worker, agent: AgentRecord) -> None:
        session = await a.connect(agent)
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

    _run(pipeline_rig, scenario)


def test_without_the_holder_the_other_worker_opens_it_after_the_peer_lag(
    pipeline_rig: MakeRig,
) -> None:
    async def scenario(a: Worker, b: Worker, agent: AgentRecord) -> None:
        session = await a.connect(agent)
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

    _run(pipeline_rig, scenario)
