"""A scrape never stalls ingestion: /metrics renders off the loop, gzip, cached ticket counts.

A collector runs in-process (its event loop is the test's) on loopback with a real
SQLite file; reports go over real gRPC, scrapes over real HTTP.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from grpc import aio
from sqlalchemy import event

from tests.integration.conftest import TOKEN, running_collector
from tripline.collector import enrollment, tickets
from tripline.collector.app import CollectorApp
from tripline.collector.exposition import SeriesExposition
from tripline.collector.metricspage import accepts_gzip
from tripline.collector.state import AgentLive
from tripline.collector.store import Store
from tripline.collector.ticketcounts import TicketCounts
from tripline.collector.ticketmodel import TicketPolicy
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc

APPLIED = "tripline_collector_reports_applied_total"


def fill_state(app: CollectorApp, agents: int, series: int) -> set[str]:
    """Agents held in live state as if each had just reported ``series`` series (of a
    metric no rule watches: these agents are not in the store)."""
    now = time.time()
    ids = set()
    for i in range(agents):
        agent_id = f"agt_big_{i:05d}"
        live = AgentLive(agent_id, "acme", f"pc-{i:05d}", "hq", last_seen=now)
        samples = [
            ("disk_read_bytes_total", (("device", f"disk{j}"),), float(j)) for j in range(series)
        ]
        app.state.agents[agent_id] = live
        app.state.record(live, now, samples)
        app.exposition.update(live, samples)
        ids.add(agent_id)
    return ids


class Stream:
    """One enrolled agent's Connect stream, sending reports one at a time."""

    def __init__(self, app: CollectorApp) -> None:
        self.app = app
        self.seq = 0
        self.acked: list[int] = []

    async def __aenter__(self) -> Stream:
        self.channel = aio.insecure_channel(f"127.0.0.1:{self.app.grpc_port}")
        stub = pb_grpc.CollectorStub(self.channel)
        host = pb.HostInfo(hostname="pc-live", os="Linux", cpu_count=4)
        enrolled = await stub.Enroll(pb.EnrollRequest(enrollment_token=TOKEN, host=host))
        self.agent_id = enrolled.agent_id
        self.call = stub.Connect(metadata=(("authorization", f"Bearer {enrolled.credential}"),))
        hello = pb.Hello(instance_id="i-1", host=host, sent_at_seconds=time.time())
        await self.call.write(pb.AgentMessage(hello=hello))
        assert (await self.call.read()).WhichOneof("kind") == "welcome"
        return self

    async def report(self) -> None:
        self.seq += 1
        sample = pb.Sample(name="cpu_usage_ratio", value=0.25)
        report = pb.Report(
            instance_id="i-1", seq=self.seq, collected_at_seconds=time.time(), samples=[sample]
        )
        await self.call.write(pb.AgentMessage(report=report))
        reply = await self.call.read()
        assert reply.WhichOneof("kind") == "ack", reply
        self.acked.append(reply.ack.seq)

    async def __aexit__(self, *exc: object) -> None:
        await self.call.done_writing()
        await self.channel.close()


async def get_raw(app: CollectorApp, accept_encoding: str) -> httpx.Response:
    """/metrics with this Accept-Encoding; ``.content`` is the body as sent (not decoded)."""
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream(
            "GET",
            f"http://127.0.0.1:{app.http_port}/metrics",
            headers={"Accept-Encoding": accept_encoding},
        ) as response,
    ):
        response._content = b"".join([chunk async for chunk in response.aiter_raw()])
        return response


def agent_lines(page: bytes) -> list[str]:
    """The page without the collector's own families (their values move between scrapes)."""
    return [
        line
        for line in page.decode().splitlines()
        if "tripline_collector_" not in line and not line.startswith("process_")
    ]


def up_agents(page: str) -> list[str]:
    return re.findall(r'^tripline_agent_up\{agent_id="([^"]+)"', page, re.MULTILINE)


# -- gzip --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "gzip_ok"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),  # what browsers send
        ("GZIP;q=0.5", True),
        ("identity", False),
        ("", False),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *", False),  # gzip refused by name wins over the wildcard
        ("*", True),
        ("br, *;q=0", False),
        ("gzip;q=nonsense", False),
        ("x-gzip", True),
    ],
)
def test_accept_encoding_decides_gzip(header: str, gzip_ok: bool) -> None:
    assert accepts_gzip(header) is gzip_ok


