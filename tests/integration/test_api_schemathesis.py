"""Property-based tests of the HTTP API against its own OpenAPI document (schemathesis).

A real collector runs in a background thread (its own asyncio loop, real SQLite, real
uvicorn on a loopback port) with agents and tickets of two customers in its store;
schemathesis reads /api/v1/openapi.json from it and sends generated requests, valid and
invalid, to every operation. No input may earn a 5xx, and every answer must match the
document (status code, content type, body schema).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.integration.conftest import collector_config
from tripline.collector import apitokens, enrollment, tickets
from tripline.collector.app import CollectorApp
from tripline.collector.openapi import openapi_document
from tripline.collector.ticketcontext import ticket_policy

EXAMPLES_PER_OPERATION = 40  # x 2 modes x 20 operations: about 40 s on 2 cores


class BackgroundCollector:
    """A collector in a thread of its own, for clients that block (schemathesis uses
    requests)."""

    def __init__(self, data_dir: Path) -> None:
        self.app = CollectorApp(
            collector_config(
                data_dir, customers={"acme": "tle_acme_edZKBZWMX5oEJl4onCvZGkz3AqMXtE4QQ-wIQ0wVDIc"}
            )
        )
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="collector", daemon=True)

    def __enter__(self) -> CollectorApp:
        self._thread.start()
        if not self._ready.wait(30):
            raise AssertionError("collector did not start within 30 s")
        if self._error is not None:
            raise self._error
        return self.app

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.app.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise
        self._ready.set()
        await self._stop.wait()
        await self.app.stop(grace=0.1)


def seed(app: CollectorApp, now: float) -> None:
    """Agents and tickets of two customers, in every ticket status."""
    store = app.store
    policy = ticket_policy(app.config)
    for customer in ("acme", "globex"):
        with store.transaction() as conn:
            _, secret = enrollment.create_token(conn, customer, now)
        with store.transaction() as conn:
            agent, _ = enrollment.enroll_agent(
                conn,
                secret,
                hostname=f"{customer}-pc",
                site="hq",
                inventory={"os": "Linux"},
                now=now,
            )
        app.pipeline.track(agent)
        with store.transaction() as conn:
            for n, mount in enumerate(("/", "/home", "/var")):
                change = tickets.on_alert_firing(
                    conn,
                    customer=customer,
                    agent_id=agent.agent_id,
                    hostname=agent.hostname,
                    rule="FilesystemAlmostFull",
                    labels=(("mountpoint", mount),),
                    severity="warning",
                    tier=1,
                    summary=f"{mount} is full",
                    runbook=None,
                    value=0.97,
                    threshold=0.9,
                    context={"uptime_seconds": 100.0},
                    now=now,
                    policy=policy,
                )
                if n == 1:
                    tickets.acknowledge(conn, change.ticket_id, actor="seed", now=now)
                if n == 2:
                    tickets.resolve(conn, change.ticket_id, actor="seed", now=now)


@pytest.fixture(scope="module")
def running_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with BackgroundCollector(tmp_path_factory.mktemp("collector")) as app:
        now = app.clock()
        seed(app, now)
        with app.store.transaction() as conn:
            _, secret = apitokens.create_token(conn, "fuzzer", None, actor="test", now=now)
        yield f"http://127.0.0.1:{app.http_port}", secret


@pytest.fixture(scope="module")
def api_schema(running_api: tuple[str, str]) -> Any:
    base, _ = running_api
    loaded = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    # The token is sent with every case (below); tests/integration/test_api.py covers the
    # answers without one.
    loaded.config.generation.update(with_security_parameters=False)
    # a body too large for the API is refused as such, not as invalid
    rejection = loaded.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "413"]
    return loaded


@pytest.fixture(scope="module")
def auth(running_api: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {running_api[1]}"}


# A window's fields mean something together (one schedule, ends after it starts, a cron
# line that parses, a time zone that exists): more than JSON Schema can say. For these
# operations a schema-valid body may earn a 400, but only one that names the field.
SEMANTIC_BODIES = {("POST", "/maintenance-windows"), ("PUT", "/maintenance-windows/{window_id}")}
# A report's dates too: days of the calendar, `from` before `to`, at most 400 days apart.
SEMANTIC_BODIES.add(("GET", "/reports/{customer}"))
NAMES_A_FIELD = re.compile(r"^(maintenance window [\w/]+: |field '\w+' )")


def bad_input_names_its_field(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code == 400:
        error = response.json()["error"]
        assert NAMES_A_FIELD.match(error), f"a 400 that names no field: {error!r}"
    return None


OPERATIONS = [
    (method.upper(), path)
    for path, methods in openapi_document()["paths"].items()
    for method in methods
]


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_api_conforms_to_its_openapi_document(
    api_schema: Any, auth: dict[str, str], method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if (method, path) in SEMANTIC_BODIES and mode is GenerationMode.POSITIVE:
            case.call_and_validate(
                headers=auth,
                excluded_checks=[positive_data_acceptance],
                additional_checks=[bad_input_names_its_field],
            )
        else:
            case.call_and_validate(headers=auth)

    try:
        check()
    except Unsatisfiable:
        # /rules has nothing to get wrong, and a path parameter's invalid values may all be
        # unsendable (a "/" in an agent id): no case to send is no failure
        pytest.skip(f"schemathesis can build no {mode.value} case for {method} {path}")
