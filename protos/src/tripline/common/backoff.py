"""Capped exponential backoff with jitter, shared by every retry loop.

The agent's reconnects and the collector's ticket deliveries back off the same way; the
random source is passed in so tests step it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Backoff:
    """Capped exponential backoff with jitter (half fixed, half random)."""

    initial: float
    maximum: float
    rng: Callable[[], float] = random.random
    attempt: int = 0

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return float(ceiling / 2 + self.rng() * ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0
