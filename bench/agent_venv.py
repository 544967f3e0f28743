"""An office PC's agent install for the benchmarks: a virtual environment holding only
``protos/`` (tripline-common) and ``agent/`` (tripline-agent) from this checkout, as
``pip install ./protos ./agent`` makes it (tests/e2e/test_agent_install.py holds that shape).

The development venv also holds SQLAlchemy, Starlette, uvicorn, the collector and the test
tools; none of that is imported by the agent, but an editable install's import hooks and a
longer ``sys.path`` are not what a PC runs. Building the venv takes a minute, so it is
cached under ``$XDG_CACHE_HOME/tripline-bench`` (default ``~/.cache/tripline-bench``), keyed
by a hash of the two distributions' source files and the Python version: changed agent code
gets a new venv, an unchanged checkout reuses the old one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTIONS = ("protos", "agent")
SKIP_DIRS = frozenset({"build", "__pycache__", ".mypy_cache", ".pytest_cache"})
PIP_TIMEOUT = 900.0


class VenvFailed(Exception):
    """The agent-only venv could not be built; the message holds pip's complaint."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tripline-bench"


def source_files(root: Path = ROOT) -> list[Path]:
    """Every file pip builds the two distributions from, in a stable order."""
    found: list[Path] = []
    for dist in DISTRIBUTIONS:
        for dirpath, dirnames, filenames in os.walk(root / dist):
            dirnames[:] = sorted(
                d for d in dirnames if d not in SKIP_DIRS and not d.endswith(".egg-info")
            )
            found.extend(Path(dirpath) / name for name in sorted(filenames))
    return found


def source_key(root: Path = ROOT) -> str:
    """A short hash of the distributions' files (names and bytes) and this Python."""
    digest = hashlib.sha256(sys.version.encode())
    for path in source_files(root):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def python_of(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def agent_venv(root: Path = ROOT) -> tuple[Path, bool]:
    """The cached venv for this checkout's agent (built now if missing): (path, built now).

    Built in a temporary directory from copies of the sources (pip's build leaves build/
    and egg-info behind in what it builds) and renamed into place, under a file lock, so
    two benchmarks starting together neither build twice nor see half a venv. Run the agent
    as ``python -m tripline.agent.cli``: console scripts carry the build path in their
    shebang, which the rename invalidates.
    """
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    venv = cache / f"agent-venv-{source_key(root)}"
    with open(cache / "agent-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python_of(venv).exists():
            return venv, False
        work = Path(tempfile.mkdtemp(prefix="agent-venv-build-", dir=cache))
        try:
            sources = []
            for dist in DISTRIBUTIONS:
                shutil.copytree(
                    root / dist,
                    work / dist,
                    ignore=shutil.ignore_patterns(*SKIP_DIRS, "*.egg-info"),
                )
                sources.append(str(work / dist))
            built = work / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(built)], check=True, timeout=120)
            pip = subprocess.run(
                [str(python_of(built)), "-m", "pip", "install", "-q", *sources],
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT,
                cwd=work,
            )
            if pip.returncode != 0:
                raise VenvFailed(f"pip install {' '.join(DISTRIBUTIONS)}: {pip.stderr[-2000:]}")
            built.rename(venv)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return venv, True
