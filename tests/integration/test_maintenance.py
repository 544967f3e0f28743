"""Maintenance windows and business hours on a real SQLite store, stepped by a fake clock.

The pipeline is wired as collector/app.py wires it; reports go in decoded as the servicer
decodes them, windows are written through collector.maintenance as the CLI and the API
write them, and time moves only when a test moves it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tests.conftest import FakeClock
from tests.integration.conftest import ROOT, MakeRig, PipelineRig
from tripline.collector import cli, maintenance, suppression, tickets
from tripline.collector.agents_store import AgentRecord
from tripline.collector.schema import suppressed_alerts
from tripline.collector.sessions import Session
from tripline.collector.store import Store

BERLIN = ZoneInfo("Europe/Berlin")
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
"""


def berlin(text: str) -> float:
    """Unix time of a wall time in Berlin, 'YYYY-MM-DD HH:MM[:SS]'."""
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


class Collector(PipelineRig):
    """The rig with maintenance windows written as the CLI and the API write them."""

    async def send(self, session: Session, root: float = 0.1) -> None:
        await self.send_root(session, root)

    async def report_until(
        self, sessions: list[Session], until: float, *, root: float, every: float = 10.0
    ) -> None:
        """Each agent reports every `every` seconds, the clock stepping up to `until`."""
        while self.clock() < until:
            self.clock.advance(min(every, until - self.clock()))
            for session in sessions:
                await self.send(session, root)

    def add_window(self, **fields: Any) -> maintenance.MaintenanceWindow:
        with self.store.transaction() as conn:
            return maintenance.create_window(conn, actor="alice", now=self.clock(), **fields)

    def suppressed(self) -> list[suppression.Suppressed]:
        with self.store.read() as conn:
            return list(reversed(suppression.list_suppressed(conn)))


MakeCollector = Callable[..., Collector]


@pytest.fixture
def collector(pipeline_rig: MakeRig, clock: FakeClock) -> MakeCollector:
    """Makes a collector on tmp_path with RULES and `config_text` (no settings by default)."""

    def make(config_text: str = "collector: {}\n") -> Collector:
        made: Collector = pipeline_rig(clock, rules=RULES, config_text=config_text, rig=Collector)
        return made

    return make


# -- maintenance windows -------------------------------------------------------------------


def test_window_suppresses_and_records(collector: MakeCollector, clock: FakeClock) -> None:
    c = collector()
    pc = c.enroll("pc-01")
    window = c.add_window(agent_id=pc.agent_id, starts_at=clock(), ends_at=clock() + 3600)

    async def scenario() -> None:
        await c.pipeline.tick()  # the collector's first tick loads the windows
        session = await c.connect(pc)
        await c.report_until([session], clock() + 120, root=0.9)

    asyncio.run(c.run(scenario))
    assert c.tickets() == []
    with c.store.read() as conn:
        assert conn.execute(select(tickets.ticket_events)).all() == []  # nothing to deliver
    [held] = c.suppressed()
    assert (held.agent_id, held.rule, held.window_id) == (pc.agent_id, "DiskAlmostFull", window.id)
    assert dict(held.labels) == ROOT
    assert held.value == 0.9
    # the first point at +10s starts the 1m `for`; it fires at +70s
    assert held.suppressed_at == c.clock.now - 120 + 70
    assert (held.cleared_at, held.released_at, held.ticket_id) == (None, None, None)
    assert held.summary == "pc-01: / is 90% full"
    assert c.metrics.ticket_transitions.labels("suppressed")._value.get() == 1


def test_still_firing_at_window_end_opens_the_ticket_at_that_tick(
    collector: MakeCollector, clock: FakeClock
) -> None:
    c = collector()
    pc = c.enroll("pc-01")
    end = clock() + 600
    window = c.add_window(customer="acme", starts_at=clock(), ends_at=end)

    async def scenario() -> None:
        await c.pipeline.tick()
        session = await c.connect(pc)
        await c.report_until([session], end - 5, root=0.9)
        await c.pipeline.tick(end - 0.001)
        assert c.tickets() == []
        clock.now = end
        await c.pipeline.tick()

    asyncio.run(c.run(scenario))
    [ticket] = c.tickets()
    assert (ticket.rule, ticket.status, ticket.opened_at) == ("DiskAlmostFull", "open", end)
    assert ticket.summary == "pc-01: / is 90% full"
    [held] = c.suppressed()
    assert (held.window_id, held.released_at, held.ticket_id) == (window.id, end, ticket.id)
    assert c.pipeline.suppression.held == {}


