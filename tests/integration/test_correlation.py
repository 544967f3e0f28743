"""Correlated outages on the real pipeline and a real SQLite store, stepped by a fake clock:
one site ticket when a site's PCs go offline together, one group ticket when a rule with
`group` trips on many PCs of a customer (collector/correlation.py, grouptickets.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import FakeClock
from tests.integration.conftest import MakeRig, PipelineRig
from tripline.collector.sessions import Session
from tripline.collector.store import AgentRecord
from tripline.collector.ticketmodel import Ticket

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


class Collector(PipelineRig):
    """The rig with PCs sending by hostname and a clock stepped a second at a time."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.sessions: dict[str, Session] = {}

    async def connect_all(self, agents: list[AgentRecord]) -> None:
        for agent in agents:
            self.sessions[agent.hostname] = await self.connect(agent)

    async def send(self, hostname: str, root: float) -> None:
        await self.send_root(self.sessions[hostname], root)

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

    def open_tickets(self) -> list[Ticket]:
        return [t for t in self.tickets() if t.status != "resolved"]


MakeCollector = Callable[..., Collector]


@pytest.fixture
def collector(pipeline_rig: MakeRig, clock: FakeClock) -> MakeCollector:
    """Makes a collector on tmp_path with RULES and `config_text` (CONFIG by default)."""

    def make(config_text: str = CONFIG) -> Collector:
        rig: Collector = pipeline_rig(clock, rules=RULES, config_text=config_text, rig=Collector)
        return rig

    return make


def pcs(ticket: Ticket) -> list[str]:
    return sorted(pc["hostname"] for pc in ticket.context["pcs"])


def test_four_of_five_pcs_offline_together_open_one_site_ticket(
    collector: MakeCollector, clock: FakeClock
) -> None:
    c = collector()
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 6)]
    branch = c.enroll("br-01", site="branch")
    everyone = {a.hostname: 0.1 for a in [*hq, branch]}

    async def scenario() -> None:
        await c.connect_all([*hq, branch])
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
    collector: MakeCollector, clock: FakeClock
) -> None:
    c = collector()
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 5)]
    names = [a.hostname for a in hq]

    async def scenario() -> None:
        await c.connect_all(hq)
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


def test_all_pcs_back_resolves_the_site_ticket(collector: MakeCollector, clock: FakeClock) -> None:
    c = collector()
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 4)]
    everyone = {a.hostname: 0.1 for a in hq}

    async def scenario() -> None:
        await c.connect_all(hq)
        await c.run_until(clock() + 40, everyone)
        await c.run_until(clock() + 60, {})
        await c.run_until(clock() + 30, everyone)

    asyncio.run(c.run(scenario))
    assert c.open_tickets() == []
    [site] = [t for t in c.tickets() if t.rule == "SiteOffline"]
    assert site.resolve_reason == "all 3 PCs back"


def test_too_few_or_too_small_a_share_opens_tickets_per_pc(
    collector: MakeCollector, clock: FakeClock
) -> None:
    c = collector()
    hq = [c.enroll(f"pc-{i:02}") for i in range(1, 8)]  # 7 PCs: 3 silent is under half
    everyone = {a.hostname: 0.1 for a in hq}

    async def scenario() -> None:
        await c.connect_all(hq)
        await c.run_until(clock() + 40, everyone)
        await c.run_until(clock() + 60, {n: 0.1 for n in list(everyone)[3:]})

    asyncio.run(c.run(scenario))
    assert sorted(t.hostname for t in c.open_tickets()) == ["pc-01", "pc-02", "pc-03"]
    assert {t.rule for t in c.tickets()} == {"AgentOffline"}


def test_pcs_offline_further_apart_than_within_stay_apart(
    collector: MakeCollector, clock: FakeClock
) -> None:
    c = collector(CONFIG + "  site_outage: {within: 30s}\n")
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 5)]
    names = [a.hostname for a in hq]

    async def scenario() -> None:
        await c.connect_all(hq)
        await c.run_until(clock() + 40, dict.fromkeys(names, 0.1))
        # one PC goes every 40s: never three within 30s
        for left in (3, 2, 1):
            await c.run_until(clock() + 40, dict.fromkeys(names[:left], 0.1))
        await c.run_until(clock() + 40, {})

    asyncio.run(c.run(scenario))
    assert {t.rule for t in c.tickets()} == {"AgentOffline"}
    assert len(c.open_tickets()) == 4


def test_site_outage_can_be_turned_off(collector: MakeCollector, clock: FakeClock) -> None:
    c = collector(CONFIG + "  site_outage: {enabled: false}\n")
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 5)]

    async def scenario() -> None:
        await c.connect_all(hq)
        await c.run_until(clock() + 40, {a.hostname: 0.1 for a in hq})
        await c.run_until(clock() + 60, {})

    asyncio.run(c.run(scenario))
    assert sorted(t.hostname for t in c.open_tickets()) == ["pc-01", "pc-02", "pc-03", "pc-04"]


def test_site_ticket_survives_a_restart(collector: MakeCollector, clock: FakeClock) -> None:
    c = collector()
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 4)]
    everyone = {a.hostname: 0.1 for a in hq}

    async def first() -> None:
        await c.connect_all(hq)
        await c.run_until(clock() + 40, everyone)
        await c.run_until(clock() + 60, {})

    asyncio.run(c.run(first))
    [site] = c.open_tickets()
    c.pipeline = c.new_pipeline()
    c.pipeline.restore(clock())
    assert list(c.pipeline.correlation.correlator.groups) == [("AgentOffline", "acme", "hq")]

    async def second() -> None:
        await c.connect_all(hq)
        await c.run_until(clock() + 30, everyone)

    asyncio.run(c.run(second))
    assert c.open_tickets() == []
    assert [t.id for t in c.tickets() if t.rule == "SiteOffline"] == [site.id]
    assert next(t for t in c.tickets() if t.id == site.id).resolve_reason == "all 3 PCs back"


def test_rule_group_one_ticket_for_many_pcs_of_a_customer(
    collector: MakeCollector, clock: FakeClock
) -> None:
    c = collector()
    hq = [c.enroll(f"pc-0{i}") for i in range(1, 4)]
    other = c.enroll("pc-09", site="branch")
    names = [a.hostname for a in [*hq, other]]

    async def scenario() -> None:
        await c.connect_all([*hq, other])
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
