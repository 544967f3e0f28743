"""What one Connect stream keeps in the collector between reports and after it ends:
real gRPC on loopback, real SQLite, an agent in the same process.

A stream lives for days and there is one per PC, so whatever a stream holds while it
waits for the next report is multiplied by the fleet (bench/README.md, "Collector
memory per agent")."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from tests.conftest import async_eventually as eventually
from tests.integration.conftest import agent_config, running_collector
from tripline.agent.runner import AgentRunner
from tripline.collector import convert
from tripline.collector.reportstream import Stream
from tripline.collector.seriestable import SeriesTable
from tripline.collector.sessions import Session

KINDS = (convert.Report, Stream, SeriesTable, Session)


def test_a_stream_keeps_no_decoded_report_between_reports_and_nothing_after_it(
    tmp_path: Path,
) -> None:
    # Objects of these kinds that earlier tests in this process left behind are not this
    # stream's: they are held here (so their ids stay theirs) and left out of the counts.
    gc.collect()
    earlier = [o for o in gc.get_objects() if type(o) in KINDS]
    ignored = {id(o) for o in earlier}

    def alive(kind: type) -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is kind and id(o) not in ignored)

    async def scenario() -> None:
        async with running_collector(tmp_path / "c") as app:
            runner = AgentRunner(agent_config(tmp_path / "a", app.grpc_port))
            stop = asyncio.Event()
            task = asyncio.create_task(runner.run(stop))
            await eventually(lambda: runner.transport.stats.acked_seq >= 2)
            # Between reports the samples live in the live state only: the reader does
            # not hold the last decoded report (and its ~60 sample tuples) for an interval.
            await eventually(lambda: alive(convert.Report) == 0)
            assert alive(Stream) == alive(SeriesTable) == alive(Session) == 1
            stop.set()
            await task
            # The stream ended: its outgoing side, series table and session are gone.
            await eventually(lambda: alive(Stream) + alive(SeriesTable) + alive(Session) == 0)

    asyncio.run(scenario())
