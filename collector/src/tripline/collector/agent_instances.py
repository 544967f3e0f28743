"""Agent instances and their applied report seq: what makes delivery exactly-once.

An instance is one spool of an agent (a state directory); each report carries the next
seq of its instance, and `record_applied` moves the instance's seq forward in the same
transaction that applied the report's effects, refusing a seq already applied and a
revoked agent. Functions run on a connection inside the caller's transaction
(`Store.transaction()` / `Store.read()`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, select

from tripline.collector.agents_store import AgentNotFound, AgentRevoked, get_agent
from tripline.collector.schema import agent_instances, agents
from tripline.collector.storeerrors import StoreError


class SeqAlreadyApplied(StoreError):
    def __init__(self, agent_id: str, instance_id: str, seq: int, applied_seq: int) -> None:
        super().__init__(
            f"agent {agent_id} instance {instance_id}: report seq {seq} is not after the "
            f"applied seq {applied_seq}; it must not be applied twice"
        )
        self.agent_id = agent_id
        self.instance_id = instance_id
        self.seq = seq
        self.applied_seq = applied_seq


@dataclass(frozen=True)
class InstancePosition:
    """Where an agent instance's reports stand: its applied seq and its last report's time
    on the agent's clock (`collected_at`); and the agent's latest report over all its
    instances, at the time the collector took it as (`report_at`) and when that report was
    received (`received_at`), both on the collector's clock. Zero and None: nothing yet."""

    applied_seq: int = 0
    collected_at: float | None = None
    report_at: float | None = None
    received_at: float | None = None


# Spool instances remembered per agent (docs/limits.md); older rows are deleted.
MAX_INSTANCES_PER_AGENT = 16

# Built once: composing Core statements per report costs more than executing them.
_ADVANCE_SEQ = (
    agent_instances.update()
    .where(
        agent_instances.c.agent_id == bindparam("a"),
        agent_instances.c.instance_id == bindparam("i"),
        agent_instances.c.applied_seq < bindparam("seq"),
    )
    .values(
        applied_seq=bindparam("seq"),
        reports_applied=agent_instances.c.reports_applied + 1,
        dropped_reports_total=bindparam("dropped"),
        last_seen_at=bindparam("now"),
        last_collected_at=bindparam("collected"),
        last_report_at=bindparam("report_at"),
    )
)
_APPLIED_SEQ = select(agent_instances.c.applied_seq).where(
    agent_instances.c.agent_id == bindparam("a"),
    agent_instances.c.instance_id == bindparam("i"),
)
_NEW_INSTANCE = agent_instances.insert().values(
    agent_id=bindparam("a"),
    instance_id=bindparam("i"),
    applied_seq=bindparam("seq"),
    reports_applied=1,
    dropped_reports_total=bindparam("dropped"),
    first_seen_at=bindparam("now"),
    last_seen_at=bindparam("now"),
    last_collected_at=bindparam("collected"),
    last_report_at=bindparam("report_at"),
)
_AGENT_SEEN = (
    agents.update()
    .where(agents.c.agent_id == bindparam("a"), agents.c.revoked_at.is_(None))
    .values(last_seen_at=bindparam("now"))
)


def applied_seq(conn: Connection, agent_id: str, instance_id: str) -> int:
    """The highest report seq applied for this agent instance, 0 when unknown."""
    seq = conn.scalar(
        select(agent_instances.c.applied_seq).where(
            agent_instances.c.agent_id == agent_id,
            agent_instances.c.instance_id == instance_id,
        )
    )
    return 0 if seq is None else int(seq)


def instance_position(conn: Connection, agent_id: str, instance_id: str) -> InstancePosition:
    """The instance's applied seq and last collection time (its own clock), and the
    agent's latest report time and when it was received (collector clock) over all its
    instances: a new instance may not go back before the agent's last report either."""
    query = select(
        agent_instances.c.instance_id,
        agent_instances.c.applied_seq,
        agent_instances.c.last_collected_at,
        agent_instances.c.last_report_at,
        agent_instances.c.last_seen_at,
    ).where(agent_instances.c.agent_id == agent_id)
    rows = conn.execute(query).all()
    position = InstancePosition()
    timed = [row for row in rows if row.last_report_at is not None]
    if timed:
        latest = max(timed, key=lambda row: row.last_report_at)
        position = InstancePosition(
            report_at=latest.last_report_at, received_at=latest.last_seen_at
        )
    for row in rows:
        if row.instance_id == instance_id:
            return dataclasses.replace(
                position, applied_seq=int(row.applied_seq), collected_at=row.last_collected_at
            )
    return position


def record_applied(
    conn: Connection,
    agent_id: str,
    instance_id: str,
    seq: int,
    *,
    dropped_total: int,
    now: float,
    collected_at: float | None = None,
    report_at: float | None = None,
) -> None:
    """Mark report `seq` applied, in the transaction that applied its effects.

    Raises SeqAlreadyApplied when `seq` is not past the stored one (gaps are fine: the
    agent's spool may have dropped reports, counted in `dropped_total`), and
    AgentRevoked when the agent was revoked: checked in this transaction, so no report
    of a revoked agent commits, whichever process revoked it and when.
    """
    params = {
        "a": agent_id,
        "i": instance_id,
        "seq": seq,
        "dropped": dropped_total,
        "now": now,
        "collected": collected_at,
        "report_at": report_at,
    }
    # The common case, one statement: advance the seq if it moves forward. Rowcount 0
    # means a stale seq or an instance never seen; the SELECT tells which.
    if conn.execute(_ADVANCE_SEQ, params).rowcount == 0:
        row = conn.execute(_APPLIED_SEQ, params).one_or_none()
        if row is not None:
            raise SeqAlreadyApplied(agent_id, instance_id, seq, row.applied_seq)
        if get_agent(conn, agent_id) is None:
            raise AgentNotFound(agent_id)
        conn.execute(_NEW_INSTANCE, params)
        _forget_old_instances(conn, agent_id)
    if conn.execute(_AGENT_SEEN, params).rowcount == 0:
        raise AgentRevoked(agent_id)


def _forget_old_instances(conn: Connection, agent_id: str) -> None:
    """Keep the newest MAX_INSTANCES_PER_AGENT instance rows of an agent.

    An agent whose state directory is wiped (or one that invents instance ids) adds
    a row per instance; only recent instances can still have reports to replay. An
    instance forgotten here that comes back is treated as new (its reports apply
    again), which only a PC restored from a months-old backup would do.
    """
    stale = (
        select(agent_instances.c.instance_id)
        .where(agent_instances.c.agent_id == agent_id)
        .order_by(agent_instances.c.last_seen_at.desc(), agent_instances.c.instance_id)
        .offset(MAX_INSTANCES_PER_AGENT)
    )
    old = [row.instance_id for row in conn.execute(stale)]
    if old:
        conn.execute(
            agent_instances.delete().where(
                agent_instances.c.agent_id == agent_id,
                agent_instances.c.instance_id.in_(old),
            )
        )


def reported_agent_ids(conn: Connection, among: Collection[str] | None = None) -> set[str]:
    """Agents (of `among`, or all) that had at least one report applied."""
    query = select(agent_instances.c.agent_id).distinct()
    if among is not None:
        query = query.where(agent_instances.c.agent_id.in_(list(among)))
    return set(conn.scalars(query))
