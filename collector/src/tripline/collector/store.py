"""The collector's storage: enrollment, agents, delivery bookkeeping and alert state.

One SQLite file (WAL) by default, PostgreSQL by URL. Tickets live in `collector.tickets`,
whose functions run on a connection from `Store.transaction()`.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import secrets
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, Engine, bindparam, exc, func, select

from tripline.collector import entropy, migrations
from tripline.collector.database import (
    READ_ONLY,
    DatabaseFileChanged,
    SqliteFile,
    find_outage,
    is_busy,
    is_corruption,
    make_engine,
    rows_written,
    sqlite_file,
)
from tripline.collector.schema import (
    agent_instances,
    agents,
    alert_states,
    enrollment_tokens,
    secret_hash,
    store_probe,
)

if TYPE_CHECKING:  # imported where used: `tripline tickets list` has no use for the engine
    from tripline.alerts.engine import AlertKey, AlertState

log = logging.getLogger(__name__)


class StoreError(Exception):
    """Base of the store's named errors."""


class StoreUnavailable(StoreError):
    """The database is locked, read-only, full or unreachable: answer UNAVAILABLE, retry later."""


class StoreContended(StoreUnavailable):
    """The write lock stayed busy past the busy timeout while other writers kept
    committing (another worker of ``--workers N`` at saturation): back-pressure, not an
    outage. The store stays healthy; retry (the committer does)."""


class StoreFileGone(StoreUnavailable):
    """The SQLite file was deleted or replaced under the running collector. Nothing more is
    committed (it would go into a file nobody will ever read) until the original file is
    back at its path; reports are answered UNAVAILABLE and stay in the agents' spools."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"{detail} while the collector had it open: {path}. Nothing more is written or "
            f"acknowledged; stop the collector, put the database back at that path (from "
            f"your backup, or move the original file back), then start the collector again"
        )
        self.path = path


class StoreCorrupt(StoreUnavailable):
    """The SQLite file is damaged or is not a SQLite database at all."""

    def __init__(self, path: Path | None, detail: str) -> None:
        where = str(path) if path is not None else "the database"
        super().__init__(
            f"database {where} is corrupt or not a Tripline database ({detail}): restore it "
            f"from a backup, or salvage it with `sqlite3 {where} .recover | sqlite3 "
            f"{where}.recovered` and start the collector on the recovered file"
        )
        self.path = path


class StoreHealth:
    """Whether the store takes writes, as last shown by a transaction that wrote.

    A transaction that changed no rows proves nothing (SQLite commits it without touching
    the file, even on a full disk), so only failed transactions and transactions that
    wrote rows move the state. Each transition is logged once, with the reason; a caller
    may watch them through `on_change(healthy, reason)`, called in the thread that saw it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.healthy = True
        self.reason = "ready"
        self.on_change: Callable[[bool, str], None] = lambda healthy, reason: None

    def wrote(self) -> None:
        with self._lock:
            if self.healthy:
                return
            self.healthy, was, self.reason = True, self.reason, "ready"
        log.info("store writable again", extra={"was": was})
        self.on_change(True, "ready")

    def failed(self, error: StoreUnavailable) -> None:
        reason = f"store unavailable: {error}"
        with self._lock:
            if not self.healthy and self.reason == reason:
                return
            changed = self.healthy
            self.healthy, self.reason = False, reason
        if isinstance(error, StoreFileGone | StoreCorrupt):
            log.error("store refuses writes", extra={"reason": reason})
        elif changed:
            log.warning("store refuses writes", extra={"reason": reason})
        else:
            return  # another outage of the same kind with a new message: not a transition
        self.on_change(False, reason)


class EnrollmentRefused(StoreError):
    """`token_id` and `customer` are set when the token is known but may not enroll now
    (revoked, expired, at its agent limit)."""

    def __init__(
        self, reason: str, token_id: int | None = None, customer: str | None = None
    ) -> None:
        super().__init__(f"enrollment refused: {reason}")
        self.reason = reason
        self.token_id = token_id
        self.customer = customer


class EnrollmentTokenConflict(StoreError):
    def __init__(self, customer: str, other_customer: str) -> None:
        super().__init__(
            f"this enrollment token already belongs to customer {other_customer!r}, "
            f"not {customer!r}: give each customer its own token"
        )
        self.customer = customer
        self.other_customer = other_customer


