"""Fixtures and helpers shared by the integration tests: stores on every backend, a
collector and an agent configured for loopback, plaintext gRPC and short intervals, and
the collector's pipeline on a real store stepped by a fake clock (`pipeline_rig`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bench.tlsfiles import CertAuthority, Issued
from tests.conftest import FakeClock, postgres_schema
from tripline.agent.config import AgentConfig, load_agent_config
from tripline.agent.runner import AgentRunner
from tripline.alerts.rules import parse_rules
from tripline.collector import enrollment, ticketqueries
from tripline.collector.agents_store import AgentRecord
from tripline.collector.app import CollectorApp
from tripline.collector.committer import Committer
from tripline.collector.config import CollectorConfig, load_collector_config
from tripline.collector.convert import decode_hello, decode_report
from tripline.collector.pipeline import Pipeline
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.sessions import Session
from tripline.collector.state import LiveState
from tripline.collector.store import Store
from tripline.collector.ticketmodel import Ticket
from tripline.v1 import tripline_pb2 as pb


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A URL to an empty database: a fresh SQLite file, or a fresh schema in the
    PostgreSQL server named by TRIPLINE_TEST_POSTGRES_URL (skipped without it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('store') / 'tripline.db'}"
        return
    with postgres_schema("tripline_test_") as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A migrated store on every backend under test."""
    opened = Store(store_url)
    opened.migrate()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    """A migrated store in one SQLite file, for tests about something other than the
    backend."""
    opened = Store(f"sqlite:///{tmp_path / 'tripline.db'}")
    opened.migrate()
    try:
        yield opened
    finally:
        opened.close()


T0 = 1_700_000_000.0


@pytest.fixture
def agent(store: Store) -> AgentRecord:
    """An agent enrolled for customer "acme"."""
    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, "acme", now=T0)
    with store.transaction() as conn:
        record, _ = enrollment.enroll_agent(
            conn, token, hostname="pc-01", site="hq", inventory={"os": "Windows 11"}, now=T0
        )
    return record


TOKEN = "tle_acme_integration_PNQPeY0ZJyUFPexTNJgRh8O-ZkY3"


def collector_config(data_dir: Path, **flags: object):
    return load_collector_config(
        None,
        environ={},
        flags={
            "listen": "127.0.0.1:0",
            "http_listen": "127.0.0.1:0",
            "data_dir": data_dir,
            "customers": {"acme": TOKEN},
            "interval": 1,
            "evaluation_interval": 0.2,
            "plaintext": True,  # TLS is covered by test_tls.py
            **flags,
        },
    )


def agent_config(state_dir: Path, port: int, token: str = TOKEN, **flags: object):
    return load_agent_config(
        None,
        environ={},
        flags={
            "collector": f"127.0.0.1:{port}",
            "enrollment_token": token,
            "state_dir": state_dir,
            "interval": 0.2,
            "backoff_initial": 0.05,
            "backoff_max": 0.5,
            "collect_processes": False,
            "plaintext": True,
            **flags,
        },
    )


@contextlib.asynccontextmanager
async def running_app(config: CollectorConfig) -> AsyncIterator[CollectorApp]:
    """A collector started in this process, stopped when the block ends."""
    app = CollectorApp(config)
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=0.1)


def running_collector(data_dir: Path, **flags: object) -> AbstractAsyncContextManager[CollectorApp]:
    """`running_app` with `collector_config(data_dir, **flags)`: plaintext, loopback."""
    return running_app(collector_config(data_dir, **flags))


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig) -> AsyncIterator[AgentRunner]:
    """An agent running in this process until the block ends."""
    runner = AgentRunner(config)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await task


@pytest.fixture
def pki(tmp_path: Path) -> tuple[CertAuthority, Issued]:
    """A CA in tmp_path and a server certificate it issued for loopback."""
    ca = CertAuthority(tmp_path / "pki")
    return ca, ca.server()


# -- the pipeline without gRPC ----------------------------------------------------------

ROOT = {"mountpoint": "/", "fstype": "ext4", "device": "/dev/sda1"}
INSTANCE = "i-1"


def add_root_filesystem(msg: pb.Report, used: float) -> None:
    """The samples an agent sends for a 100 GB root filesystem `used` full."""
    msg.samples.add(name="filesystem_used_ratio", labels=ROOT, value=used)
    msg.samples.add(name="filesystem_avail_bytes", labels=ROOT, value=(1 - used) * 1e11)
    msg.samples.add(name="filesystem_size_bytes", labels=ROOT, value=1e11)


