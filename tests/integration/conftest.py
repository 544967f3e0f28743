from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import postgres_schema
from tripline.collector.store import AgentRecord, Store


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
    _, token = store.create_enrollment_token("acme", now=T0)
    record, _ = store.enroll_agent(
        token, hostname="pc-01", site="hq", inventory={"os": "Windows 11"}, now=T0
    )
    return record
