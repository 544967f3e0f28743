"""The HTTP API's routes and its OpenAPI document come from one set of declarations.

The app is the real one (`build_api` on a real SQLite store and pipeline), called in
process through httpx's ASGI transport: no port, no mocks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry
from starlette.routing import Route

from tests.conftest import FakeClock
from tripline.alerts.rules import default_rules
from tripline.collector import apitokens
from tripline.collector.api import ApiContext, build_api, openapi_document
from tripline.collector.api.app import operations
from tripline.collector.api.params import Choice, Param, Text, Whole
from tripline.collector.api.reports import Day
from tripline.collector.committer import Committer
from tripline.collector.config import load_collector_config
from tripline.collector.pipeline import Pipeline
from tripline.collector.selfmetrics import CollectorMetrics
from tripline.collector.state import LiveState
from tripline.collector.store import Store

T0 = 1_700_000_000.0


@contextlib.asynccontextmanager
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any, str]]:
    """A client of the real API app, the app, and an all-customer token's secret."""
    path = tmp_path / "collector.yaml"
    path.write_text("collector: {}\n", encoding="utf-8")
    config = load_collector_config(path, environ={}, flags={"data_dir": tmp_path})
    store = Store(config.effective_database_url)
    store.migrate()
    clock = FakeClock(T0)
    metrics = CollectorMetrics(CollectorRegistry())
    pipeline = Pipeline(
        store=store,
        state=LiveState(window=900.0),
        rules=default_rules(),
        config=config,
        metrics=metrics,
        committer=Committer(store, metrics),
        clock=clock,
    )
    with store.transaction() as conn:
        _, secret = apitokens.create_token(conn, "ops", None, actor="test", now=T0)
    app = build_api(ApiContext(store=store, pipeline=pipeline, clock=clock))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client, app, secret
    finally:
        await asyncio.to_thread(store.close)


def test_every_route_is_in_the_openapi_document_and_every_entry_is_routed(
    tmp_path: Path,
) -> None:
    asyncio.run(_routes_and_document(tmp_path))


async def _routes_and_document(tmp_path: Path) -> None:
    async with api(tmp_path) as (client, app, _):
        await _compare_routes(client, app)


async def _compare_routes(client: httpx.AsyncClient, app: Any) -> None:
    served = (await client.get("/openapi.json")).json()  # no token needed
    documented = {
        (method.upper(), path) for path, methods in served["paths"].items() for method in methods
    }
    routed = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.path != "/openapi.json"
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert routed, "the app serves no routes"
    assert routed - documented == set(), "routes missing from openapi.json"
    assert documented - routed == set(), "openapi.json entries no route serves"
    assert served == openapi_document()


def _out_of_limits(param: Param) -> str:
    if isinstance(param, Day):
        return "2024-1-1"
    if isinstance(param, Whole):
        return str(param.high + 1)
    if isinstance(param, Choice):
        return "no-such-choice"
    assert isinstance(param, Text), f"{param.name}: teach this test its kind"
    return "x" * (param.max_length + 1)


def test_each_declared_query_limit_is_the_one_enforced_and_documented(tmp_path: Path) -> None:
    asyncio.run(_limits(tmp_path))


async def _limits(tmp_path: Path) -> None:
    async with api(tmp_path) as (client, _, secret):
        await _check_limits(client, secret)


async def _check_limits(client: httpx.AsyncClient, secret: str) -> None:
    auth = {"Authorization": f"Bearer {secret}"}
    document = openapi_document()
    checked = 0
    for op in operations():
        documented = {
            p["name"]: p for p in document["paths"][op.path][op.method.lower()]["parameters"]
        }
        for param in op.query:
            assert documented[param.name]["schema"] == param.schema()
            # the operation's other required parameters valid, this one not
            params = {p.name: "2024-01-01" for p in op.query if p.required and isinstance(p, Day)}
            params[param.name] = _out_of_limits(param)
            answer = await client.request(op.method, op.path, params=params, headers=auth)
            assert answer.status_code == 400, (op.operation_id, param.name, answer.text)
            assert param.what in answer.json()["error"]
            checked += 1
        if op.method == "GET" and not op.path_params:
            ok = await client.request(op.method, op.path, headers=auth)
            assert ok.status_code == op.status, (op.operation_id, ok.text)
    assert checked >= 20  # every list route's filters and paging