def test_cleared_during_the_window_leaves_no_ticket(
    collector: MakeCollector, clock: FakeClock
) -> None:
    c = collector()
    pc = c.enroll("pc-01")
    end = clock() + 600
    c.add_window(site="hq", starts_at=clock(), ends_at=end)

    async def scenario() -> None:
        await c.pipeline.tick()
        session = await c.connect(pc)
        await c.report_until([session], clock() + 120, root=0.9)
        await c.report_until([session], clock() + 60, root=0.2)  # clear holds 30s
        await c.report_until([session], end + 60, root=0.2)
        await c.pipeline.tick()

    asyncio.run(c.run(scenario))
    assert c.tickets() == []
    [held] = c.suppressed()
    assert held.cleared_at is not None and held.cleared_at < end
    assert held.released_at is None


def test_a_ticket_opened_before_the_window_still_resolves(
    collector: MakeCollector, clock: FakeClock
) -> None:
    c = collector()
    pc = c.enroll("pc-01")

    async def scenario() -> None:
        session = await c.connect(pc)
        await c.report_until([session], clock() + 120, root=0.9)
        assert [t.status for t in c.tickets()] == ["open"]
        c.add_window(rule="DiskAlmostFull", starts_at=clock(), ends_at=clock() + 3600)
        await c.pipeline.tick()
        await c.report_until([session], clock() + 60, root=0.2)

    asyncio.run(c.run(scenario))
    [ticket] = c.tickets()
    assert (ticket.status, ticket.resolve_reason) == ("resolved", "cleared")
    assert c.suppressed() == []


def test_a_window_for_one_agent_does_not_touch_another(
    collector: MakeCollector, clock: FakeClock
) -> None:
    c = collector()
    held_pc, other_pc = c.enroll("pc-01"), c.enroll("pc-02")
    c.add_window(agent_id=held_pc.agent_id, starts_at=clock(), ends_at=clock() + 3600)

    async def scenario() -> None:
        await c.pipeline.tick()
        sessions = [await c.connect(held_pc), await c.connect(other_pc)]
        await c.report_until(sessions, clock() + 120, root=0.9)

    asyncio.run(c.run(scenario))
    [ticket] = c.tickets()
    assert ticket.agent_id == other_pc.agent_id
    [held] = c.suppressed()
    assert held.agent_id == held_pc.agent_id


def test_weekly_window_across_midnight_and_the_dst_jump(
    collector: MakeCollector, clock: FakeClock
) -> None:
    # Saturday 22:00 (winter time) to Sunday 04:00 (summer time): five real hours
    clock.now = berlin("2024-03-30 22:30")
    c = collector("collector:\n  offline_after: 2h\n")
    pc = c.enroll("pc-01")
    c.add_window(customer="acme", weekly="Sat 22:00-Sun 04:00", timezone="Europe/Berlin")
    end = berlin("2024-03-31 04:00")
    assert end - berlin("2024-03-30 22:00") == 5 * 3600

    async def scenario() -> None:
        await c.pipeline.tick()
        session = await c.connect(pc)
        await c.report_until([session], berlin("2024-03-30 23:59"), root=0.9, every=60)
        assert c.tickets() == [] and len(c.suppressed()) == 1
        await c.report_until([session], end - 60, root=0.9, every=1800)
        await c.pipeline.tick(end - 1)
        assert c.tickets() == []
        clock.now = end
        await c.pipeline.tick()

    asyncio.run(c.run(scenario))
    [ticket] = c.tickets()
    assert ticket.opened_at == end
    assert datetime.fromtimestamp(ticket.opened_at, BERLIN).isoformat() == (
        "2024-03-31T04:00:00+02:00"
    )


