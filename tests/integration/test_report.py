"""The service report's figures against a real store with known tickets and samples.

Tickets go through the real lifecycle (tickets.py) and history through the real writer
(history.HistoryRecorder) at times a fake clock steps; the expected figures are worked
out by hand in the comments.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from sqlalchemy import Connection

from tests.conftest import T0, FakeClock
from tests.integration.conftest import MakeRig, add_root_filesystem
from tripline.collector import enrollment, report, ticketmodel, tickets
from tripline.collector.agents_store import AgentRecord
from tripline.collector.cli import main
from tripline.collector.history import HistoryRecorder
from tripline.collector.store import Store

START = 1_699_920_000.0  # 2023-11-14 00:00 UTC
DAY, HOUR = 86400.0, 3600.0
END = START + 7 * DAY  # the period 2023-11-14 .. 2023-11-21
PERIOD = report.parse_period("2023-11-14", "2023-11-21")
GAP = 600.0  # the offline threshold
POLICY = ticketmodel.TicketPolicy(escalate_after={1: 1800.0, 2: 3600.0})
MEMORY_RULES = frozenset({"MemoryHigh"})


def enroll(store: Store, customer: str, hostname: str, site: str = "hq") -> AgentRecord:
    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, customer, now=START - DAY)
    with store.transaction() as conn:
        record, _ = enrollment.enroll_agent(
            conn,
            token,
            hostname=hostname,
            site=site,
            inventory={"os": "Windows", "os_release": "11"},
            now=START - DAY,
        )
    return record


def fire(
    conn: Connection,
    agent: AgentRecord,
    rule: str,
    labels: str,
    *,
    tier: int,
    severity: str,
    now: float,
) -> int:
    change = tickets.on_alert_firing(
        conn, customer=agent.customer, agent_id=agent.agent_id, hostname=agent.hostname,
        rule=rule, labels=(("mountpoint", labels),), severity=severity, tier=tier,
        summary=f"{rule} {labels}", runbook=None, value=1.0, threshold=0.9, context={},
        now=now, policy=POLICY,
    )  # fmt: skip
    return change.ticket_id


def clear(conn: Connection, agent: AgentRecord, rule: str, labels: str, now: float) -> None:
    tickets.on_alert_resolved(
        conn, customer=agent.customer, agent_id=agent.agent_id, rule=rule,
        labels=(("mountpoint", labels),), value=0.1, reason="cleared", now=now,
    )  # fmt: skip


def report_every(recorder: HistoryRecorder, store: Store, agent: AgentRecord, first: float,
                 last: float, step: float, boot: float, disk: tuple[float, float] | None = None,
                 ) -> None:  # fmt: skip
    at = first
    with store.transaction() as conn:
        while at <= last:
            samples = [("boot_time_seconds", (), boot)]
            if disk is not None:
                used = disk[0] + disk[1] * (at - START) / DAY
                labels = (("mountpoint", "/"),)
                samples += [("filesystem_size_bytes", labels, 100e9),
                            ("filesystem_avail_bytes", labels, 100e9 - used)]  # fmt: skip
            recorder.record(conn, agent.agent_id, samples, received_at=at, report_at=at)
            at += step


@pytest.fixture
def known(store: Store, clock: FakeClock) -> Store:
    """acme: pc-01 (tickets, a filling disk, a day offline), pc-02 (reboots)."""
    pc1 = enroll(store, "acme", "pc-01")
    pc2 = enroll(store, "acme", "pc-02", site="branch")
    enroll(store, "globex", "gx-01")
    with store.transaction() as conn:
        # 1: resolves on its own after an hour                        -> auto_resolved
        fire(conn, pc1, "DiskFull", "/a", tier=1, severity="warning", now=START + 1 * HOUR)
        clear(conn, pc1, "DiskFull", "/a", START + 2 * HOUR)
        # 2: acked after 600 s, resolved by a person after 3600 s       -> first_line
        t2 = fire(conn, pc1, "DiskFull", "/b", tier=1, severity="warning", now=START + 3 * HOUR)
        tickets.acknowledge(conn, t2, actor="ann", now=START + 3 * HOUR + 600)
        tickets.resolve(conn, t2, actor="ann", now=START + 4 * HOUR)
        # 3: acked after 1800 s, resolved after 7200 s                  -> first_line
        t3 = fire(conn, pc1, "DiskFull", "/c", tier=1, severity="critical", now=START + 5 * HOUR)
        tickets.acknowledge(conn, t3, actor="ann", now=START + 5 * HOUR + 1800)
        tickets.resolve(conn, t3, actor="ann", now=START + 7 * HOUR)
        # 4: nobody acks for 1800 s: tier 2; acked at 2800 s, resolved at 10800 s -> escalated
        t4 = fire(conn, pc2, "DiskFull", "/d", tier=1, severity="warning", now=START + 8 * HOUR)
        assert tickets.escalate_due(conn, now=START + 8 * HOUR + 1800, policy=POLICY)
        tickets.acknowledge(conn, t4, actor="bob", now=START + 8 * HOUR + 2800)
        tickets.resolve(conn, t4, actor="bob", now=START + 11 * HOUR)
        # 5: tier 2, still open at the end                              -> open
        fire(conn, pc2, "CpuHot", "", tier=2, severity="critical", now=START + 12 * HOUR)
        # 6: memory above the line for 6 hours, resolves on its own     -> auto_resolved
        fire(conn, pc1, "MemoryHigh", "", tier=1, severity="warning", now=START + 1 * DAY)
        clear(conn, pc1, "MemoryHigh", "", START + 1 * DAY + 6 * HOUR)
        # opened after the period: not counted
        fire(conn, pc1, "DiskFull", "/z", tier=1, severity="info", now=END + HOUR)
    recorder = HistoryRecorder(gap=GAP)
    # pc-01 reports every 4 minutes for 2 days, is silent a day, then reports to the end;
    # its disk fills by 1 GB a day from 50 GB of 100 GB.
    report_every(recorder, store, pc1, START, START + 2 * DAY, 240, 1.0, (50e9, 1e9))
    report_every(recorder, store, pc1, START + 3 * DAY, END, 240, 1.0, (50e9, 1e9))
    # pc-02 reboots twice in minutes (new boot times after 2-minute gaps), and is shut
    # down one night (a 10-hour silence before a new boot: not unexpected).
    report_every(recorder, store, pc2, START, START + 1 * DAY, 240, 100.0)
    report_every(recorder, store, pc2, START + DAY + 120, START + 2 * DAY, 240, 5000.0)
    report_every(recorder, store, pc2, START + 2 * DAY + 120, START + 3 * DAY, 240, 9000.0)
    report_every(recorder, store, pc2, START + 3 * DAY + 10 * HOUR, END, 240, 90000.0)
    return store


def build(store: Store, customer: str = "acme", *, now: float = END + DAY) -> report.Report:
    with store.read() as conn:
        return report.build_report(
            conn, customer, PERIOD, memory_rules=MEMORY_RULES, gap=GAP, now=now
        )


def test_a_period_still_running_expects_reports_only_until_now(known: Store) -> None:
    # Made at the end of the period's second day: pc-01 reported all of it so far and is
    # fully available, rather than short of the five days still to come.
    pcs = {pc.hostname: pc for pc in build(known, now=START + 2 * DAY).fleet.pcs}
    assert pcs["pc-01"].expected_hours == pytest.approx(2 * 24, abs=0.2)
    assert pcs["pc-01"].availability == pytest.approx(1.0, abs=600 / (2 * DAY))


def test_ticket_figures(known: Store) -> None:
    t = build(known).tickets
    assert t.opened == 6
    assert t.outcomes == {
        "auto_resolved": 2, "first_line": 2, "higher_tier": 0, "escalated": 1, "open": 1,
    }  # fmt: skip
    assert t.auto_resolved_share == pytest.approx(2 / 6)
    tier1 = t.times[0]
    # MTTA of tier 1: 600, 1800, 2800 -> median 1800, p90 1800 + 0.8 * 1000
    assert (tier1.acknowledged, tier1.mtta_median_s, tier1.mtta_p90_s) == (3, 1800, 2600)
    # MTTR of what people resolved: 3600, 7200, 10800 -> median 7200, p90 7200 + 0.8 * 3600
    assert (tier1.resolved, tier1.mttr_median_s) == (3, 7200)
    assert tier1.mttr_p90_s == pytest.approx(10080)
    assert (t.times[1].acknowledged, t.times[1].mtta_median_s) == (0, None)
    assert t.by_tier == {"1": 5, "2": 1, "3": 0}
    assert t.by_severity == {"critical": 2, "warning": 4, "info": 0}
    assert t.by_rule == {"CpuHot": 1, "DiskFull": 4, "MemoryHigh": 1}
    assert [(c.name, c.count) for c in t.busiest_pcs] == [("pc-01", 4), ("pc-02", 2)]
    assert t.top_rules[0].name == "DiskFull"
    assert sum(sum(w.by_severity.values()) for w in t.weeks) == 6
    assert t.weeks[0].starts == "2023-11-13"  # the Monday of the first day


def test_plan_and_fleet_figures(known: Store) -> None:
    r = build(known)
    [disk] = r.plan.disks_full_soon
    # 50 GB + 1 GB a day reaches 100 GB 50 days after START: 43 days after the end.
    assert disk.hostname == "pc-01" and disk.mountpoint == "/"
    assert disk.growth_bytes_per_day == pytest.approx(1e9, rel=1e-6)
    assert disk.days_to_full == pytest.approx(43, abs=0.01)
    [memory] = r.plan.short_of_memory
    assert (memory.hostname, memory.hours, memory.count) == ("pc-01", pytest.approx(6), 1)
    [reboots] = r.plan.reboots
    assert (reboots.hostname, reboots.count) == ("pc-02", 2)
    pcs = {pc.hostname: pc for pc in r.fleet.pcs}
    assert set(pcs) == {"pc-01", "pc-02"}  # not globex's
    # pc-01 reported 6 of 7 days; a span's end is written at most 300 s late per span
    assert pcs["pc-01"].availability == pytest.approx(6 / 7, abs=600 / (7 * DAY))
    # pc-02: 2-minute gaps twice and a 10-hour night
    expected = (7 * DAY - 240 - 10 * HOUR) / (7 * DAY)
    assert pcs["pc-02"].availability == pytest.approx(expected, abs=900 / (7 * DAY))
    assert [o.hostname for o in r.plan.offline] == ["pc-01", "pc-02"]
    assert r.plan.offline[0].hours == pytest.approx(24, abs=0.2)
    assert r.fleet.by_site == {"branch": 1, "hq": 1}
    assert r.fleet.by_os == {"Windows 11": 2}


def test_html_has_inline_charts_and_escapes_names(store: Store) -> None:
    hostile = "<script>alert(1)</script>"
    pc = enroll(store, hostile, hostile, site="<b>site</b>")
    with store.transaction() as conn:
        t = fire(conn, pc, "DiskFull", "/", tier=1, severity="warning", now=START + HOUR)
        tickets.acknowledge(conn, t, actor="ann", now=START + 2 * HOUR)
    report_every(HistoryRecorder(GAP), store, pc, START, START + 5 * DAY, 3600, 1.0, (90e9, 2e9))
    html = report.render(build(store, hostile), "html")
    assert "<script" not in html  # no script at all, the hostile names as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;site&lt;/b&gt;" in html
    assert len(re.findall(r"<svg\b", html)) == 3
    assert "<rect" in html and "<polyline" in html
    assert not re.search(r"(src|href)=\"?(https?:)?//", html)  # nothing fetched
    assert "@media print" in html


def test_csv_and_json(known: Store) -> None:
    built = build(known)
    data = report.as_dict(built)
    assert data["period"] == {"from": "2023-11-14", "to": "2023-11-21"}
    assert data["tickets"]["outcomes"]["escalated"] == 1
    csv_text = report.render(built, "csv")
    assert csv_text.splitlines()[0] == "section,name,detail,figure,value"
    assert "tickets,escalated,outcome,count,1" in csv_text.splitlines()


@pytest.mark.parametrize(
    ("first", "until", "says"),
    [
        ("2023-11-21", "2023-11-14", "must be before"),
        ("2023-11-14", "2023-11-14", "must be before"),
        ("2023-02-30", "2023-03-01", "not a day"),
        ("14/11/2023", "2023-11-21", "YYYY-MM-DD"),
        ("2023-11-14T00:00", "2023-11-21", "YYYY-MM-DD"),
        ("2022-01-01", "2023-11-21", "at most 400 days"),
    ],
)
def test_bad_periods_are_refused(first: str, until: str, says: str) -> None:
    with pytest.raises(report.ReportPeriodError, match=says):
        report.parse_period(first, until)


def test_cli_writes_the_report(
    known: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not known.engine.url.drivername.startswith("sqlite"):
        pytest.skip("the CLI test reads the SQLite file")
    url = known.engine.url.render_as_string(hide_password=False)
    out = tmp_path / "acme.html"
    args = ["report", "--database-url", url, "--customer", "acme",
            "--from", "2023-11-14", "--to", "2023-11-21"]  # fmt: skip
    assert main([*args, "--output", str(out)]) == 0
    assert out.read_text().count("<svg") == 3
    assert main([*args, "--format", "json"]) == 0
    assert '"escalated": 1' in capsys.readouterr().out
    assert main([*args[:-1], "2023-11-10"]) == 2
    assert "must be before" in capsys.readouterr().err
    assert main(["report", "--database-url", url, "--customer", "nobody",
                 "--from", "2023-11-14", "--to", "2023-11-21"]) == 2  # fmt: skip
    assert "no agent or ticket of customer 'nobody'" in capsys.readouterr().err


def test_api_report_is_scoped(tmp_path: Path) -> None:
    asyncio.run(_api_report_is_scoped(tmp_path))


async def _api_report_is_scoped(tmp_path: Path) -> None:
    import httpx

    from tests.integration.conftest import running_collector
    from tripline.collector import apitokens

    async with running_collector(tmp_path / "collector") as app:
        enroll(app.store, "acme", "pc-01")
        enroll(app.store, "globex", "gx-01")
        with app.store.transaction() as conn:
            _, acme = apitokens.create_token(conn, "acme-ops", ["acme"], actor="t", now=START)
            _, every = apitokens.create_token(conn, "all-ops", None, actor="t", now=START)
        base = f"http://127.0.0.1:{app.http_port}/api/v1/reports"
        query = {"from": "2023-11-14", "to": "2023-11-21"}
        async with httpx.AsyncClient() as client:

            async def get(path: str, secret: str, **params: str) -> httpx.Response:
                headers = {"Authorization": f"Bearer {secret}"}
                return await client.get(f"{base}/{path}", params=params, headers=headers)

            mine = await get("acme", acme, **query)
            assert mine.status_code == 200, mine.text
            assert mine.headers["content-type"].startswith("text/html")
            assert mine.text.count("<svg") + mine.text.count("No tickets") >= 1
            assert "pc-01" in mine.text and "gx-01" not in mine.text
            # another customer's report answers as an unknown customer's does
            other = await get("globex", acme, **query)
            unknown = await get("nobody", every, **query)
            assert other.status_code == unknown.status_code == 404
            assert (await get("globex", every, **query)).status_code == 200
            as_json = await get("acme", acme, **query, format="json")
            assert as_json.json()["customer"] == "acme"
            bad = await get("acme", acme, **{"from": "2023-11-21", "to": "2023-11-14"})
            assert bad.status_code == 400 and "must be before" in bad.json()["error"]
            assert (await get("acme", acme, **query, format="pdf")).status_code == 400
            assert (await get("acme", "nope", **query)).status_code == 401
        sample = app.registry.get_sample_value
        name = "tripline_collector_service_reports_total"
        assert sample(name, {"format": "html", "outcome": "served"}) == 2
        assert sample(name, {"format": "-", "outcome": "refused"}) == 5


def test_applied_reports_write_presence_and_daily_disk_samples(pipeline_rig: MakeRig) -> None:
    """The apply path feeds the report: a span per stretch of reports, a sample per day."""
    from sqlalchemy import select

    from tripline.collector.schema import agent_presence, filesystem_usage

    clock = FakeClock(T0)
    c = pipeline_rig(clock, rules="rules: []\n", interval=10)  # offline after 30 s

    async def scenario() -> None:
        agent = c.enroll()
        session = await c.connect(agent)
        seq = 0
        # every 10 s for 2 days, then silent an hour, then 10 minutes more
        for stretch, seconds in ((0.0, 2 * DAY), (2 * DAY + HOUR, 600.0)):
            clock.now = T0 + stretch
            end = clock.now + seconds
            while clock.now <= end:
                seq += 1
                msg = c.message(seq)
                add_root_filesystem(msg, 0.2 + (clock.now - T0) / DAY * 0.01)
                assert await c.apply(session, msg)
                clock.now += 10
        with c.store.read() as conn:
            spans = conn.execute(select(agent_presence).order_by("started_at")).all()
            days = conn.execute(select(filesystem_usage).order_by("day")).all()
        assert [(s.started_at - T0, s.ended_at - T0) for s in spans] == [
            (0.0, pytest.approx(2 * DAY, abs=300)),
            (2 * DAY + HOUR, pytest.approx(2 * DAY + HOUR + 600, abs=300)),
        ]
        assert len(days) == 3  # T0 is late on its UTC day: three days touched
        assert all(d.mountpoint == "/" and d.size_bytes == 1e11 for d in days)
        # rewritten at most hourly: the last sample of a day is within an hour of its end
        assert days[1].sampled_at >= (days[1].day + 1) * DAY - HOUR - 10

    asyncio.run(c.run(scenario))


def test_two_collectors_writing_the_same_span_and_day_both_commit(store: Store) -> None:
    """Two collectors (or workers) that start an agent's span at the same instant collide
    on the span's key: the second keeps the first's row, and its own transaction commits
    everything else it holds. The day's disk sample is the later one's."""
    from sqlalchemy import func, select

    from tripline.collector.schema import agent_instances, agent_presence, filesystem_usage

    agent = enroll(store, "acme", "PC-1")
    samples = [
        ("boot_time_seconds", (), START - HOUR),
        ("filesystem_size_bytes", (("mountpoint", "C:"),), 100.0),
        ("filesystem_avail_bytes", (("mountpoint", "C:"),), 40.0),
    ]
    recorders = ((HistoryRecorder(GAP), 40.0), (HistoryRecorder(GAP), 10.0))
    for used_by, (recorder, avail) in enumerate(recorders):
        samples[2] = ("filesystem_avail_bytes", (("mountpoint", "C:"),), avail)
        with store.transaction() as conn:
            recorder.record(conn, agent.agent_id, samples, received_at=START, report_at=START)
            # the rest of the report's transaction: must still commit
            conn.execute(
                agent_instances.insert().values(
                    agent_id=agent.agent_id,
                    instance_id=f"instance-{used_by}",
                    applied_seq=1,
                    first_seen_at=START,
                    last_seen_at=START,
                )
            )
    with store.read() as conn:
        spans = conn.execute(select(agent_presence)).all()
        days = conn.execute(select(filesystem_usage)).all()
        instances = conn.execute(select(func.count()).select_from(agent_instances)).scalar_one()
    assert [(s.started_at, s.ended_at, s.boot_time) for s in spans] == [
        (START, START, START - HOUR)
    ]
    assert [(d.day, d.used_bytes) for d in days] == [(int(START // DAY), 90.0)]
    assert instances == 2
