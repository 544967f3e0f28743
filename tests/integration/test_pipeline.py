"""collector/pipeline.py on a real SQLite store, stepped by a fake clock (no gRPC).

The pieces are wired as collector/app.py wires them; reports go in decoded as the servicer
decodes them, and time moves only when a test moves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import INSTANCE, ROOT, MakeRig, PipelineRig, add_root_filesystem
from tripline.collector import agent_instances, agents_store
from tripline.collector.agents_store import AgentRecord, AgentRevoked
from tripline.collector.liveness import RECONNECT_GRACE
from tripline.collector.pipeline import REVOCATION_CHECK_INTERVAL
from tripline.collector.sessions import ReportTimeRefused, Session

T0 = 1_700_000_000.0
DATA = {"mountpoint": "/data", "fstype": "ext4", "device": "/dev/sdb1"}
CONTEXT = {
    "top_cpu": [{"pid": 4242, "name": "backup.exe", "cpu_ratio": 0.71}],
    "top_memory": [{"pid": 77, "name": "chrome.exe", "memory_rss_bytes": "3221225472"}],
    "logged_in_users": ["alice"],
}

RULES = """\
rules:
  - name: DiskAlmostFull
    metric: filesystem_used_ratio
    match: {mountpoint: "/"}
    op: ">"
    threshold: 0.5
    for: 1m
    clear: {threshold: 0.4, for: 30s}
    severity: warning
    tier: 1
    summary: "{host}: {mountpoint} is {value:.0%} full"
    runbook: "Empty the recycle bin."
  - name: LoadHigh
    metric: load1
    op: ">"
    threshold: 4
    clear: {threshold: 1, for: 1m}
    severity: critical
    tier: 2
    summary: "{host}: load {value}"
"""


class Parts(PipelineRig):
    """The rig with reports that carry a process context and a few filesystems."""

    def enroll(self, hostname: str = "pc-01", *, now: float | None = T0, **who: str) -> AgentRecord:
        """Enrolled at T0 unless told when, whatever the clock says."""
        return super().enroll(hostname, now=now, **who)

    async def send(
        self,
        session: Session,
        seq: int,
        *,
        root: float | None = None,
        load1: float | None = None,
        data: float | None = None,
        collected_at: float | None = None,
    ) -> bool:
        """One report collected now (agent clock == collector clock) unless told when."""
        msg = self.message(seq, collected_at=collected_at)
        msg.context.top_cpu.add(pid=4242, name="backup.exe", cpu_ratio=0.71)
        msg.context.top_memory.add(pid=77, name="chrome.exe", memory_rss_bytes=3 * 2**30)
        msg.context.logged_in_users.append("alice")
        msg.samples.add(name="uptime_seconds", value=86400.0)
        if root is not None:
            add_root_filesystem(msg, root)
        if data is not None:
            msg.samples.add(name="filesystem_used_ratio", labels=DATA, value=data)
        if load1 is not None:
            msg.samples.add(name="load1", value=load1)
        return await self.apply(session, msg)

    def rules_with_tickets(self) -> list[tuple[str, str]]:
        return [(t.rule, t.status) for t in self.tickets()]


MakeParts = Callable[[], Parts]


@pytest.fixture
def parts(pipeline_rig: MakeRig, clock: Any) -> MakeParts:
    """Makes a collector's parts on tmp_path (interval 10 s: offline after 30 s)."""

    def make() -> Parts:
        made: Parts = pipeline_rig(clock, rules=RULES, rig=Parts, interval=10)
        return made

    return make