def test_held_alerts_survive_a_collector_restart(
    collector: MakeCollector, clock: FakeClock
) -> None:
    first = collector()
    pc = first.enroll("pc-01")
    end = clock() + 600
    first.add_window(agent_id=pc.agent_id, starts_at=clock(), ends_at=end)

    async def before() -> None:
        await first.pipeline.tick()
        session = await first.connect(pc)
        await first.report_until([session], clock() + 120, root=0.9)

    asyncio.run(first.run(before))
    clock.advance(60)
    second = collector()
    second.pipeline.restore(clock())
    assert len(second.pipeline.suppression.held) == 1

    async def after() -> None:
        session = await second.connect(pc)
        second.seq = dict(first.seq)
        await second.report_until([session], end + 1, root=0.9)
        await second.pipeline.tick()

    asyncio.run(second.run(after))
    [ticket] = second.tickets()
    assert ticket.opened_at == end + 1  # the first tick after the window's end


def test_deleting_a_window_releases_what_it_held(
    collector: MakeCollector, clock: FakeClock
) -> None:
    c = collector()
    pc = c.enroll("pc-01")
    window = c.add_window(agent_id=pc.agent_id, starts_at=clock(), ends_at=clock() + 3600)

    async def scenario() -> None:
        await c.pipeline.tick()
        session = await c.connect(pc)
        await c.report_until([session], clock() + 120, root=0.9)
        await c.pipeline.tick()  # reloads the windows
        with c.store.transaction() as conn:
            maintenance.delete_window(conn, window.id)
        await c.pipeline.tick()  # within the reload interval: the old windows still hold
        assert c.tickets() == []
        clock.advance(c.pipeline.windows.reload_every)
        await c.pipeline.tick()

    asyncio.run(c.run(scenario))
    assert [t.status for t in c.tickets()] == ["open"]


# -- business hours -----------------------------------------------------------------------

BUSINESS_HOURS = """\
collector:
  offline_after: 5m
  business_hours:
    acme: {tz: Europe/Berlin, days: Mon-Fri, hours: "09:00-17:00"}
  always_on_tags: [role=server]
"""


def test_business_hours_decide_when_silence_counts(
    collector: MakeCollector, clock: FakeClock
) -> None:
    clock.now = berlin("2024-03-04 16:00")  # a Monday
    c = collector(BUSINESS_HOURS)
    pc_on, pc_off, server = c.enroll("pc-on"), c.enroll("pc-off"), c.enroll("srv-01")

    def offline() -> dict[str, float]:
        return {t.hostname: t.opened_at for t in c.tickets() if t.rule == "AgentOffline"}

    async def scenario() -> None:
        pcs = [await c.connect(pc_on), await c.connect(pc_off)]
        srv = await c.connect(server, tags={"role": "server"})
        # everyone switched off at 17:30, after hours; the server dies at 23:00
        await c.report_until([*pcs, srv], berlin("2024-03-04 17:30"), root=0.1, every=60)
        await c.report_until([srv], berlin("2024-03-04 23:00"), root=0.1, every=60)
        for wall in ("2024-03-04 18:00", "2024-03-04 23:04:59"):
            clock.now = berlin(wall)
            await c.pipeline.tick()
            assert offline() == {}, wall
        clock.now = berlin("2024-03-04 23:05")
        await c.pipeline.tick()
        assert offline() == {"srv-01": berlin("2024-03-04 23:05")}  # watched all night
        for wall in (
            "2024-03-05 03:00",
            "2024-03-05 08:59:59",
            "2024-03-05 09:00",
            "2024-03-05 09:02",
        ):
            clock.now = berlin(wall)
            await c.pipeline.tick()
            assert set(offline()) == {"srv-01"}, wall
        on_again = await c.connect(pc_on)  # switched on at 09:02
        await c.send(on_again)
        clock.now = berlin("2024-03-05 09:04:59")
        await c.pipeline.tick()
        assert set(offline()) == {"srv-01"}
        clock.now = berlin("2024-03-05 09:05")
        await c.pipeline.tick()

    asyncio.run(c.run(scenario))
    assert offline() == {"srv-01": berlin("2024-03-04 23:05"), "pc-off": berlin("2024-03-05 09:05")}
    [ticket] = [t for t in c.tickets() if t.hostname == "pc-off"]
    # the ticket says how long it really was silent: since 17:30 the day before
    assert ticket.value == berlin("2024-03-05 09:05") - berlin("2024-03-04 17:30")


