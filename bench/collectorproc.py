"""A collector run as a separate process for a benchmark, and reading its /metrics."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.tlsfiles import BenchTls

from tripline.collector.config import DATABASE_FILE

ROOT = Path(__file__).resolve().parents[1]


class CollectorFailed(Exception):
    """The collector exited or did not become ready; the message holds its log's tail."""


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    """This environment minus TRIPLINE_* (flags decide), with the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLINE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@functools.cache
def plaintext_flags(command: str) -> tuple[str, ...]:
    """``("--plaintext",)`` when ``tripline COMMAND`` requires TLS unless told otherwise.

    The benchmarks run on loopback without certificates; older checkouts have no flag.
    """
    result = subprocess.run(
        [sys.executable, "-m", "tripline.collector.cli", command, "--help"],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=60,
    )
    return ("--plaintext",) if "--plaintext" in result.stdout else ()


@dataclass(frozen=True)
class Scrape:
    seconds: float  # from request to the last byte
    started: float  # time.monotonic() at the request; counters are read near its start
    text: str

    @property
    def size(self) -> int:
        return len(self.text.encode())

    def value(self, name: str) -> float:
        """The unlabelled sample ``name``, or the sum of its per-worker samples
        (``name{worker="i"}``, a collector with --workers); 0.0 when absent."""
        prefixes = (name + " ", name + '{worker="')
        total = 0.0
        for line in self.text.splitlines():
            if line.startswith(prefixes):
                total += float(line.rsplit(" ", 1)[1])
        return total


def scrape(url: str, timeout: float = 120.0) -> Scrape:
    started = time.monotonic()
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = response.read()
    return Scrape(time.monotonic() - started, started, body.decode())


@dataclass
class CollectorProcess:
    data_dir: Path
    token: str
    interval: float
    rules: Path | None = None
    extra: tuple[str, ...] = ()
    # server certificate and key for the gRPC port; None: plaintext (--plaintext)
    tls: BenchTls | None = None
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    popen: subprocess.Popen[bytes] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def database(self) -> Path:
        return self.data_dir / DATABASE_FILE

    @property
    def log_path(self) -> Path:
        return self.data_dir / "collector.log"

    def start(self, ready_within: float = 60.0) -> CollectorProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            sys.executable,
            "-m",
            "tripline.collector.cli",
            "collector",
            "--listen",
            self.target,
            "--http-listen",
            f"127.0.0.1:{self.http_port}",
            "--data-dir",
            str(self.data_dir),
            "--customer",
            f"bench={self.token}",
            "--interval",
            f"{self.interval:g}",
            "--log-format",
            "json",
            *(
                ["--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
                if self.tls
                else plaintext_flags("collector")
            ),
            *(["--rules", str(self.rules)] if self.rules else []),
            *self.extra,
        ]
        env = child_env()
        if any(
            "max_connects_per_second_per_peer" in path.read_text()
            for path in ROOT.glob("collector/**/config.py")
        ):
            # every simulated agent comes from 127.0.0.1: one office's budget would make
            # thousands of them queue to connect (older checkouts have no such key)
            env["TRIPLINE_COLLECTOR_MAX_CONNECTS_PER_SECOND_PER_PEER"] = "1000000"
            env["TRIPLINE_COLLECTOR_MAX_CONNECT_BURST_PER_PEER"] = "1000000"
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        deadline = time.monotonic() + ready_within
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise CollectorFailed(f"collector exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.http}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        self.stop()
        raise CollectorFailed(f"collector not ready within {ready_within:g}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        return self.popen.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
