"""Correlated outages on the real pipeline and a real SQLite store, stepped by a fake clock:
one site ticket when a site's PCs go offline together, one group ticket when a rule with
`group` trips on many PCs of a customer (collector/correlation.py, grouptickets.py)."""

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
from tripline.collector.pipeline import Pipeline
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.sessions import Session
from tripline.collector.state import LiveState
from tripline.collector.store import AgentRecord, Store
from tripline.collector.tickets import Ticket
from tripline.v1 import tripline_pb2 as pb

ROOT = {"mountpoint": "/", "fstype": "ext4", "device": "/dev/sda1"}
RULES = """\
rules:
  - name: DiskAlmostFull
    metric: filesystem_used_ratio
    match: {mountpoint: "/"}
    op: ">"
    threshold: 0.5
    for: 30s
    severity: warning
    summary: "{host}: {mountpoint} is {value:.0%} full"
    group: {by: customer, min_agents: 3, within: 5m}
"""
# interval 10s: an agent is offline after 30s of silence
CONFIG = "collector:\n  interval: 10\n"


class Collector:
    """Store, committer and pipeline as collector/app.py builds them."""

    def __init__(self, tmp: Path, clock: FakeClock, config_text: str = CONFIG) -> None:
        self.clock = clock
        path = tmp / "collector.yaml"
        path.write_text(config_text, encoding="utf-8")
        self.config = load_collector_config(path, environ={}, flags={"data_dir": tmp})
        self.store = Store(self.config.effective_database_url)
        self.store.migrate()
        self.metrics = CollectorMetrics(CollectorRegistry())
        self.pipeline = self.new_pipeline()
        self.sessions: dict[str, Session] = {}
        self.seq: dict[str, int] = {}

    def new_pipeline(self) -> Pipeline:
        """A collector process's pipeline (a restart builds a new one on the same store)."""
        # asyncio.run makes a loop per call; the committer's queue belongs to one loop
        self.committer = Committer(self.store, self.metrics)
        return Pipeline(
            store=self.store,
            state=LiveState(window=900.0),
            rules=parse_rules(RULES, "rules.yaml"),
            config=self.config,
            metrics=self.metrics,
            committer=self.committer,
            clock=self.clock,
        )

    async def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.create_task(self.committer.run())
        try:
            await scenario()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def enroll(self, hostname: str, *, customer: str = "acme", site: str = "hq") -> AgentRecord:
        with self.store.transaction() as conn:
            _, token = enrollment.create_token(conn, customer, now=self.clock())
            record, _ = enrollment.enroll_agent(
                conn, token, hostname=hostname, site=site, inventory={}, now=self.clock()
            )
        return record

    async def connect(self, agents: list[AgentRecord]) -> None:
        for agent in agents:
            hello = pb.Hello(
                agent_version="test",
                instance_id="i-1",
                sent_at_seconds=self.clock(),
                host=pb.HostInfo(hostname=agent.hostname),
            )
            self.sessions[agent.hostname] = await self.pipeline.open_session(
                agent, decode_hello(hello)
            )

    async def send(self, hostname: str, root: float) -> None:
        session = self.sessions[hostname]
        seq = self.seq[hostname] = self.seq.get(hostname, 0) + 1
        msg = pb.Report(instance_id="i-1", seq=seq, collected_at_seconds=self.clock())
        msg.samples.add(name="filesystem_used_ratio", labels=ROOT, value=root)
        report = decode_report(msg, instance_id="i-1", max_samples=100)
        assert await self.pipeline.apply(session, report)

    async def run_until(
        self, until: float, reporting: dict[str, float], *, every: float = 10.0
    ) -> None:
        """Step the clock a second at a time to `until`, ticking each second; the PCs in
        `reporting` (hostname -> root fill) report every `every` seconds."""
        while self.clock() < until:
            self.clock.advance(1.0)
            if round(self.clock()) % every == 0:
                for hostname, root in reporting.items():
                    await self.send(hostname, root)
            await self.pipeline.tick()

    def tickets(self) -> list[Ticket]:
        with self.store.read() as conn:
            listed = tickets.list_tickets(conn, limit=1000)
            return [tickets.get_ticket(conn, t.id) for t in reversed(listed)]

    def open_tickets(self) -> list[Ticket]:
        return [t for t in self.tickets() if t.status != "resolved"]


