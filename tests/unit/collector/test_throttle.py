"""collector/throttle.py: the growing wait after repeated failures, stepped by hand."""

from __future__ import annotations

import pytest

from tripline.collector.throttle import FailureThrottle


def test_free_failures_then_a_doubling_wait_up_to_the_maximum() -> None:
    throttle = FailureThrottle(free=3, base=1.0, maximum=8.0, forget_after=100.0)
    now = 0.0
    delays = []
    for _ in range(9):
        assert throttle.wait("peer", now) == 0.0  # it may try: the last wait has passed
        delays.append(throttle.failed("peer", now))
        now += delays[-1]
    assert delays == [0, 0, 0, 1, 2, 4, 8, 8, 8]
    assert throttle.wait("peer", now - 3) == 3.0
    assert throttle.wait("other", now) == 0.0  # keys are apart


def test_a_key_quiet_for_forget_after_starts_afresh() -> None:
    throttle = FailureThrottle(free=1, base=2.0, maximum=60.0, forget_after=50.0)
    assert throttle.failed("token", 0.0) == 0
    assert throttle.failed("token", 1.0) == 2.0
    assert throttle.wait("token", 2.0) == pytest.approx(1.0)
    assert throttle.wait("token", 51.0) == 0.0
    assert len(throttle) == 0
    assert throttle.failed("token", 60.0) == 0  # free again


def test_memory_is_bounded_by_forgetting_the_least_recent_keys() -> None:
    throttle = FailureThrottle(free=0, base=10.0, max_keys=100)
    for n in range(1000):
        throttle.failed(f"ipv4:10.0.{n // 256}.{n % 256}", float(n))
    assert len(throttle) == 100
    assert throttle.wait("ipv4:10.0.0.0", 999.0) == 0.0  # forgotten
    assert throttle.wait("ipv4:10.0.3.231", 999.0) == 10.0  # the last one remembered
