"""agent.backoff.Backoff: capped exponential growth with bounded jitter."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

import pytest

from tripline.common.backoff import Backoff


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


def sequence(values: Iterable[float]) -> Callable[[], float]:
    it = iter(values)
    return lambda: next(it)


def test_grows_by_doubling_with_the_lowest_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=60.0, rng=fixed(0.0))
    # jitter 0: half the ceiling 0.5, 1, 2, 4 ...
    assert [backoff.next() for _ in range(5)] == [0.25, 0.5, 1.0, 2.0, 4.0]


def test_highest_jitter_approaches_the_ceiling() -> None:
    backoff = Backoff(initial=1.0, maximum=60.0, rng=fixed(1.0))
    assert [backoff.next() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]


def test_capped_at_maximum() -> None:
    backoff = Backoff(initial=0.5, maximum=10.0, rng=fixed(0.0))
    delays = [backoff.next() for _ in range(8)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    high = Backoff(initial=0.5, maximum=10.0, rng=fixed(0.999999))
    assert max(high.next() for _ in range(50)) < 10.0


def test_attempts_stop_counting_so_the_exponent_cannot_overflow() -> None:
    backoff = Backoff(initial=1.0, maximum=30.0, rng=fixed(0.5))
    for _ in range(10_000):
        delay = backoff.next()
    assert backoff.attempt == 30
    assert delay == 22.5


@pytest.mark.parametrize("attempt", range(12))
@pytest.mark.parametrize("jitter", [0.0, 0.25, 0.5, 0.75, 0.999])
def test_jitter_stays_within_half_to_full_ceiling(attempt: int, jitter: float) -> None:
    backoff = Backoff(initial=0.5, maximum=60.0, rng=fixed(jitter), attempt=attempt)
    ceiling = min(60.0, 0.5 * 2**attempt)
    delay = backoff.next()
    assert ceiling / 2 <= delay <= ceiling
    assert delay == pytest.approx(ceiling / 2 + jitter * ceiling / 2)


def test_each_delay_draws_its_own_jitter() -> None:
    backoff = Backoff(initial=2.0, maximum=60.0, rng=sequence([0.0, 1.0, 0.5]))
    assert [backoff.next() for _ in range(3)] == [1.0, 4.0, 6.0]


def test_reset_starts_again_from_initial() -> None:
    backoff = Backoff(initial=0.5, maximum=60.0, rng=fixed(0.0))
    for _ in itertools.repeat(None, 6):
        backoff.next()
    assert backoff.attempt == 6
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next() == 0.25