def test_gzip_is_served_when_accepted_and_decodes_to_the_same_page(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_collector(tmp_path / "c") as app:
            ids = fill_state(app, agents=50, series=10)
            async with Stream(app) as stream:
                await stream.report()
            ids.add(stream.agent_id)
            zipped = await get_raw(app, "gzip")
            plain = await get_raw(app, "identity")
            absent = await get_raw(app, "")
        assert zipped.status_code == plain.status_code == 200
        assert zipped.headers["content-encoding"] == "gzip"
        assert "accept-encoding" in zipped.headers["vary"].lower()
        assert "content-encoding" not in plain.headers
        assert "content-encoding" not in absent.headers
        assert zipped.headers["content-type"] == plain.headers["content-type"]
        page = gzip.decompress(zipped.content)
        assert len(zipped.content) * 3 < len(page)  # compressed, not only wrapped
        assert agent_lines(page) == agent_lines(plain.content) == agent_lines(absent.content)
        assert sorted(up_agents(page.decode())) == sorted(ids)  # every agent exactly once

    asyncio.run(main())


# -- a scrape never stalls ingestion -----------------------------------------------------


def test_reports_are_acked_while_a_scrape_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While /metrics renders a big state, the loop keeps applying and acking reports.

    The renderer is observed, not replaced: after the real render it waits (up to a
    deadline) until three more reports were applied than when it started. Rendered on
    the event loop, as before, nothing can be applied meanwhile and the count stays 0.
    """
    applied_during: list[float] = []
    registry: list[Any] = []
    real_render = SeriesExposition.render

    def applied() -> float:
        return registry[0].get_sample_value(APPLIED) or 0.0

    def observed_render(self: SeriesExposition) -> bytes:
        before = applied()
        body = real_render(self)
        deadline = time.monotonic() + 10
        while applied() < before + 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        applied_during.append(applied() - before)
        return body

    monkeypatch.setattr(SeriesExposition, "render", observed_render)

    async def main() -> None:
        async with running_collector(tmp_path / "c") as app:
            registry.append(app.registry)
            ids = fill_state(app, agents=2000, series=20)
            async with Stream(app) as stream:
                await stream.report()
                ids.add(stream.agent_id)
                scrape = asyncio.ensure_future(get_raw(app, "gzip"))
                acked_while_scraping = 0
                while not scrape.done():
                    await stream.report()
                    acked_while_scraping += not scrape.done()
                response = await scrape
        assert applied_during and applied_during[0] >= 3, applied_during
        assert acked_while_scraping >= 3
        assert stream.acked == list(range(1, stream.seq + 1))
        page = gzip.decompress(response.content).decode()
        agents = up_agents(page)
        assert len(agents) == len(set(agents)) and set(agents) == ids  # each exactly once
        assert page.count('tripline_disk_read_bytes_total{agent_id="agt_big_01999"') == 20

    asyncio.run(main())


def test_concurrent_scrapes_share_one_render(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_collector(tmp_path / "c") as app:
            fill_state(app, agents=200, series=10)
            started = threading.Event()
            release = threading.Event()
            real_render = app.exposition.render

            def held_render() -> bytes:
                started.set()
                release.wait(10)
                return real_render()

            app.exposition.render = held_render  # type: ignore[method-assign]
            renders = app.metrics_page.renders
            first = asyncio.ensure_future(get_raw(app, "gzip"))
            while not started.is_set():
                await asyncio.sleep(0.01)
            others = [asyncio.ensure_future(get_raw(app, enc)) for enc in ("gzip", "", "gzip")]
            while app.metrics_page.waiting < 4:  # all four are waiting on the one render
                await asyncio.sleep(0.01)
            release.set()
            pages = [await first] + [await o for o in others]
            assert app.metrics_page.renders == renders + 1
            bodies = {
                gzip.decompress(p.content) if p.headers.get("content-encoding") else p.content
                for p in pages
            }
            assert len(bodies) == 1

    asyncio.run(main())


# -- ticket counts without a GROUP BY per scrape -----------------------------------------

POLICY = TicketPolicy(reopen_window=3600.0, flap_count=3, flap_window=6 * 3600.0)
COUNT_LINE = 'tripline_collector_tickets{{severity="warning",status="{status}",tier="1"}} {n}'


def open_tickets(store: Store, count: int) -> list[int]:
    """``count`` tickets opened by another process (as `tripline tickets` would write)."""
    with store.transaction() as conn:
        token, plain = enrollment.create_token(conn, "acme", now=time.time())
    del token
    with store.transaction() as conn:
        record, _ = enrollment.enroll_agent(
            conn, plain, hostname="pc-t", site="hq", inventory={}, now=time.time()
        )
    ids = []
    for i in range(count):
        with store.transaction() as conn:
            change = tickets.on_alert_firing(
                conn, customer="acme", agent_id=record.agent_id, hostname="pc-t",
                rule="FilesystemAlmostFull", labels=(("mountpoint", f"/m{i}"),),
                severity="warning", tier=1, summary="full", runbook=None, value=0.97,
                threshold=0.9, context={}, now=time.time(), policy=POLICY,
            )  # fmt: skip
        ids.append(change.ticket_id)
    return ids


async def scrape_text(app: CollectorApp) -> str:
    response = await get_raw(app, "gzip")
    if response.headers.get("content-encoding") == "gzip":
        return gzip.decompress(response.content).decode()
    return response.content.decode()


async def until_shown(app: CollectorApp, *lines: str) -> str:
    deadline = time.monotonic() + 15
    while True:
        page = await scrape_text(app)
        if all(line in page for line in lines):
            return page
        assert time.monotonic() < deadline, f"never shown: {lines}"
        await asyncio.sleep(0.1)


def test_ticket_counts_follow_changes_and_restarts_without_a_query_per_scrape(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        data = tmp_path / "c"
        async with running_collector(data) as app:
            other = Store(app.config.effective_database_url)  # another process's view
            try:
                ids = open_tickets(other, 3)
                await until_shown(app, COUNT_LINE.format(status="open", n="3.0"))

                statements: list[str] = []

                def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                    statements.append(statement)

                event.listen(app.store.engine, "before_cursor_execute", seen)
                try:
                    for _ in range(5):
                        page = await scrape_text(app)
                        assert COUNT_LINE.format(status="open", n="3.0") in page
                finally:
                    event.remove(app.store.engine, "before_cursor_execute", seen)
                over_tickets = [s for s in statements if "GROUP BY" in s.upper()]
                assert over_tickets == [], over_tickets

                with other.transaction() as conn:
                    tickets.acknowledge(conn, ids[0], actor="op", now=time.time())
                    tickets.resolve(conn, ids[1], actor="op", now=time.time())
                await until_shown(
                    app,
                    COUNT_LINE.format(status="open", n="1.0"),
                    COUNT_LINE.format(status="acknowledged", n="1.0"),
                    COUNT_LINE.format(status="resolved", n="1.0"),
                )
            finally:
                other.close()
        async with running_collector(data) as app:
            page = await scrape_text(app)  # the first scrape after the restart, no waiting
            for status in ("open", "acknowledged", "resolved"):
                assert COUNT_LINE.format(status=status, n="1.0") in page

    asyncio.run(main())


def test_ticket_counts_recount_only_when_tickets_changed(store: Store) -> None:
    """On every backend: a refresh recounts only after a change (another process's, seen
    through the newest ticket event, or this process's own), or after recount_every."""
    counts = TicketCounts(store, recount_every=300.0)
    t0 = 1_000.0
    assert counts.refresh(t0) is True and counts.counts == {}
    assert counts.refresh(t0 + 1) is False  # nothing changed: no GROUP BY
    first, _ = open_tickets(store, 2)
    assert counts.refresh(t0 + 2) is True  # seen through the newest ticket event
    assert counts.counts == {("open", "warning", 1): 2}
    assert counts.refresh(t0 + 3) is False
    with store.transaction() as conn:
        tickets.acknowledge(conn, first, actor="op", now=time.time())
    counts.changed()  # this process's own change, as the pipeline and the API report it
    assert counts.refresh(t0 + 4) is True
    assert counts.counts == {("open", "warning", 1): 1, ("acknowledged", "warning", 1): 1}
    assert counts.refresh(t0 + 5) is False
    assert counts.refresh(t0 + 4 + 299) is False
    assert counts.refresh(t0 + 4 + 300) is True  # the safety recount (PostgreSQL)
    assert counts.recounts == 4