class EnrollmentTokenNotFound(StoreError):
    def __init__(self, token_id: int) -> None:
        super().__init__(f"no enrollment token with id {token_id}")
        self.token_id = token_id


class AgentNotFound(StoreError):
    def __init__(self, agent_id: str) -> None:
        super().__init__(f"no agent {agent_id!r}")
        self.agent_id = agent_id


class AgentRevoked(StoreError):
    """The agent's credential was revoked: nothing more of it is applied."""

    def __init__(self, agent_id: str) -> None:
        super().__init__(f"agent {agent_id!r} is revoked")
        self.agent_id = agent_id


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
class AgentRecord:
    agent_id: str
    customer: str
    hostname: str
    site: str
    created_at: float
    last_seen_at: float | None
    revoked_at: float | None
    inventory: dict[str, Any]
    tags: dict[str, Any]


@dataclass(frozen=True)
class EnrollmentToken:
    id: int
    customer: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    # agents (not revoked) it may enroll; None: no limit
    max_agents: int | None = None


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


def _agent(row: Any) -> AgentRecord:
    values = {f.name: getattr(row, f.name) for f in fields(AgentRecord)}
    return AgentRecord(**{**values, "inventory": dict(row.inventory), "tags": dict(row.tags)})


def _token(row: Any) -> EnrollmentToken:
    return EnrollmentToken(**{f.name: getattr(row, f.name) for f in fields(EnrollmentToken)})


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
_ALERT_KEY = (
    alert_states.c.agent_id == bindparam("k_agent"),
    alert_states.c.rule == bindparam("k_rule"),
    alert_states.c.labels_json == bindparam("k_labels"),
)
_ALERT_FIELDS = ("phase", "active_since", "firing_since", "clear_since", "value", "last_eval")
_DELETE_ALERT = alert_states.delete().where(*_ALERT_KEY)
_UPDATE_ALERT = (
    alert_states.update().where(*_ALERT_KEY).values({f: bindparam(f"v_{f}") for f in _ALERT_FIELDS})
)
_INSERT_ALERT = alert_states.insert().values(
    agent_id=bindparam("k_agent"),
    rule=bindparam("k_rule"),
    labels_json=bindparam("k_labels"),
    **{f: bindparam(f"v_{f}") for f in _ALERT_FIELDS},
)