def pcs(ticket: Ticket) -> list[str]:
    return sorted(pc["hostname"] for pc in ticket.context["pcs"])


def test_four_of_five_pcs_offline_together_open_one_site_ticket(
    tmp_path: Path, clock: FakeClock
) -> None:
    c = Collector(tmp_path, clock)
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 6)]
    branch = c.enroll("br-01", site="branch")
    everyone = {a.hostname: 0.1 for a in [*hq, branch]}

    async def scenario() -> None:
        await c.connect([*hq, branch])
        await c.run_until(clock() + 40, everyone)
        # hq loses its link: pc-01..pc-04 fall silent, pc-05 (on 4G) and branch report on
        await c.run_until(clock() + 60, {"pc-05": 0.1, "br-01": 0.1})

    asyncio.run(c.run(scenario))
    [site] = c.open_tickets()
    assert site.rule == "SiteOffline"
    assert dict(site.labels) == {"site": "hq"}
    assert site.summary == "site hq: 4 of 5 PCs offline — check the link or power"
    assert pcs(site) == ["pc-01", "pc-02", "pc-03", "pc-04"]
    assert (site.severity, site.tier, site.value) == ("critical", 1, 4.0)
    # the two tickets opened before the third PC made it an outage fold into it
    folded = [t for t in c.tickets() if t.rule == "AgentOffline"]
    assert len(folded) == 2
    for ticket in folded:
        assert ticket.status == "resolved"
        assert ticket.resolve_reason is not None
        assert ticket.resolve_reason.startswith(f"folded into ticket #{site.id}: site hq")
        assert ticket.events[-1].data["folded_into"] == site.id
    note = next(e for e in site.events if e.kind == "commented")
    assert sorted(note.data["folded"]) == [t.id for t in folded]
    assert c.metrics.ticket_transitions.labels("group_opened")._value.get() == 1


def test_site_ticket_resolves_when_pcs_return_and_stragglers_get_their_own(
    tmp_path: Path, clock: FakeClock
) -> None:
    c = Collector(tmp_path, clock)
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 5)]
    names = [a.hostname for a in hq]

    async def scenario() -> None:
        await c.connect(hq)
        await c.run_until(clock() + 40, dict.fromkeys(names, 0.1))
        await c.run_until(clock() + 60, {})  # the whole site is dark
        [site] = c.open_tickets()
        assert site.summary == "site hq: 4 of 4 PCs offline — check the link or power"
        # the link is back: three PCs report again, pc-04 was switched off meanwhile
        back = dict.fromkeys(names[:3], 0.1)
        await c.run_until(clock() + 100, back)
        assert [t.id for t in c.open_tickets()] == [site.id]  # waiting for stragglers
        await c.run_until(clock() + 30, back)

    asyncio.run(c.run(scenario))
    site = next(t for t in c.tickets() if t.rule == "SiteOffline")
    assert site.status == "resolved"
    assert site.resolve_reason == "3 PCs back; still firing, each with its own ticket now: pc-04"
    [own] = c.open_tickets()
    assert (own.rule, own.hostname, own.status) == ("AgentOffline", "pc-04", "open")
    assert site.resolved_at is not None and own.opened_at == site.resolved_at


def test_all_pcs_back_resolves_the_site_ticket(tmp_path: Path, clock: FakeClock) -> None:
    c = Collector(tmp_path, clock)
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 4)]
    everyone = {a.hostname: 0.1 for a in hq}

    async def scenario() -> None:
        await c.connect(hq)
        await c.run_until(clock() + 40, everyone)
        await c.run_until(clock() + 60, {})
        await c.run_until(clock() + 30, everyone)

    asyncio.run(c.run(scenario))
    assert c.open_tickets() == []
    [site] = [t for t in c.tickets() if t.rule == "SiteOffline"]
    assert site.resolve_reason == "all 3 PCs back"


