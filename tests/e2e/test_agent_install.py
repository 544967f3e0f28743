"""The office PC's install: the agent distribution alone runs, with no server stack.

A fresh virtual environment gets ``protos/`` (tripline-common) and ``agent/``
(tripline-agent) from this checkout, as an MSP would install them on a PC, and runs
``tripline-agent --once``; SQLAlchemy, Starlette, uvicorn, cryptography and httpx must
not be there, nor any collector or rules code.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

SERVER_SIDE = (
    "sqlalchemy",
    "starlette",
    "uvicorn",
    "cryptography",
    "httpx",
    # not prometheus_client: the agent's textfile collector parses *.prom files with its
    # text-format parser (issue 11), so it is an agent dependency now
    "tripline.collector",
    "tripline.alerts",
)


def test_the_agent_alone_installs_and_runs_without_the_server_stack(tmp_path: Path) -> None:
    # Built from copies: pip's build leaves build/ and egg-info behind in what it builds.
    sources = []
    for dist in ("protos", "agent"):
        shutil.copytree(
            ROOT / dist,
            tmp_path / dist,
            ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"),
        )
        sources.append(str(tmp_path / dist))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bindir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    installed = subprocess.run(
        [
            str(bindir / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            str(ROOT / "protos"),
            str(ROOT / "agent"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]

    once = subprocess.run(
        [str(bindir / "tripline-agent"), "--once", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # not the checkout: nothing may come from the source tree
    )
    assert once.returncode == 0, once.stderr[-3000:]
    snapshot = json.loads(once.stdout)
    assert snapshot["samples"] and snapshot["host"], snapshot

    probe = (
        "import importlib.util, json, sys; "
        f"print(json.dumps([m for m in {list(SERVER_SIDE)!r} "
        "if importlib.util.find_spec(m.split('.')[0]) and importlib.util.find_spec(m)]))"
    )
    present = subprocess.run(
        [str(bindir / "python"), "-c", probe], capture_output=True, text=True, cwd=tmp_path
    )
    assert present.returncode == 0, present.stderr
    assert json.loads(present.stdout) == []
