"""What a collection hands out: frozen dataclasses of str/int/float, nothing of psutil.

The probes (`probes.py`, `processes.py`, `inventory.py`) fill these; conversion to the
wire, rendering and the spool read them without importing psutil.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tripline.common.labels import Labels


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Labels
    value: float


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    name: str
    username: str
    cpu_ratio: float  # share of one core, 0..cpu_count
    memory_rss_bytes: int
    cmdline: str


@dataclass(frozen=True)
class Context:
    top_cpu: tuple[ProcessSample, ...]
    top_memory: tuple[ProcessSample, ...]
    logged_in_users: tuple[str, ...]


@dataclass(frozen=True)
class Collection:
    collected_at: float
    samples: tuple[Sample, ...]
    context: Context
    probe_errors: Mapping[str, int]  # cumulative failures per probe since the Prober started


def labels(**pairs: str) -> Labels:
    return tuple(sorted(pairs.items()))