def test_pc_silent_during_hours_still_opens_its_ticket(
    collector: MakeCollector, clock: FakeClock
) -> None:
    clock.now = berlin("2024-03-04 10:00")
    c = collector(BUSINESS_HOURS)
    pc = c.enroll("pc-01")

    async def scenario() -> None:
        session = await c.connect(pc)
        await c.report_until([session], berlin("2024-03-04 11:00"), root=0.1, every=60)
        clock.now = berlin("2024-03-04 11:05")
        await c.pipeline.tick()
        # it stays open overnight: the problem began in business hours
        clock.now = berlin("2024-03-04 22:00")
        await c.pipeline.tick()

    asyncio.run(c.run(scenario))
    [ticket] = c.tickets()
    assert (ticket.rule, ticket.status, ticket.opened_at) == (
        "AgentOffline",
        "open",
        berlin("2024-03-04 11:05"),
    )


def test_customers_without_business_hours_are_watched_around_the_clock(
    collector: MakeCollector, clock: FakeClock
) -> None:
    clock.now = berlin("2024-03-04 22:00")
    c = collector(BUSINESS_HOURS)
    pc = c.enroll("pc-01", customer="globex")

    async def scenario() -> None:
        session = await c.connect(pc)
        await c.send(session)
        clock.now = berlin("2024-03-04 22:05")
        await c.pipeline.tick()

    asyncio.run(c.run(scenario))
    assert [t.rule for t in c.tickets()] == ["AgentOffline"]


# -- storage and the CLI ------------------------------------------------------------------


def test_window_crud_and_validation(store: Store) -> None:
    with store.transaction() as conn:
        weekly = maintenance.create_window(
            conn,
            actor="alice",
            now=100.0,
            customer="acme",
            site="hq",
            weekly="Mon-Fri 18:00-08:00",
            timezone="Europe/Berlin",
            comment="backups",
        )
        once = maintenance.create_window(
            conn, actor="bob", now=100.0, agent_id="agt_1", starts_at=200.0, ends_at=300.0
        )
        cron = maintenance.create_window(
            conn, actor="bob", now=100.0, rule="CpuSaturated", cron="0 2 * * Sun", duration=7200
        )
    assert weekly.to_dict()["weekly"] == "Mon-Fri 18:00-08:00"
    assert (once.kind, once.timezone, cron.timezone) == ("once", None, "UTC")
    with store.read() as conn:
        assert [w.id for w in maintenance.list_windows(conn)] == [weekly.id, once.id, cron.id]
        assert [w.id for w in maintenance.list_windows(conn, customers=["acme"])] == [weekly.id]
        current = maintenance.list_windows(conn, current_after=400.0)
        assert [w.id for w in current] == [weekly.id, cron.id]
    assert weekly.matches(customer="acme", site="hq", agent_id="x", rule="y")
    assert not weekly.matches(customer="acme", site="branch", agent_id="x", rule="y")
    assert once.status(250.0) == "active" and once.status(300.0) == "ended"

    with store.transaction() as conn:
        changed = maintenance.update_window(
            conn, once.id, actor="carol", now=150.0, weekly="Sat-Sun", timezone="UTC"
        )
    assert (changed.kind, changed.starts_at, changed.weekly, changed.agent_id) == (
        "weekly",
        None,
        "Sat-Sun",
        "agt_1",
    )
    assert (changed.created_by, changed.updated_at) == ("bob", 150.0)
    with store.transaction() as conn:
        maintenance.delete_window(conn, once.id)
    with store.read() as conn, pytest.raises(maintenance.WindowNotFound):
        maintenance.get_window(conn, once.id)

    bad: list[tuple[dict[str, Any], str]] = [
        ({"starts_at": 1.0, "ends_at": 2.0}, "scope"),
        ({"customer": "acme"}, "schedule"),
        ({"customer": "acme", "starts_at": 1.0, "ends_at": 2.0, "weekly": "Sat"}, "schedule"),
        ({"customer": "acme", "starts_at": 2.0, "ends_at": 1.0}, "ends_at"),
        ({"customer": "acme", "cron": "0 2 * * *"}, "duration"),
        ({"customer": "acme", "weekly": "Caturday"}, "weekly"),
        ({"customer": "acme", "weekly": "Sat", "timezone": "Nowhere/City"}, "timezone"),
        ({"customer": " ", "weekly": "Sat"}, "customer"),
    ]
    for fields, field_name in bad:
        with store.transaction() as conn, pytest.raises(maintenance.InvalidWindow) as err:
            maintenance.create_window(conn, actor="x", now=1.0, **fields)
        assert err.value.field == field_name, fields


