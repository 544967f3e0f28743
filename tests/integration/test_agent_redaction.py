"""The agent redacts its own credential from command lines from the moment it enrolls."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.conftest import async_eventually as eventually
from tests.integration.conftest import TOKEN, agent_config, running_collector
from tripline.agent.runner import AgentRunner


def test_enrolling_adds_the_credential_to_the_redaction(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_collector(tmp_path / "c") as app:
            runner = AgentRunner(agent_config(tmp_path / "a", app.grpc_port))
            assert runner.prober.redaction(["app", TOKEN]) == "app ***"
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            await eventually(lambda: runner.transport.stats.connects >= 1)
            identity = json.loads((tmp_path / "a" / "identity.json").read_text())
            credential = identity["credential"]
            assert runner.prober.redaction(["app", credential, "x"]) == "app *** x"
            stop.set()
            await task
            # a restarted agent knows it from the identity file
            again = AgentRunner(agent_config(tmp_path / "a", app.grpc_port))
            assert again.prober.redaction([credential]) == "***"
            again.spool.close()

    asyncio.run(scenario())
