"""One shared object per distinct series key, whichever agent or stream sent it.

Every office PC sends much the same series (``cpu_usage_ratio``, ``memory_used_ratio``,
``filesystem_used_ratio{mountpoint="C:\\"...}``), and each series key (name, sorted
label pairs) is held per agent in several places: the stream's series table, the live
state's series map and current set, the alert states. Decoded from protobuf each copy
would be new strings and tuples, a few hundred bytes per series per agent; shared,
the fleet holds each distinct key once and an agent holds only references.

Sharing is an economy, never a meaning: keys compare by value everywhere. The maps are
bounded: when one is full it starts over, so an agent inventing label values costs at
most ``SHARED_MAX`` entries; keys handed out before stay valid wherever they are used.
"""

from __future__ import annotations

import sys

from tripline.common.labels import Labels

# Entries per map before it starts over (about 30 MB at most for the series map).
SHARED_MAX = 65_536

_series: dict[tuple[str, Labels], tuple[str, Labels]] = {}
_labels: dict[Labels, Labels] = {}


def series_key(name: str, labels: Labels) -> tuple[str, Labels]:
    """The shared ``(name, labels)`` equal to the given one."""
    key = (name, labels)
    found = _series.get(key)
    if found is not None:
        return found
    shared = _labels.get(labels) if labels else labels
    if shared is None:
        if len(_labels) >= SHARED_MAX:
            _labels.clear()
        _labels[labels] = shared = labels
    # interned strings die with their last user: no bound needed for names
    key = (sys.intern(name), shared)
    if len(_series) >= SHARED_MAX:
        _series.clear()
    _series[key] = key
    return key