def test_suppression_records_one_pending_row_per_problem(store: Store, agent: AgentRecord) -> None:
    problem = {
        "customer": agent.customer,
        "agent_id": agent.agent_id,
        "hostname": "pc-01",
        "rule": "DiskAlmostFull",
        "labels": (("mountpoint", "/"),),
        "severity": "warning",
        "tier": 1,
        "summary": "full",
        "runbook": None,
        "threshold": 0.9,
    }
    with store.transaction() as conn:
        first = suppression.record_suppressed(conn, window_id=1, value=0.95, now=10.0, **problem)
        again = suppression.record_suppressed(conn, window_id=2, value=0.97, now=20.0, **problem)
    assert again == first
    with store.transaction() as conn:
        assert suppression.clear_suppressed(
            conn,
            customer=agent.customer,
            agent_id=agent.agent_id,
            rule="DiskAlmostFull",
            labels=(("mountpoint", "/"),),
            now=30.0,
        )
        later = suppression.record_suppressed(conn, window_id=2, value=0.97, now=40.0, **problem)
    assert later.id != first.id
    with store.read() as conn:
        assert [s.id for s in suppression.pending_suppressed(conn)] == [later.id]
        rows = conn.execute(select(suppressed_alerts.c.id, suppressed_alerts.c.cleared_at)).all()
    assert sorted(rows) == [(first.id, 30.0), (later.id, None)]


def test_cli_add_list_delete(
    tmp_path: Path, collector: MakeCollector, capsys: pytest.CaptureFixture[str]
) -> None:
    collector().store.close()  # a data dir with a migrated store
    data = ["--data-dir", str(tmp_path)]

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main([*argv, *data])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run(
        "maintenance", "add", "--customer", "acme", "--weekly", "Mon-Fri 18:00-08:00",
        "--tz", "Europe/Berlin", "--comment", "backups", "--json",
    )  # fmt: skip
    assert code == 0
    added = json.loads(out)
    assert (added["customer"], added["weekly"], added["timezone"]) == (
        "acme",
        "Mon-Fri 18:00-08:00",
        "Europe/Berlin",
    )
    code, out, _ = run(
        "maintenance", "add", "--agent", "agt_1", "--start", "2024-03-04 18:00",
        "--for", "2h", "--tz", "Europe/Berlin", "--json",
    )  # fmt: skip
    once = json.loads(out)
    assert (once["starts_at"], once["ends_at"]) == (
        berlin("2024-03-04 18:00"),
        berlin("2024-03-04 20:00"),
    )
    code, out, _ = run("maintenance", "list")
    assert "Mon-Fri 18:00-08:00" in out and "agt_1" not in out  # the one-time one has ended
    code, out, _ = run("maintenance", "list", "--all", "--json")
    assert [w["id"] for w in json.loads(out)] == [added["id"], once["id"]]
    code, out, _ = run("maintenance", "delete", str(added["id"]))
    assert (code, out.strip()) == (0, f"maintenance window {added['id']} deleted")

    for argv, message in [
        (["--customer", "acme", "--weekly", "Mon-Fri 18:00-08:00"], "need --tz"),
        (["--customer", "acme", "--cron", "0 2 * * *", "--tz", "UTC"], "needs --duration"),
        (["--weekly", "Sat", "--tz", "UTC"], "name at least one of customer"),
        (["--customer", "acme", "--weekly", "Caturday", "--tz", "UTC"], "unknown day"),
        (["--customer", "acme", "--for", "2h", "--weekly", "Sat", "--tz", "UTC"], "one schedule"),
    ]:
        code, _, err = run("maintenance", "add", *argv)
        assert code == cli.EXIT_USAGE and message in err, (argv, err)
    code, _, err = run("maintenance", "delete", "999")
    assert (code, err.strip()) == (cli.EXIT_USAGE, "tripline: no maintenance window 999")
