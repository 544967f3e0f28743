"""The one shape of a series' labels, shared by the agent, the alerts engine and the
collector."""

from __future__ import annotations

Labels = tuple[tuple[str, str], ...]
"""Series labels as (name, value) pairs sorted by name: hashable, so usable in keys."""
