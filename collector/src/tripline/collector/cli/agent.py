"""`tripline agent ...` is `tripline-agent ...`: the agent is its own program (and its
own install on an office PC), so this only hands over, importing none of it."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from tripline.collector.cli.errors import CliError


def register(sub: Any) -> None:
    # Handed to tripline-agent before parsing (see main); listed here for --help.
    sub.add_parser("agent", help="run the agent: the same as tripline-agent ARGS", add_help=False)


def run_agent(argv: Sequence[str]) -> int:
    """Replace this process with ``tripline-agent argv`` (on Windows: run it, pass its code)."""
    import importlib.util

    if importlib.util.find_spec("tripline.agent") is None:
        raise CliError("the agent is not installed here: pip install tripline-agent")
    command = [sys.executable, "-m", "tripline.agent.cli", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    if sys.platform == "win32":  # no exec that keeps the console: run it and pass its code
        import subprocess

        return subprocess.call(command)
    os.execv(sys.executable, command)
    raise AssertionError("unreachable: execv returns only by raising")
