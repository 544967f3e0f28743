"""Which modules a command imports: run it under ``python -X importtime`` (shared by
tests/unit/project/test_cli_imports.py and tests/unit/agent/test_agent_footprint.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def imported(*argv: str | Path, cwd: Path) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    """Run ``python -X importtime ARGV``; the modules it imported, and the result."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLINE_")}
    env["HOME"] = str(cwd)  # no operator's config or API URL
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    # the listing worked: the command's own package is in it
    assert "tripline.common.terminal" in modules or "tripline.agent.cli" in modules, modules
    return modules, result


def loaded(modules: set[str], *names: str) -> list[str]:
    """Which of ``names`` (packages: with any submodule) the process imported."""
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))