class Timeline:
    """Seconds since T0, settable; the pipeline reads it through __call__."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock

    def at(self, seconds: float) -> float:
        self._clock.now = T0 + seconds
        return self._clock.now


def test_threshold_rule_fires_after_for_and_resolves_after_clear(
    parts: MakeParts, clock: Any
) -> None:
    c = parts()
    t = Timeline(clock)

    async def scenario() -> None:
        agent = c.enroll()
        session = await c.connect(agent)
        for second in range(0, 60, 10):
            t.at(second)
            assert await c.send(session, second // 10 + 1, root=0.9, data=0.95, load1=0.5)
            await c.pipeline.tick()
        await c.pipeline.tick(t.at(59.9))
        assert c.tickets() == []  # pending: `for` has not elapsed
        await c.pipeline.tick(t.at(60))
        [ticket] = c.tickets()
        assert (ticket.rule, ticket.status, ticket.severity, ticket.tier) == (
            "DiskAlmostFull",
            "open",
            "warning",
            1,
        )
        assert ticket.opened_at == T0 + 60
        assert ticket.labels == tuple(sorted(ROOT.items()))  # /data does not match the rule
        assert (ticket.value, ticket.threshold) == (0.9, 0.5)
        assert ticket.summary == "pc-01: / is 90% full"
        assert ticket.runbook == "Empty the recycle bin."
        context = ticket.context
        assert context["top_cpu"] == CONTEXT["top_cpu"]
        assert context["top_memory"] == CONTEXT["top_memory"]
        assert context["logged_in_users"] == ["alice"]
        assert context["uptime_seconds"] == 86400.0
        assert context["load1"] == 0.5
        assert [(fs["mountpoint"], fs["used_ratio"]) for fs in context["filesystems"]] == [
            ("/", 0.9),
            ("/data", 0.95),
        ]
        root_fs = context["filesystems"][0]
        assert root_fs["size_bytes"] == 1e11
        assert root_fs["avail_bytes"] == 1e11 * (1 - 0.9)

        # between clear (0.4) and threshold (0.5): hysteresis keeps it firing
        t.at(70)
        await c.send(session, 7, root=0.45, load1=0.5)
        t.at(80)
        await c.send(session, 8, root=0.3, load1=0.5)  # below clear: the 30 s hold starts
        t.at(90)
        await c.send(session, 9, root=0.3, load1=0.5)
        await c.pipeline.tick(t.at(109.9))
        assert c.rules_with_tickets() == [("DiskAlmostFull", "open")]
        await c.pipeline.tick(t.at(110))
        [ticket] = c.tickets()
        assert ticket.status == "resolved"
        assert (ticket.resolved_at, ticket.resolved_value) == (T0 + 110, 0.3)
        assert (ticket.resolve_reason, ticket.resolved_by) == ("cleared", "tripline")
        assert [e.kind for e in ticket.events] == ["opened", "resolved"]
        assert c.metrics.ticket_transitions.labels("firing")._value.get() == 1
        assert c.metrics.ticket_transitions.labels("resolved")._value.get() == 1
        assert c.pipeline.alert_states[agent.agent_id] == {}

    asyncio.run(c.run(scenario))


def test_silent_agent_goes_offline_at_exactly_offline_after_and_freezes_rules(
    parts: MakeParts, clock: Any
) -> None:
    c = parts()
    t = Timeline(clock)
    assert c.config.effective_offline_after == 30.0

    async def scenario() -> None:
        agent = c.enroll()
        session = await c.connect(agent)
        t.at(0)
        await c.send(session, 1, load1=8.0)  # LoadHigh fires at once (no `for`)
        assert c.rules_with_tickets() == [("LoadHigh", "open")]
        t.at(10)
        # load below its clear threshold: a 60 s clear hold starts (would resolve at 70);
        # the disk starts its 60 s `for` (would fire at 70)
        await c.send(session, 2, load1=0.5, root=0.9)
        live = c.pipeline.state.agents[agent.agent_id]
        assert live.last_seen == T0 + 10

        await c.pipeline.tick(t.at(39.9))
        assert c.pipeline.is_up(live)
        assert c.rules_with_tickets() == [("LoadHigh", "open")]
        await c.pipeline.tick(t.at(40))
        assert not c.pipeline.is_up(live)
        offline = [tk for tk in c.tickets() if tk.rule == "AgentOffline"]
        assert [(tk.status, tk.opened_at, tk.value) for tk in offline] == [("open", T0 + 40, 30.0)]
        assert offline[0].summary == "pc-01 has not reported for 30s"

        # long past both timers: while offline nothing else fires or resolves
        for second in (70, 71, 300, 3600):
            await c.pipeline.tick(t.at(second))
        assert c.rules_with_tickets() == [("LoadHigh", "open"), ("AgentOffline", "open")]
        assert c.metrics.ticket_transitions.labels("firing")._value.get() == 2
        assert c.metrics.ticket_transitions.labels("resolved")._value.get() == 0

        # back online: the offline ticket resolves
        t.at(3610)
        await c.send(session, 3, load1=8.0, root=0.9)
        by_rule = {tk.rule: tk for tk in c.tickets()}
        assert by_rule["AgentOffline"].status == "resolved"
        assert by_rule["AgentOffline"].resolved_at == T0 + 3610
        assert by_rule["LoadHigh"].status == "open"

    asyncio.run(c.run(scenario))


def test_duplicate_seq_is_not_applied_twice(parts: MakeParts, clock: Any) -> None:
    c = parts()
    t = Timeline(clock)

    async def scenario() -> None:
        agent = c.enroll()
        session = await c.connect(agent)
        t.at(0)
        assert await c.send(session, 1, load1=8.0) is True
        t.at(5)
        assert await c.send(session, 1, load1=9.0) is False
        live = c.pipeline.state.agents[agent.agent_id]
        assert live.value("load1") == 8.0
        assert live.reports_applied == 1

        # after a reconnect the session starts from the stored seq
        again = await c.connect(agent)
        assert again.applied_seq == 1
        assert await c.send(again, 1, load1=9.0) is False

        # two sessions of one instance (an agent moved between collectors mid-outage):
        # the store refuses the seq the other already applied
        stale = await c.connect(agent)
        t.at(10)
        assert await c.send(again, 2, load1=8.0) is True
        assert await c.send(stale, 2, load1=8.0) is False
        assert stale.applied_seq == 2

        with c.store.read() as conn:
            assert agent_instances.applied_seq(conn, agent.agent_id, INSTANCE) == 2
        assert c.metrics.reports_applied._value.get() == 2
        assert c.metrics.reports_duplicate._value.get() == 3
        assert c.metrics.reports_received._value.get() == 5
        # one ticket, one opening event
        [ticket] = c.tickets()
        assert [e.kind for e in ticket.events] == ["opened"]

    asyncio.run(c.run(scenario))


def test_restart_keeps_firing_alerts_firing_and_pending_clocks(
    parts: MakeParts, clock: Any
) -> None:
    first = parts()
    t = Timeline(clock)
    agent_id = ""

    async def before() -> None:
        nonlocal agent_id
        agent = first.enroll()
        agent_id = agent.agent_id
        session = await first.connect(agent)
        t.at(0)
        await first.send(session, 1, load1=8.0)
        t.at(20)
        await first.send(session, 2, load1=8.0, root=0.9)  # disk pending since 20

    asyncio.run(first.run(before))
    first.store.close()
    assert first.rules_with_tickets() == [("LoadHigh", "open")]

    second = parts()
    # down 25 s: short of the offline threshold after the restart grace
    second.pipeline.restore(t.at(45))
    live = second.pipeline.state.agents[agent_id]
    assert (live.hostname, live.customer, live.site) == ("pc-01", "acme", "hq")
    # the last report's time stays true (it is exposed); liveness gets the restart grace
    assert live.last_seen == T0 + 20
    assert second.pipeline.is_up(live, T0 + 45)
    phases = {k.rule: s.phase for k, s in second.pipeline.alert_states[agent_id].items()}
    assert phases == {"LoadHigh": "firing", "DiskAlmostFull": "pending"}

    async def after() -> None:
        with second.store.read() as conn:
            [agent] = agents_store.list_agents(conn)
        session = await second.connect(agent)
        assert session.applied_seq == 2
        t.at(50)
        assert await second.send(session, 3, load1=8.0, root=0.9)
        t.at(60)
        await second.send(session, 4, load1=8.0, root=0.9)
        # still pending: `for` counts from 20, not from the restart
        await second.pipeline.tick(t.at(79.9))
        assert second.rules_with_tickets() == [("LoadHigh", "open")]
        await second.pipeline.tick(t.at(80))
        assert second.rules_with_tickets() == [("LoadHigh", "open"), ("DiskAlmostFull", "open")]
        disk = next(tk for tk in second.tickets() if tk.rule == "DiskAlmostFull")
        assert disk.opened_at == T0 + 80
        # the firing alert did not fire again: its ticket was neither duplicated nor reopened
        load = next(tk for tk in second.tickets() if tk.rule == "LoadHigh")
        assert (load.opened_at, load.reopen_count, [e.kind for e in load.events]) == (
            T0,
            0,
            ["opened"],
        )
        assert second.metrics.ticket_transitions.labels("firing")._value.get() == 1

    asyncio.run(second.run(after))
    second.store.close()


def test_restore_gives_a_grace_period_instead_of_offline_tickets(
    parts: MakeParts, clock: Any
) -> None:
    first = parts()
    t = Timeline(clock)

    async def before() -> None:
        session = await first.connect(first.enroll())
        t.at(0)
        await first.send(session, 1, load1=0.5)

    asyncio.run(first.run(before))
    first.store.close()

    # the collector was down for an hour
    second = parts()
    second.pipeline.restore(t.at(3600))

    # Agents reconnect on a backoff that grows to a minute during an outage, so the grace
    # is the offline threshold but at least RECONNECT_GRACE (90 s), not 30 s.
    async def after() -> None:
        await second.pipeline.tick(t.at(3600 + RECONNECT_GRACE - 0.1))
        assert second.tickets() == []
        await second.pipeline.tick(t.at(3600 + RECONNECT_GRACE))
        assert second.rules_with_tickets() == [("AgentOffline", "open")]

    asyncio.run(second.run(after))
    second.store.close()


def test_an_agent_revoked_elsewhere_is_retired_and_refused(parts: MakeParts, clock: Any) -> None:
    c = parts()
    t = Timeline(clock)

    async def scenario() -> None:
        agent = c.enroll()
        session = await c.connect(agent)
        for seq in range(1, 8):
            t.at(10 * (seq - 1))
            await c.send(session, seq, root=0.9)
        await c.pipeline.tick(t.at(60))
        [ticket] = c.tickets()
        assert (ticket.rule, ticket.status) == ("DiskAlmostFull", "open")
        with c.store.transaction() as conn:
            agents_store.revoke_agent(conn, agent.agent_id, t.at(61))  # the CLI, another process
        # its next report does not commit, whatever the stream believed at connect
        with pytest.raises(AgentRevoked):
            await c.send(session, 8, root=0.9)
        await c.pipeline.tick(t.at(61 + REVOCATION_CHECK_INTERVAL))  # the periodic check
        assert agent.agent_id not in c.pipeline.state.agents
        [ticket] = c.tickets()
        assert (ticket.status, ticket.resolve_reason) == ("resolved", "agent revoked")
        # silent for good, yet no offline ticket: nobody is to act on a revoked PC
        await c.pipeline.tick(t.at(100 + 10 * c.config.effective_offline_after))
        assert c.rules_with_tickets() == [("DiskAlmostFull", "resolved")]

    asyncio.run(c.run(scenario))


# -- agent clocks (issue 8, item 5) ---------------------------------------------------------


def test_agent_clock_cannot_date_tickets_before_enrollment_nor_hurry_a_for(
    parts: MakeParts, clock: Any
) -> None:
    c = parts()
    t = Timeline(clock)
    assert c.config.max_clock_skew == 300.0

    async def scenario() -> None:
        enrolled_at = t.at(1000)
        agent = c.enroll(now=enrolled_at)
        session = await c.connect(agent)
        # A report "collected" in 2001, long before the enrollment (1970 is refused at the
        # edge, test_hostile_input.py): the ticket it opens dates from the enrollment.
        await c.send(session, 1, collected_at=978_307_200.0, load1=8.0, root=0.9)
        [load] = c.tickets()
        assert (load.rule, load.opened_at) == ("LoadHigh", enrolled_at)
        assert load.tier_since == enrolled_at
        # Stepping ahead within the skew moves nothing past the collector's clock: the
        # disk's 1m `for` started at the enrollment, not in 2001, and has not elapsed.
        t.at(1001)
        await c.send(session, 2, collected_at=T0 + 1001 + 240, root=0.9, load1=8.0)
        assert c.rules_with_tickets() == [("LoadHigh", "open")]
        # Past the skew: refused, naming the field.
        t.at(1002)
        with pytest.raises(ReportTimeRefused) as future:
            await c.send(session, 3, collected_at=T0 + 1002 + 3600, root=0.9)
        assert future.value.reason == "report_time_future"
        assert future.value.seq == 3
        assert "collected_at_seconds is 3600s ahead" in str(future.value)
        assert "max_clock_skew=300s" in str(future.value)
        # Before the previous report of the instance (its own clock): refused.
        with pytest.raises(ReportTimeRefused) as backwards:
            await c.send(session, 3, collected_at=T0 + 1001 + 239, root=0.9)
        assert backwards.value.reason == "report_time_backwards"
        assert "collected_at_seconds goes back 1.000s" in str(backwards.value)
        with c.store.read() as conn:
            assert agent_instances.applied_seq(conn, agent.agent_id, INSTANCE) == 2
        for seq, second in enumerate(range(1010, 1060, 10), start=3):
            t.at(second)
            await c.send(session, seq, collected_at=T0 + second + 241, root=0.9, load1=8.0)
        # The `for` fires a minute of collector time after the crossing was first seen.
        await c.pipeline.tick(t.at(1059.9))
        assert c.rules_with_tickets() == [("LoadHigh", "open")]
        await c.pipeline.tick(t.at(1060))
        disk = next(tk for tk in c.tickets() if tk.rule == "DiskAlmostFull")
        assert disk.opened_at == T0 + 1060
        # Every ticket time lies between the enrollment and now.
        for ticket in c.tickets():
            assert enrolled_at <= ticket.opened_at <= c.clock()
            assert all(enrolled_at <= e.at <= c.clock() for e in ticket.events)

    asyncio.run(c.run(scenario))


def test_stepping_timestamps_while_heard_cannot_make_a_for_elapse_sooner(
    parts: MakeParts, clock: Any
) -> None:
    """An agent heard every interval keeps claiming its reports are from T0, then claims a
    crossing at T0 and one a second later "at now": 5 minutes of history it never had."""
    c = parts()
    t = Timeline(clock)

    async def scenario() -> None:
        agent = c.enroll()
        session = await c.connect(agent)
        t.at(0)
        await c.send(session, 1, root=0.2)
        for k in range(1, 31):
            t.at(10 * k)
            await c.send(session, k + 1, collected_at=T0 + 0.5, root=0.2)
        t.at(310)
        await c.send(session, 32, collected_at=T0 + 0.5, root=0.9)
        t.at(311)
        await c.send(session, 33, collected_at=T0 + 311, root=0.9)
        assert c.tickets() == []  # pending since 310 by the collector's clock
        for seq, second in enumerate(range(320, 370, 10), start=34):
            t.at(second)
            await c.send(session, seq, root=0.9)
        await c.pipeline.tick(t.at(369.9))
        assert c.tickets() == []
        await c.pipeline.tick(t.at(370))
        [disk] = c.tickets()
        assert (disk.rule, disk.opened_at) == ("DiskAlmostFull", T0 + 370)

    asyncio.run(c.run(scenario))


def test_backlog_of_a_ten_minute_outage_replays_at_its_times_and_escalates_from_now(
    parts: MakeParts, clock: Any
) -> None:
    c = parts()
    t = Timeline(clock)

    async def scenario() -> None:
        agent = c.enroll()
        session = await c.connect(agent)
        for k in range(6):  # live until T0+50
            t.at(10 * k)
            await c.send(session, k + 1, root=0.2, load1=0.5)
        for second in range(60, 660, 10):  # the network is down; the collector ticks on
            await c.pipeline.tick(t.at(second))
        assert c.rules_with_tickets() == [("AgentOffline", "open")]
        # Back at T0+660: the spool replays what was collected from T0+60 to T0+650 at once.
        t.at(660)
        replay = await c.connect(agent)
        for seq, collected in enumerate(range(60, 660, 10), start=7):
            root = 0.9 if collected >= 100 else 0.2
            load1 = 8.0 if 100 <= collected <= 300 else 0.5
            assert await c.send(replay, seq, collected_at=T0 + collected, root=root, load1=load1)
        by_rule = {tk.rule: tk for tk in c.tickets()}
        assert by_rule["AgentOffline"].status == "resolved"
        load = by_rule["LoadHigh"]
        assert (load.status, load.opened_at, load.resolved_at) == ("resolved", T0 + 100, T0 + 370)
        disk = by_rule["DiskAlmostFull"]
        assert (disk.status, disk.opened_at) == ("open", T0 + 160)
        # Nobody could acknowledge it before T0+660: tier 1's 30 minutes count from there.
        assert disk.tier_since == T0 + 660
        await c.pipeline.tick(t.at(160 + 1800 + 5))
        assert next(tk for tk in c.tickets() if tk.rule == "DiskAlmostFull").tier == 1
        await c.pipeline.tick(t.at(660 + 1800))
        assert next(tk for tk in c.tickets() if tk.rule == "DiskAlmostFull").tier == 2

    asyncio.run(c.run(scenario))