class Store:
    """Storage behind a small interface; each method runs in its own transaction unless
    given `conn=` (a connection from `transaction()`), so a caller can group several."""

    def __init__(self, url: str, *, busy_timeout: float = 5.0) -> None:
        path = sqlite_file(url)
        self.file = SqliteFile(path) if path is not None else None
        self._engine = make_engine(url, busy_timeout=busy_timeout, file=self.file)
        self.health = StoreHealth()

    @property
    def engine(self) -> Engine:
        return self._engine

    def migrate(self, progress: migrations.Progress | None = None) -> None:
        with self._unavailable_on_outage():
            migrations.migrate(self._engine, progress)

    @contextmanager
    def _unavailable_on_outage(self) -> Iterator[None]:
        try:
            yield
        except DatabaseFileChanged as error:
            raise StoreFileGone(error.path, error.detail.capitalize()) from error
        except exc.TimeoutError as error:
            raise StoreUnavailable(f"database unavailable: {error}") from error
        except exc.SQLAlchemyError as error:
            corrupt = is_corruption(error)
            if corrupt is not None:
                path = self.file.path if self.file is not None else None
                raise StoreCorrupt(path, str(corrupt)) from error
            outage = find_outage(error)
            if outage is None:
                raise
            raise StoreUnavailable(f"database unavailable: {outage.orig}") from error

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction, committed when the block ends without an exception.

        Raises StoreUnavailable (StoreFileGone, StoreCorrupt...) when it cannot commit; each
        such failure marks `health` unhealthy, and only a commit that changed rows marks it
        healthy again. Except StoreContended: the lock stayed busy while others committed.
        """
        mark = self.file.write_mark() if self.file is not None else None
        try:
            with self._unavailable_on_outage(), self._engine.connect() as conn:
                before = rows_written(conn)
                with conn.begin():
                    yield conn
                    if self.file is not None:
                        # Before COMMIT: committing into a deleted file acknowledges into the void.
                        self.file.check()
                wrote = rows_written(conn) != before
        except StoreUnavailable as error:
            others_wrote = self.file is not None and self.file.write_mark() != mark
            if mark is not None and others_wrote and is_busy(error):
                raise StoreContended(f"write lock contended: {error}") from error
            self.health.failed(error)
            raise
        if wrote:
            self.health.wrote()

    def probe(self, now: float) -> None:
        """Write one row, so that a store that refused writes can show it takes them again
        while no other work arrives; raises StoreUnavailable when it still cannot."""
        with self.transaction() as conn:
            updated = conn.execute(
                store_probe.update()
                .where(store_probe.c.id == 1)
                .values(written_at=now, writes=store_probe.c.writes + 1)
            )
            if updated.rowcount == 0:  # migration 2 inserts the row; someone deleted it
                conn.execute(store_probe.insert().values(id=1, written_at=now, writes=1))

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only snapshot; writes through it are a bug (SQLite may refuse them)."""
        with (
            self._unavailable_on_outage(),
            self._engine.connect().execution_options(**{READ_ONLY: True}) as conn,
            conn.begin(),
        ):
            yield conn

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _write(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.transaction() as own:
                yield own

    @contextmanager
    def _read(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.read() as own:
                yield own

    # -- enrollment and agents -------------------------------------------------------------

    def create_enrollment_token(
        self,
        customer: str,
        now: float,
        expires_at: float | None = None,
        *,
        max_agents: int | None = None,
        conn: Connection | None = None,
    ) -> tuple[EnrollmentToken, str]:
        """A new token for `customer`; the secret is returned once and stored only hashed.

        `max_agents` caps the agents (not revoked) it may enroll; `expires_at` ends it."""
        token = entropy.generate()
        record = self.ensure_enrollment_token(
            customer, token, now, expires_at, max_agents=max_agents, conn=conn
        )
        return record, token

    def ensure_enrollment_token(
        self,
        customer: str,
        token: str,
        now: float,
        expires_at: float | None = None,
        *,
        max_agents: int | None = None,
        conn: Connection | None = None,
    ) -> EnrollmentToken:
        """Register a token chosen by the operator; idempotent for the same customer (a
        revoked token stays revoked, limits stay those it was first registered with)."""
        if not customer or not token or token != token.strip():
            raise ValueError("customer and token must be non-empty, without surrounding spaces")
        if max_agents is not None and max_agents < 1:
            raise ValueError(f"max_agents must be at least 1, got {max_agents}")
        digest = secret_hash(token)
        query = select(enrollment_tokens).where(enrollment_tokens.c.token_hash == digest)
        with self._write(conn) as c:
            row = c.execute(query).one_or_none()
            if row is None:
                insert = enrollment_tokens.insert().values(
                    customer=customer,
                    token_hash=digest,
                    created_at=now,
                    expires_at=expires_at,
                    max_agents=max_agents,
                )
                try:
                    # Collectors sharing PostgreSQL start with the same flags: one inserts.
                    with c.begin_nested():
                        c.execute(insert)
                except exc.IntegrityError:
                    pass
                row = c.execute(query).one()
            if row.customer != customer:
                raise EnrollmentTokenConflict(customer, row.customer)
            return _token(row)

    def list_enrollment_tokens(
        self, customer: str | None = None, *, conn: Connection | None = None
    ) -> list[EnrollmentToken]:
        query = select(enrollment_tokens).order_by(enrollment_tokens.c.id)
        if customer is not None:
            query = query.where(enrollment_tokens.c.customer == customer)
        with self._read(conn) as c:
            return [_token(row) for row in c.execute(query)]

    def agents_per_token(self, *, conn: Connection | None = None) -> dict[int, int]:
        """token id -> agents it enrolled that are not revoked (what `max_agents` counts)."""
        query = (
            select(agents.c.enrollment_token_id, func.count())
            .where(agents.c.enrollment_token_id.is_not(None), agents.c.revoked_at.is_(None))
            .group_by(agents.c.enrollment_token_id)
        )
        with self._read(conn) as c:
            return {int(token_id): int(count) for token_id, count in c.execute(query)}

    def revoke_enrollment_token(
        self, token_id: int, now: float, *, conn: Connection | None = None
    ) -> None:
        """Idempotent: revoking again keeps the first revocation time."""
        with self._write(conn) as c:
            row = c.execute(
                select(enrollment_tokens.c.revoked_at).where(enrollment_tokens.c.id == token_id)
            ).one_or_none()
            if row is None:
                raise EnrollmentTokenNotFound(token_id)
            if row.revoked_at is None:
                c.execute(
                    enrollment_tokens.update()
                    .where(enrollment_tokens.c.id == token_id)
                    .values(revoked_at=now)
                )

    def enroll_agent(
        self,
        token: str,
        *,
        hostname: str,
        site: str,
        inventory: dict[str, Any],
        now: float,
        tags: dict[str, Any] | None = None,
        conn: Connection | None = None,
    ) -> tuple[AgentRecord, str]:
        """Register a new agent for the token's customer; returns it and its credential
        "<agent_id>.<secret>" (shown once, stored hashed)."""
        with self._write(conn) as c:
            # FOR UPDATE serializes enrollments of one token on PostgreSQL, so two at once
            # cannot both take its last free place (SQLite takes the write lock at BEGIN).
            row = c.execute(
                select(enrollment_tokens)
                .where(enrollment_tokens.c.token_hash == secret_hash(token))
                .with_for_update()
            ).one_or_none()
            if row is None:
                raise EnrollmentRefused("unknown enrollment token")
            if row.revoked_at is not None:
                raise EnrollmentRefused(
                    f"enrollment token {row.id} was revoked", row.id, row.customer
                )
            if row.expires_at is not None and row.expires_at <= now:
                raise EnrollmentRefused(
                    f"enrollment token {row.id} has expired", row.id, row.customer
                )
            if row.max_agents is not None:
                enrolled = c.scalar(
                    select(func.count()).where(
                        agents.c.enrollment_token_id == row.id, agents.c.revoked_at.is_(None)
                    )
                )
                if int(enrolled or 0) >= row.max_agents:
                    raise EnrollmentRefused(
                        f"enrollment token {row.id} has enrolled its maximum of "
                        f"{row.max_agents} agents: revoke agents no longer used or create "
                        "another token",
                        row.id,
                        row.customer,
                    )
            agent_id = "agt_" + secrets.token_hex(8)
            secret = secrets.token_urlsafe(32)
            record = AgentRecord(
                agent_id=agent_id,
                customer=row.customer,
                hostname=hostname,
                site=site,
                created_at=now,
                last_seen_at=None,
                revoked_at=None,
                inventory=dict(inventory),
                tags=dict(tags or {}),
            )
            c.execute(
                agents.insert().values(
                    agent_id=agent_id,
                    customer=row.customer,
                    hostname=hostname,
                    site=site,
                    credential_hash=secret_hash(secret),
                    enrollment_token_id=row.id,
                    inventory=record.inventory,
                    tags=record.tags,
                    created_at=now,
                )
            )
        return record, f"{agent_id}.{secret}"

    def authenticate(
        self, credential: str, *, conn: Connection | None = None
    ) -> AgentRecord | None:
        """The agent a credential belongs to; None if unknown, revoked or malformed."""
        agent_id, dot, secret = credential.partition(".")
        if not dot or not agent_id or not secret:
            return None
        with self._read(conn) as c:
            row = c.execute(select(agents).where(agents.c.agent_id == agent_id)).one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(secret_hash(secret), row.credential_hash):
            return None
        return _agent(row)

    def get_agent(self, agent_id: str, *, conn: Connection | None = None) -> AgentRecord | None:
        with self._read(conn) as c:
            row = c.execute(select(agents).where(agents.c.agent_id == agent_id)).one_or_none()
        return None if row is None else _agent(row)

    def list_agents(
        self, customer: str | None = None, *, conn: Connection | None = None
    ) -> list[AgentRecord]:
        query = select(agents).order_by(agents.c.customer, agents.c.hostname, agents.c.agent_id)
        if customer is not None:
            query = query.where(agents.c.customer == customer)
        with self._read(conn) as c:
            return [_agent(row) for row in c.execute(query)]

    def revoked_agent_ids(self, *, conn: Connection | None = None) -> set[str]:
        with self._read(conn) as c:
            return set(c.scalars(select(agents.c.agent_id).where(agents.c.revoked_at.is_not(None))))

    def revoke_agent(self, agent_id: str, now: float, *, conn: Connection | None = None) -> None:
        """Idempotent: revoking again keeps the first revocation time."""
        with self._write(conn) as c:
            row = c.execute(
                select(agents.c.revoked_at).where(agents.c.agent_id == agent_id)
            ).one_or_none()
            if row is None:
                raise AgentNotFound(agent_id)
            if row.revoked_at is None:
                c.execute(
                    agents.update().where(agents.c.agent_id == agent_id).values(revoked_at=now)
                )

    def update_inventory(
        self,
        agent_id: str,
        hostname: str,
        inventory: dict[str, Any],
        now: float,
        *,
        conn: Connection | None = None,
    ) -> None:
        """Record what the agent said in its Hello; also marks it seen at `now`."""
        with self._write(conn) as c:
            updated = c.execute(
                agents.update()
                .where(agents.c.agent_id == agent_id)
                .values(hostname=hostname, inventory=dict(inventory), last_seen_at=now)
            ).rowcount
            if updated == 0:
                raise AgentNotFound(agent_id)

    # -- delivery bookkeeping --------------------------------------------------------------

    def applied_seq(
        self, agent_id: str, instance_id: str, *, conn: Connection | None = None
    ) -> int:
        """The highest report seq applied for this agent instance, 0 when unknown."""
        with self._read(conn) as c:
            seq = c.scalar(
                select(agent_instances.c.applied_seq).where(
                    agent_instances.c.agent_id == agent_id,
                    agent_instances.c.instance_id == instance_id,
                )
            )
        return 0 if seq is None else int(seq)

    def instance_position(
        self, agent_id: str, instance_id: str, *, conn: Connection | None = None
    ) -> InstancePosition:
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
        with self._read(conn) as c:
            rows = c.execute(query).all()
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
        self,
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
            if self.get_agent(agent_id, conn=conn) is None:
                raise AgentNotFound(agent_id)
            conn.execute(_NEW_INSTANCE, params)
            self._forget_old_instances(conn, agent_id)
        if conn.execute(_AGENT_SEEN, params).rowcount == 0:
            raise AgentRevoked(agent_id)

    def _forget_old_instances(self, conn: Connection, agent_id: str) -> None:
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

    def reported_agent_ids(
        self, among: Collection[str] | None = None, *, conn: Connection | None = None
    ) -> set[str]:
        """Agents (of `among`, or all) that had at least one report applied."""
        query = select(agent_instances.c.agent_id).distinct()
        if among is not None:
            query = query.where(agent_instances.c.agent_id.in_(list(among)))
        with self._read(conn) as c:
            return set(c.scalars(query))

    def last_seen_all(self, *, conn: Connection | None = None) -> dict[str, float]:
        """agent_id -> last_seen_at of every agent seen at least once and not revoked."""
        query = select(agents.c.agent_id, agents.c.last_seen_at).where(
            agents.c.last_seen_at.is_not(None), agents.c.revoked_at.is_(None)
        )
        with self._read(conn) as c:
            return {row.agent_id: row.last_seen_at for row in c.execute(query)}

    # -- alert state -----------------------------------------------------------------------

    def load_alert_states(
        self, *, agent_id: str | None = None, conn: Connection | None = None
    ) -> dict[AlertKey, AlertState]:
        """Every stored alert state, or one agent's."""
        from tripline.alerts.engine import AlertKey, AlertState

        query = select(alert_states)
        if agent_id is not None:
            query = query.where(alert_states.c.agent_id == agent_id)
        with self._read(conn) as c:
            rows = c.execute(query).all()
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
            for row in rows
        }

    def save_alert_states(
        self, conn: Connection, changes: Mapping[AlertKey, AlertState | None]
    ) -> None:
        """Upsert each changed state; None deletes the key's row."""
        for key, state in changes.items():
            params: dict[str, Any] = {
                "k_agent": key.agent_id,
                "k_rule": key.rule,
                "k_labels": json.dumps([list(pair) for pair in key.labels]),
            }
            if state is None:
                conn.execute(_DELETE_ALERT, params)
                continue
            params.update({f"v_{f}": getattr(state, f) for f in _ALERT_FIELDS})
            if conn.execute(_UPDATE_ALERT, params).rowcount == 0:
                conn.execute(_INSERT_ALERT, params)
