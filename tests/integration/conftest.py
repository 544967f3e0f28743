"""Fixtures and helpers shared by the integration tests: stores on every backend, a
collector and an agent configured for loopback, plaintext gRPC and short intervals."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import postgres_schema
from tripline.agent.config import load_agent_config
from tripline.collector import enrollment
from tripline.collector.agents_store import AgentRecord
from tripline.collector.app import CollectorApp
from tripline.collector.config import load_collector_config
from tripline.collector.store import Store


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


def agent_config(state_dir: Path, port: int, token: str = TOKEN):
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
        },
    )


@contextlib.asynccontextmanager
async def running_collector(data_dir: Path, **flags: object) -> AsyncIterator[CollectorApp]:
    app = CollectorApp(collector_config(data_dir, **flags))
    await app.start()
    try:
        yield app
    finally:
        await app.stop(grace=0.1)
