"""What the agent's event loop hands to worker threads per report (issue 10, item 5).

Every hand-off to a thread and back wakes a worker thread and the loop: on an office PC
that costs more CPU than the spool reads and acks it used to carry. The collection (the
probes and the spool append, which syncs to disk) is the one thing per interval that
belongs in a thread. Measured on a real agent streaming to a real collector over
loopback, counting what the agent's code submits to the loop's default executor (the
collector in the same process may use it too; its submissions are not counted).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.conftest import async_eventually as eventually
from tests.integration.conftest import agent_config, running_collector
from tripline.agent.runner import AgentRunner


class _AgentHandoffs(ThreadPoolExecutor):
    """A default executor that counts the calls the agent's own code hands it."""

    def __init__(self) -> None:
        super().__init__(max_workers=4)
        self.agent_calls: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        # asyncio.to_thread submits partial(context.run, func, *args)
        func = fn.args[0] if isinstance(fn, functools.partial) and fn.args else fn
        module = getattr(func, "__module__", "") or ""
        if module.startswith("tripline.agent"):
            self.agent_calls.append(getattr(func, "__qualname__", repr(func)))
        return super().submit(fn, *args, **kwargs)


# A rule that never trips: the default rules watch this PC's real load, and a pending
# rule asks the agent for a snapshot, a hand-off of its own that is not per report.
QUIET_RULES = """\
rules:
  - name: NeverTrips
    metric: memory_total_bytes
    op: "<"
    threshold: 0
    for: 0s
    severity: info
    tier: 1
    summary: "{host} never"
"""


def test_one_thread_hand_off_per_report_the_collection(tmp_path: Path) -> None:
    executor = _AgentHandoffs()
    rules = tmp_path / "rules.yaml"
    rules.write_text(QUIET_RULES)

    async def scenario() -> None:
        asyncio.get_running_loop().set_default_executor(executor)
        async with running_collector(tmp_path / "c", rules=rules) as app:
            runner = AgentRunner(agent_config(tmp_path / "a", app.grpc_port))
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            stats = runner.transport.stats
            await eventually(lambda: stats.acked_seq >= 2)  # connected, steady state
            calls_before, acked_before = len(executor.agent_calls), stats.acked_seq
            await eventually(lambda: stats.acked_seq >= acked_before + 10)
            calls = executor.agent_calls[calls_before:]
            reports = stats.acked_seq - acked_before
            stop.set()
            await task
        # one collection per report; the one in progress at either edge may add one
        assert len(calls) <= reports + 1, calls
        assert set(calls) == {"AgentRunner.collect_once"}, calls

    try:
        asyncio.run(scenario())
    finally:
        executor.shutdown(wait=True)
