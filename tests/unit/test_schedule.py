"""The agent's collection schedule (agent/schedule.py), which replaced APScheduler."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tripline.agent.schedule import IntervalSchedule, next_run


@pytest.mark.parametrize(
    ("planned", "now", "interval", "expected"),
    [
        (0.0, 0.5, 10.0, 10.0),  # on time: the next grid point
        (0.0, 10.0, 10.0, 10.0),  # the run took exactly one interval: due now
        (0.0, 12.0, 10.0, 20.0),  # overran one point: that one is skipped, not run late
        (0.0, 45.0, 10.0, 50.0),  # held up for several: one run, then back on the grid
        (100.0, 99.0, 10.0, 110.0),  # the clock reads before the plan: still the grid
    ],
)
def test_next_run_stays_on_the_grid_and_coalesces_missed_runs(
    planned: float, now: float, interval: float, expected: float
) -> None:
    assert next_run(planned, now, interval) == pytest.approx(expected)


def test_runs_now_then_every_interval_and_stops() -> None:
    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        runs: list[float] = []
        stop = asyncio.Event()

        async def job() -> None:
            runs.append(loop.time())
            if len(runs) == 4:
                stop.set()

        schedule = IntervalSchedule(job, 0.05)
        started = loop.time()
        await asyncio.wait_for(schedule.run(stop), 5)
        return [t - started for t in runs]

    runs = asyncio.run(scenario())
    assert len(runs) == 4
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert all(g >= 0.045 for g in gaps), gaps  # never early (timer slack aside)


def test_the_first_run_is_at_once_not_after_an_interval() -> None:
    async def scenario() -> None:
        stop = asyncio.Event()

        async def job() -> None:
            stop.set()  # the agent's first report goes out at start

        await asyncio.wait_for(IntervalSchedule(job, 3600.0).run(stop), 5)

    asyncio.run(scenario())


def test_reschedule_moves_the_next_run_to_now_plus_the_new_interval() -> None:
    async def scenario() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        runs: list[float] = []
        stop = asyncio.Event()
        schedule: IntervalSchedule

        async def job() -> None:
            runs.append(loop.time())
            if len(runs) == 2:
                stop.set()

        schedule = IntervalSchedule(job, 60.0)
        task = asyncio.create_task(schedule.run(stop))
        while not runs:
            await asyncio.sleep(0.01)
        changed_at = loop.time()
        schedule.reschedule(0.1)  # the collector pushed a shorter interval
        await asyncio.wait_for(task, 5)
        return runs[1] - changed_at, schedule.interval

    after, interval = asyncio.run(scenario())
    assert interval == 0.1
    assert 0.09 <= after < 5  # not the 60 s planned before


def test_a_failing_run_is_logged_and_the_schedule_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> int:
        calls = 0
        stop = asyncio.Event()

        async def job() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise OSError("disk full")
            stop.set()

        await asyncio.wait_for(IntervalSchedule(job, 0.01).run(stop), 5)
        return calls

    assert asyncio.run(scenario()) == 2
    (record,) = [r for r in caplog.records if r.getMessage() == "collection failed"]
    assert record.exc_info is not None and "disk full" in str(record.exc_info[1])


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_rejects_an_interval_that_is_not_positive(interval: float) -> None:
    async def job() -> None:
        pass

    with pytest.raises(ValueError, match="interval must be positive"):
        IntervalSchedule(job, interval)