class PipelineRig:
    """Store, committer and pipeline as collector/app.py builds them, on a real SQLite
    store, without gRPC: reports go in decoded as the servicer decodes them, and time moves
    only when the test moves `clock`. Made by the `pipeline_rig` fixture; a second rig on
    the same data dir is a restarted collector, or another worker of ``--workers N``."""

    def __init__(self, config: CollectorConfig, rules: str, clock: FakeClock) -> None:
        self.clock = clock
        self.config = config
        self.rules = parse_rules(rules, "rules.yaml")
        self.store = Store(config.effective_database_url)
        self.store.migrate()
        self.metrics = CollectorMetrics(CollectorRegistry())
        self.pipeline = self.new_pipeline()
        self.seq: dict[str, int] = {}  # agent_id -> last seq sent by `send_root`

    def new_pipeline(self) -> Pipeline:
        """A collector process's pipeline (a restart builds a new one on the same store);
        also a new committer: asyncio.run makes a loop per call, and a committer's queue
        belongs to one loop."""
        self.committer = Committer(self.store, self.metrics)
        return Pipeline(
            store=self.store,
            state=LiveState(window=900.0),
            rules=self.rules,
            config=self.config,
            metrics=self.metrics,
            committer=self.committer,
            clock=self.clock,
        )

    @contextlib.asynccontextmanager
    async def committing(self) -> AsyncIterator[None]:
        """The committer running, as the collector runs it, until the block ends."""
        task = asyncio.create_task(self.committer.run())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        async with self.committing():
            await scenario()

    def enroll(
        self,
        hostname: str = "pc-01",
        *,
        customer: str = "acme",
        site: str = "hq",
        now: float | None = None,
    ) -> AgentRecord:
        """An agent enrolled with a token of its own (at `now`, by default the clock's)."""
        at = self.clock() if now is None else now
        with self.store.transaction() as conn:
            _, token = enrollment.create_token(conn, customer, now=at)
            record, _ = enrollment.enroll_agent(
                conn, token, hostname=hostname, site=site, inventory={}, now=at
            )
        return record

    async def connect(
        self,
        agent: AgentRecord,
        *,
        sent_at: float | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Session:
        """A session opened by the agent's Hello, sent now unless told when."""
        hello = pb.Hello(
            agent_version="test",
            instance_id=INSTANCE,
            sent_at_seconds=self.clock() if sent_at is None else sent_at,
            host=pb.HostInfo(hostname=agent.hostname, tags=tags or {}),
        )
        return await self.pipeline.open_session(agent, decode_hello(hello))

    def message(self, seq: int, *, collected_at: float | None = None) -> pb.Report:
        """An empty report of the rig's instance, collected now unless told when."""
        when = self.clock() if collected_at is None else collected_at
        return pb.Report(instance_id=INSTANCE, seq=seq, collected_at_seconds=when)

    async def apply(self, session: Session, msg: pb.Report) -> bool:
        """`msg` decoded as the servicer decodes it, then applied; False for a duplicate."""
        return await self.pipeline.apply(
            session, decode_report(msg, instance_id=INSTANCE, max_samples=100)
        )

    async def send_root(self, session: Session, root: float) -> None:
        """The agent's next report: its root filesystem `root` full, and nothing else."""
        agent_id = session.agent.agent_id
        seq = self.seq[agent_id] = self.seq.get(agent_id, 0) + 1
        msg = self.message(seq)
        msg.samples.add(name="filesystem_used_ratio", labels=ROOT, value=root)
        assert await self.apply(session, msg)

    def tickets(self, **filters: Any) -> list[Ticket]:
        """Tickets with their events, oldest first (up to 1000 unless `limit` says)."""
        filters.setdefault("limit", 1000)
        with self.store.read() as conn:
            listed = ticketqueries.list_tickets(conn, **filters)
            return [ticketqueries.get_ticket(conn, t.id) for t in reversed(listed)]


# pipeline_rig(clock, *, rules, config_text=None, data_dir=None, rig=PipelineRig, **flags)
MakeRig = Callable[..., Any]


@pytest.fixture
def pipeline_rig(tmp_path: Path) -> Iterator[MakeRig]:
    """Makes `PipelineRig`s (or a test module's subclass, `rig=`): collector config from
    `config_text` (a collector.yaml) and `flags`, the store in `data_dir` (tmp_path by
    default). Every store made is closed when the test ends."""
    made: list[PipelineRig] = []

    def make(
        clock: FakeClock,
        *,
        rules: str,
        config_text: str | None = None,
        data_dir: Path | None = None,
        rig: type[PipelineRig] = PipelineRig,
        **flags: Any,
    ) -> PipelineRig:
        where = tmp_path if data_dir is None else data_dir
        path = None
        if config_text is not None:
            path = where / "collector.yaml"
            path.write_text(config_text, encoding="utf-8")
        config = load_collector_config(path, environ={}, flags={"data_dir": where, **flags})
        made.append(rig(config, rules, clock))
        return made[-1]

    yield make
    for rig in made:
        rig.store.close()
