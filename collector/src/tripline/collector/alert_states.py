"""The rules engine's alert states, kept across restarts: one row per (agent, rule,
labels) that is pending, firing or clearing.

Functions run on a connection inside the caller's transaction (`Store.transaction()` /
`Store.read()`); `save` is called in the transaction that applied the report whose
evaluation changed the states.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, bindparam, select

from tripline.collector import schema

if TYPE_CHECKING:  # imported where used: `tripline tickets list` has no use for the engine
    from tripline.alerts.engine import AlertKey, AlertState

_table = schema.alert_states
# Built once: composing Core statements per report costs more than executing them.
_KEY = (
    _table.c.agent_id == bindparam("k_agent"),
    _table.c.rule == bindparam("k_rule"),
    _table.c.labels_json == bindparam("k_labels"),
)
_FIELDS = ("phase", "active_since", "firing_since", "clear_since", "value", "last_eval")
_DELETE = _table.delete().where(*_KEY)
_UPDATE = _table.update().where(*_KEY).values({f: bindparam(f"v_{f}") for f in _FIELDS})
_INSERT = _table.insert().values(
    agent_id=bindparam("k_agent"),
    rule=bindparam("k_rule"),
    labels_json=bindparam("k_labels"),
    **{f: bindparam(f"v_{f}") for f in _FIELDS},
)


def load(conn: Connection, *, agent_id: str | None = None) -> dict[AlertKey, AlertState]:
    """Every stored alert state, or one agent's."""
    from tripline.alerts.engine import AlertKey, AlertState

    query = select(_table)
    if agent_id is not None:
        query = query.where(_table.c.agent_id == agent_id)
    return {
        AlertKey(
            agent_id=row.agent_id,
            rule=row.rule,
            labels=tuple((str(k), str(v)) for k, v in json.loads(row.labels_json)),
        ): AlertState(
            phase=cast(Any, row.phase),
            active_since=row.active_since,
            firing_since=row.firing_since,
            clear_since=row.clear_since,
            value=row.value,
            last_eval=row.last_eval,
        )
        for row in conn.execute(query).all()
    }


def save(conn: Connection, changes: Mapping[AlertKey, AlertState | None]) -> None:
    """Upsert each changed state; None deletes the key's row."""
    for key, state in changes.items():
        params: dict[str, Any] = {
            "k_agent": key.agent_id,
            "k_rule": key.rule,
            "k_labels": json.dumps([list(pair) for pair in key.labels]),
        }
        if state is None:
            conn.execute(_DELETE, params)
            continue
        params.update({f"v_{f}": getattr(state, f) for f in _FIELDS})
        if conn.execute(_UPDATE, params).rowcount == 0:
            conn.execute(_INSERT, params)
