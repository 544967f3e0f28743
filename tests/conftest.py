"""Fixtures shared by every test layer: free ports, a fake clock, collector/agent configs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

T0 = 1_700_000_000.0


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FakeClock:
    """Time as a value: tests step it instead of sleeping."""

    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def port() -> Callable[[], int]:
    return free_port


def promtool_path() -> str | None:
    """promtool, or None; CI sets TRIPLINE_REQUIRE_PROMTOOL=1 so a missing one fails."""
    path = shutil.which("promtool")
    if path is None and os.environ.get("TRIPLINE_REQUIRE_PROMTOOL") == "1":
        pytest.fail("promtool is required (TRIPLINE_REQUIRE_PROMTOOL=1) but not on PATH")
    return path


@pytest.fixture
def promtool() -> str:
    path = promtool_path()
    if path is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "collector"
    d.mkdir()
    return d


@dataclass
class Receiver:
    """A webhook receiver: records requests; answers `status` (a list pops per request)."""

    port: int
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on loopback standing in for a PSA's webhook endpoint."""
    rec = Receiver(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            status = rec.statuses.pop(0) if rec.statuses else 204
            if status < 300:
                rec.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", rec.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    server.shutdown()
    server.server_close()


POSTGRES_URL_ENV = "TRIPLINE_TEST_POSTGRES_URL"


@contextlib.contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """A URL to a fresh schema in the PostgreSQL named by TRIPLINE_TEST_POSTGRES_URL,
    dropped afterwards; the test is skipped without that server."""
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        pytest.skip(
            f"set {POSTGRES_URL_ENV}=postgresql+psycopg://user@host/db to run on PostgreSQL"
        )
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg (pip install .[postgres])")
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    schema = prefix + secrets.token_hex(6)
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


async def async_eventually(
    check: Callable[[], Awaitable[bool] | bool], deadline: float = 15.0
) -> None:
    """Poll ``check`` (plain or async) until true or the deadline passes: no fixed sleeps."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {deadline}s: {check}")
        await asyncio.sleep(0.05)
