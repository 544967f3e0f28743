"""Fixtures shared by every test layer: free ports, a fake clock, collector/agent configs."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
