"""Real processes: start the collector and agents as subprocesses, wait for readiness,
kill them, and read what survived through the CLI and the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import free_port

T = TypeVar("T")


def eventually(check: Callable[[], T | None], deadline: float = 30.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    end = time.monotonic() + deadline
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"not within {deadline}s: {what or check}")
        time.sleep(0.1)


@dataclass
class Proc:
    name: str
    args: list[str]
    log_path: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)
    umask: int = -1  # -1: inherit the test's

    def start(self) -> Proc:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tripline.collector.cli", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            umask=self.umask,
        )
        log.close()
        return self

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


@dataclass
class Collector(Proc):
    grpc_port: int = 0
    http_port: int = 0
    data_dir: Path = Path()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def http_get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, ""

    def wait_ready(self, deadline: float = 30.0) -> None:
        def ready() -> bool:
            assert self.alive(), f"collector exited:\n{self.log()}"
            return self.http_get("/readyz")[0] == 200

        eventually(ready, deadline, "collector ready")


class Cluster:
    """Factory for collector and agent processes of one test, cleaned up after it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        root = Path(__file__).resolve().parents[2]
        self.env = {
            **os.environ,
            "PYTHONPATH": str(root),
            "PYTHONUNBUFFERED": "1",
        }
        self.env = {k: v for k, v in self.env.items() if not k.startswith("TRIPLINE_")}

    def collector(
        self,
        *extra: str,
        data_dir: Path | None = None,
        grpc_port: int | None = None,
        http_port: int | None = None,
        name: str = "collector",
    ) -> Collector:
        data_dir = data_dir or self.tmp / "collector"
        grpc_port = grpc_port or free_port()
        http_port = http_port or free_port()
        proc = Collector(
            name=name,
            args=[
                "collector",
                "--listen",
                f"127.0.0.1:{grpc_port}",
                "--http-listen",
                f"127.0.0.1:{http_port}",
                "--data-dir",
                str(data_dir),
                "--log-format",
                "json",
                "--plaintext",  # TLS is covered by tests/integration/test_tls.py
                *extra,
            ],
            log_path=self.tmp / f"{name}.log",
            env=self.env,
            grpc_port=grpc_port,
            http_port=http_port,
            data_dir=data_dir,
        )
        self.procs.append(proc)
        return proc

    def agent(self, collector: Collector, token: str, *extra: str, name: str = "agent") -> Proc:
        proc = Proc(
            name=name,
            args=[
                "agent",
                "--collector",
                collector.address,
                "--enrollment-token",
                token,
                "--state-dir",
                str(self.tmp / name),
                "--log-format",
                "json",
                "--plaintext",
                *extra,
            ],
            log_path=self.tmp / f"{name}.log",
            env=self.env,
        )
        self.procs.append(proc)
        return proc

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tripline.collector.cli", *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )

    def tickets(self, data_dir: Path, *args: str) -> list[dict[str, Any]]:
        result = self.cli("tickets", "list", "--json", "--data-dir", str(data_dir), *args)
        assert result.returncode == 0, result.stderr
        return list(json.loads(result.stdout))

    def ticket(self, data_dir: Path, ticket_id: int) -> dict[str, Any]:
        result = self.cli("tickets", "show", str(ticket_id), "--json", "--data-dir", str(data_dir))
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()


# -- a rule set that trips on any machine (shared by the lifecycle, delivery and redaction
# tests) ----------------------------------------------------------------------------------

TOKEN = "tle_e2e_acme_l___XobGYjIO9VZgA_pb86uTiLHUN-cykd"

# Trips on any machine: every PC has memory. Clears when the threshold is out of reach.
TRIPPING = """
rules:
  - name: MemoryPresent
    metric: memory_total_bytes
    op: ">"
    threshold: {threshold}
    for: 2s
    severity: warning
    tier: 1
    summary: "{{host}} has {{value:.0f}} bytes of memory"
    runbook: "Nothing to do: an end-to-end test rule."
  - name: AgentOffline
    builtin: offline
    severity: critical
    tier: 1
    summary: "{{host}} stopped reporting"
"""


def write_rules(path: Path, threshold: float) -> None:
    path.write_text(TRIPPING.format(threshold=threshold))


def by_rule(tickets: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    return [t for t in tickets if t["rule"] == rule]


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.close()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        for proc in c.procs:
            print(f"--- {proc.name} log ---\n{proc.log()[-4000:]}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium (a Selenium WebDriver) per test module; skips when chromium
    or chromedriver is missing unless TRIPLINE_REQUIRE_BROWSER=1 (tests/e2e/browser.py)."""
    from tests.e2e.browser import binaries, start_chromium

    chromium, driver = binaries()
    opened = start_chromium(chromium, driver, tmp_path_factory.mktemp("downloads"))
    try:
        yield opened
    finally:
        opened.quit()
