"""Real agents over real gRPC: one interning its series, one sending named samples as
agents before series tables did, side by side; then a collector restart that leaves a
spooled backlog, replayed on new streams with new tables."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import async_eventually as eventually
from tests.integration.conftest import agent_config, running_collector
from tripline.agent import identity
from tripline.agent.runner import AgentRunner
from tripline.collector import agent_instances
from tripline.collector.app import CollectorApp
from tripline.collector.store import Store


def _applied_seq(store: Store, agent_id: str, instance_id: str) -> int:
    with store.read() as conn:
        return agent_instances.applied_seq(conn, agent_id, instance_id)


def _rejected(app: CollectorApp) -> float:
    return sum(
        sample.value
        for family in app.registry.collect()
        if family.name == "tripline_collector_reports_rejected"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def _names(app: CollectorApp, agent_id: str) -> set[str]:
    return {name for name, _ in app.state.agents[agent_id].series}


def test_interning_and_named_agents_side_by_side_through_a_spooled_backlog(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with running_collector(tmp_path / "c") as app:
            port = app.grpc_port
            new = AgentRunner(agent_config(tmp_path / "new", port))
            old = AgentRunner(agent_config(tmp_path / "old", port))
            old.transport.intern_series = False  # the wire form of older agents
            stop = asyncio.Event()
            tasks = [asyncio.create_task(r.run(stop)) for r in (new, old)]
            await eventually(lambda: min(r.transport.stats.acked_seq for r in (new, old)) >= 3)
            assert new.transport.stats.series_defined > 0
            assert old.transport.stats.series_defined == 0
            ids = {r: _agent_id(r) for r in (new, old)}
            # the same machine's probes: the same series, whichever wire form carried them
            assert _names(app, ids[new]) == _names(app, ids[old])
            assert "cpu_usage_ratio" in _names(app, ids[new])
            assert _rejected(app) == 0
            defined_first_stream = new.transport.stats.series_defined
        # The collector is down: both agents keep collecting into their spools.
        await eventually(lambda: all(r.spool.stats().reports >= 5 for r in (new, old)))
        async with running_collector(tmp_path / "c", listen=f"127.0.0.1:{port}") as app:
            newest = {r: r.spool.stats().newest_seq or 0 for r in (new, old)}
            await eventually(
                lambda: all(r.transport.stats.acked_seq >= newest[r] for r in (new, old)),
                deadline=30,
            )
            for runner in (new, old):
                instance = runner.spool.instance_id
                assert _applied_seq(app.store, ids[runner], instance) >= newest[runner]
            # the backlog went out on a new stream, so its series were defined again
            assert new.transport.stats.series_defined > defined_first_stream
            assert old.transport.stats.series_defined == 0
            assert _rejected(app) == 0
            assert _names(app, ids[new]) == _names(app, ids[old])
            stop.set()
            await asyncio.gather(*tasks)

    asyncio.run(scenario())


def _agent_id(runner: AgentRunner) -> str:
    ident = identity.load(runner.transport.identity_path)
    assert ident is not None
    return ident.agent_id
