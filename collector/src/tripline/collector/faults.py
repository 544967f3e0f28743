"""Failpoints: a test hook that makes the collector SIGKILL itself at a named step.

``TRIPLINE_FAILPOINTS="after_commit_before_ack"`` kills the process the first time that
step is reached; ``"before_commit@3"`` the third time. Several are comma-separated. The
fault tests (tests/e2e/test_faults.py) use it to crash between the steps of applying a
report, which no signal sent from outside can hit reliably. Unset, `hit` is one set
lookup on an empty set.

The variable is read once, here, at import: it is a test switch, not configuration.

Steps:
  before_commit            a report's effects are written, its transaction not committed
  after_commit_before_ack  the transaction committed, the Ack not yet queued
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "TRIPLINE_FAILPOINTS"


def _parse(text: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, nth = item.partition("@")
        points[name] = int(nth) if nth else 1
    return points


_ARMED = _parse(os.environ.get(ENV, ""))
_hits: Counter[str] = Counter()


def hit(name: str) -> None:
    """Kill this process with SIGKILL if failpoint ``name`` is armed and due."""
    if name not in _ARMED:
        return
    _hits[name] += 1
    if _hits[name] >= _ARMED[name]:
        # SIGKILL, not sys.exit: no finally block, atexit or flush may run, as in a crash.
        os.kill(os.getpid(), signal.SIGKILL)
