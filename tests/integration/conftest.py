from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from collector.store import AgentRecord, Store

POSTGRES_URL_ENV = "TRIPLINE_TEST_POSTGRES_URL"


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
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        pytest.skip(
            f"set {POSTGRES_URL_ENV}=postgresql+psycopg://user@host/db to run on PostgreSQL"
        )
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg (pip install .[postgres])")
    schema_name = "tripline_test_" + secrets.token_hex(6)
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema_name}")
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema_name}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema_name} CASCADE")
        admin.dispose()


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