def test_too_few_or_too_small_a_share_opens_tickets_per_pc(
    tmp_path: Path, clock: FakeClock
) -> None:
    c = Collector(tmp_path, clock)
    hq = [c.enroll(f"pc-{i:02}") for i in range(1, 8)]  # 7 PCs: 3 silent is under half
    everyone = {a.hostname: 0.1 for a in hq}

    async def scenario() -> None:
        await c.connect(hq)
        await c.run_until(clock() + 40, everyone)
        await c.run_until(clock() + 60, {n: 0.1 for n in list(everyone)[3:]})

    asyncio.run(c.run(scenario))
    assert sorted(t.hostname for t in c.open_tickets()) == ["pc-01", "pc-02", "pc-03"]
    assert {t.rule for t in c.tickets()} == {"AgentOffline"}


def test_pcs_offline_further_apart_than_within_stay_apart(tmp_path: Path, clock: FakeClock) -> None:
    c = Collector(tmp_path, clock, CONFIG + "  site_outage: {within: 30s}\n")
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 5)]
    names = [a.hostname for a in hq]

    async def scenario() -> None:
        await c.connect(hq)
        await c.run_until(clock() + 40, dict.fromkeys(names, 0.1))
        # one PC goes every 40s: never three within 30s
        for left in (3, 2, 1):
            await c.run_until(clock() + 40, dict.fromkeys(names[:left], 0.1))
        await c.run_until(clock() + 40, {})

    asyncio.run(c.run(scenario))
    assert {t.rule for t in c.tickets()} == {"AgentOffline"}
    assert len(c.open_tickets()) == 4


def test_site_outage_can_be_turned_off(tmp_path: Path, clock: FakeClock) -> None:
    c = Collector(tmp_path, clock, CONFIG + "  site_outage: {enabled: false}\n")
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 5)]

    async def scenario() -> None:
        await c.connect(hq)
        await c.run_until(clock() + 40, {a.hostname: 0.1 for a in hq})
        await c.run_until(clock() + 60, {})

    asyncio.run(c.run(scenario))
    assert sorted(t.hostname for t in c.open_tickets()) == ["pc-01", "pc-02", "pc-03", "pc-04"]


def test_site_ticket_survives_a_restart(tmp_path: Path, clock: FakeClock) -> None:
    c = Collector(tmp_path, clock)
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 4)]
    everyone = {a.hostname: 0.1 for a in hq}

    async def first() -> None:
        await c.connect(hq)
        await c.run_until(clock() + 40, everyone)
        await c.run_until(clock() + 60, {})

    asyncio.run(c.run(first))
    [site] = c.open_tickets()
    c.pipeline = c.new_pipeline()
    c.pipeline.restore(clock())
    assert list(c.pipeline.correlation.correlator.groups) == [("AgentOffline", "acme", "hq")]

    async def second() -> None:
        await c.connect(hq)
        await c.run_until(clock() + 30, everyone)

    asyncio.run(c.run(second))
    assert c.open_tickets() == []
    assert [t.id for t in c.tickets() if t.rule == "SiteOffline"] == [site.id]
    assert next(t for t in c.tickets() if t.id == site.id).resolve_reason == "all 3 PCs back"


def test_rule_group_one_ticket_for_many_pcs_of_a_customer(tmp_path: Path, clock: FakeClock) -> None:
    c = Collector(tmp_path, clock)
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 4)]
    other = c.enroll("pc-09", site="branch")
    names = [a.hostname for a in [*hq, other]]

    async def scenario() -> None:
        await c.connect([*hq, other])
        await c.run_until(clock() + 20, dict.fromkeys(names, 0.1))
        # a bad update fills the disks of four PCs of two sites at once
        await c.run_until(clock() + 60, dict.fromkeys(names, 0.9))
        [group] = c.open_tickets()
        assert group.rule == "DiskAlmostFull"
        assert dict(group.labels) == {"group": "customer"}
        assert group.summary.startswith("DiskAlmostFull on 4 of 4 PCs of acme at once")
        assert pcs(group) == ["pc-01", "pc-02", "pc-03", "pc-09"]
        assert group.severity == "warning"
        await c.run_until(clock() + 20, dict.fromkeys(names, 0.1))

    asyncio.run(c.run(scenario))
    assert c.open_tickets() == []
    [group] = [t for t in c.tickets() if dict(t.labels) == {"group": "customer"}]
    assert group.resolve_reason == "all 4 PCs back"
    # the PCs that tripped before the third made it a group had their own, folded in
    for own in c.tickets():
        if own.id != group.id:
            assert own.events[-1].data["folded_into"] == group.id
