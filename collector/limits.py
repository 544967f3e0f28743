"""Per-agent limits: how fast an agent may send reports, how many series it may have.

Pure bookkeeping with time passed in; the servicer decides what the agent is told.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from collector.convert import Labels

SeriesKey = tuple[str, Labels]
Sample = tuple[str, Labels, float]


class RateLimited(Exception):
    """An agent sent a report with its bucket empty; ``retry_after`` is whole seconds."""

    def __init__(self, agent_id: str, retry_after: int) -> None:
        self.agent_id = agent_id
        self.retry_after = retry_after
        super().__init__(f"agent {agent_id} is over its report rate; retry after {retry_after}s")


@dataclass
class _Bucket:
    tokens: float
    updated: float


class ReportRateLimiter:
    """A token bucket per agent: ``burst`` reports at once, then ``rate`` per second.

    The bucket outlives the stream, so reconnecting does not refill it. A refused agent
    is told to come back when its bucket is half full again: it then replays ``burst / 2``
    reports on one stream rather than reconnecting for every token.
    """

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, agent_id: str, now: float) -> None:
        """Spend one token of ``agent_id``'s bucket; raise RateLimited when it is empty."""
        bucket = self._buckets.get(agent_id)
        if bucket is None:
            bucket = self._buckets[agent_id] = _Bucket(tokens=float(self.burst), updated=now)
        # A clock step backwards must not drain the bucket.
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        refill = (max(1.0, self.burst / 2) - bucket.tokens) / self.rate
        raise RateLimited(agent_id, max(1, math.ceil(refill)))

    def tokens(self, agent_id: str, now: float) -> float:
        """Reports ``agent_id`` could send at ``now`` without being refused."""
        bucket = self._buckets.get(agent_id)
        if bucket is None:
            return float(self.burst)
        return min(float(self.burst), bucket.tokens + max(0.0, now - bucket.updated) * self.rate)

    def forget(self, agent_id: str) -> None:
        self._buckets.pop(agent_id, None)


@dataclass(frozen=True)
class Capped:
    """A report's samples after the series cap; ``dropped`` counts the refused ones."""

    samples: tuple[Sample, ...]
    dropped: int


def cap_series(known: Collection[SeriesKey], samples: Sequence[Sample], limit: int) -> Capped:
    """Keep every sample of a series in ``known`` and of new series while the agent has
    fewer than ``limit`` series, taking new ones in the order the agent sent them.

    ``known`` is the agent's live series: a series gone from its reports leaves it once
    its last point is older than the live window, which frees its place under the cap.
    """
    room = limit - len(known)
    kept: list[Sample] = []
    dropped = 0
    for sample in samples:
        if (sample[0], sample[1]) in known:
            kept.append(sample)
        elif room > 0:
            kept.append(sample)
            room -= 1
        else:
            dropped += 1
    if not dropped:
        return Capped(tuple(samples), 0)
    return Capped(tuple(kept), dropped)
