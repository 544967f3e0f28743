"""A mergeable latency histogram with log-spaced buckets (about 2.5% relative error)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LOWEST = 1e-5  # seconds; anything faster lands in the first bucket
GROWTH = 1.05


@dataclass
class Histogram:
    counts: dict[int, int] = field(default_factory=dict)
    n: int = 0
    total: float = 0.0
    maximum: float = 0.0

    def add(self, seconds: float) -> None:
        index = 0 if seconds <= LOWEST else int(math.log(seconds / LOWEST, GROWTH)) + 1
        self.counts[index] = self.counts.get(index, 0) + 1
        self.n += 1
        self.total += seconds
        self.maximum = max(self.maximum, seconds)

    def merge(self, other: Histogram) -> None:
        for index, count in other.counts.items():
            self.counts[index] = self.counts.get(index, 0) + count
        self.n += other.n
        self.total += other.total
        self.maximum = max(self.maximum, other.maximum)

    def quantile(self, q: float) -> float:
        """The q-quantile (0..1) as the geometric middle of its bucket; NaN when empty."""
        if self.n == 0:
            return math.nan
        rank = q * (self.n - 1)
        seen = 0
        for index in sorted(self.counts):
            seen += self.counts[index]
            if seen > rank:
                if index == 0:
                    return LOWEST
                low = LOWEST * GROWTH ** (index - 1)
                return min(self.maximum, low * math.sqrt(GROWTH))
        return self.maximum
