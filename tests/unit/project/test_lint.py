"""Lint, format and types are part of the test run, so CI fails on them like on a broken test.

The checks live in one script, `.ci/check`, that people run too; this runs that script.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def test_static_checks_pass() -> None:
    pytest.importorskip("ruff", reason="ruff comes with the dev extras")
    pytest.importorskip("mypy", reason="mypy comes with the dev extras")
    result = subprocess.run(
        ["bash", str(ROOT / ".ci" / "check")],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
