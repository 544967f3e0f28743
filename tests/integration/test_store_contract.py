"""The storage contract, run on SQLite always and on PostgreSQL when the run has one."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, inspect, select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from tests.integration.conftest import collector_config
from tripline.alerts.engine import AlertKey, AlertState
from tripline.collector import (
    agent_instances,
    agents_store,
    alert_states,
    enrollment,
    migrations,
    schema,
    ticketmodel,
    tickets,
)
from tripline.collector.agent_instances import SeqAlreadyApplied
from tripline.collector.agents_store import AgentNotFound, AgentRecord
from tripline.collector.enrollment import (
    EnrollmentRefused,
    EnrollmentTokenConflict,
    EnrollmentTokenNotFound,
)
from tripline.collector.lockfile import DataDirLock, DataDirLocked
from tripline.collector.store import Store, StoreCorrupt, StoreFileGone, StoreUnavailable

T0 = 1_700_000_000.0

# -- migrations ----------------------------------------------------------------------------


def test_migrated_database_matches_the_schema_module(store: Store) -> None:
    with store.read() as conn:
        found = inspect(conn)
        assert set(found.get_table_names()) == set(schema.metadata.tables)
        for table in schema.metadata.tables.values():
            assert {c["name"] for c in found.get_columns(table.name)} == set(table.columns.keys())
        indexes = {ix["name"] for ix in found.get_indexes("tickets")}
        assert "uq_tickets_active_problem" in indexes
        assert migrations.current_version(conn) == len(migrations.MIGRATIONS)


def test_partial_unique_indexes_are_partial_on_every_backend(store: Store) -> None:
    """One active ticket, one pending suppression per problem: resolved tickets and
    released suppressions must stay outside the unique indexes, on each backend alike."""
    where: dict[str, str] = {}
    with store.read() as conn:
        found = inspect(conn)
        for table in ("tickets", "suppressed_alerts"):
            for index in found.get_indexes(table):
                options: dict[str, object] = dict(index.get("dialect_options") or {})
                clause = options.get(f"{conn.dialect.name}_where")
                if clause is not None:
                    where[str(index["name"])] = " ".join(str(clause).split())
    assert set(where) == {"uq_tickets_active_problem", "uq_suppressed_alerts_pending"}
    assert "status" in where["uq_tickets_active_problem"]
    assert "'resolved'" in where["uq_tickets_active_problem"]
    pending = where["uq_suppressed_alerts_pending"]
    assert "cleared_at IS NULL" in pending and "released_at IS NULL" in pending


def test_migrate_reports_progress_then_nothing_when_up_to_date(store_url: str) -> None:
    store = Store(store_url)
    lines: list[str] = []
    store.migrate(lines.append)
    latest = len(migrations.MIGRATIONS)
    assert lines == [
        f"migration {m.version}/{latest}: {m.description}" for m in migrations.MIGRATIONS
    ]
    lines.clear()
    store.migrate(lines.append)
    assert lines == []
    store.close()


def test_database_newer_than_the_code_is_refused(store: Store) -> None:
    with store.transaction() as conn:
        conn.execute(
            schema.schema_migrations.insert().values(
                version=len(migrations.MIGRATIONS) + 6, description="from the future", applied_at=T0
            )
        )
    with pytest.raises(migrations.DatabaseTooNew) as caught:
        store.migrate()
    assert (caught.value.db_version, caught.value.code_version) == (
        len(migrations.MIGRATIONS) + 6,
        len(migrations.MIGRATIONS),
    )
    assert f"version {caught.value.db_version}" in str(caught.value)


def _add_notes(conn: Connection) -> None:
    conn.execute(text("ALTER TABLE agents ADD COLUMN notes VARCHAR(200)"))
    conn.execute(text("UPDATE agents SET notes = 'migrated ' || hostname"))
    Table(
        "sites", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(50))
    ).create(conn)


def test_upgrade_from_v1_applies_the_next_step_and_keeps_data(
    store: Store, agent: AgentRecord
) -> None:
    new = len(migrations.MIGRATIONS) + 1
    steps = (
        *migrations.MIGRATIONS,
        migrations.Migration(new, "add agent notes and sites", _add_notes),
    )
    lines: list[str] = []
    assert migrations.migrate(store.engine, lines.append, migrations=steps, now=T0) == new
    assert lines == [f"migration {new}/{new}: add agent notes and sites"]
    with store.read() as conn:
        assert agents_store.get_agent(conn, agent.agent_id) == agent
    with store.read() as conn:
        assert conn.scalar(text("SELECT notes FROM agents")) == "migrated pc-01"
        assert inspect(conn).has_table("sites")
        assert migrations.current_version(conn) == new
        applied = conn.execute(
            select(schema.schema_migrations.c.version, schema.schema_migrations.c.applied_at)
        ).all()
    assert [tuple(r) for r in applied][-1] == (new, T0)
    # The code that only knows version 1 now refuses this database.
    with pytest.raises(migrations.DatabaseTooNew):
        store.migrate()


def _half_done(conn: Connection) -> None:
    Table("half_done", MetaData(), Column("id", Integer, primary_key=True)).create(conn)
    raise RuntimeError("step failed midway")


def test_a_failing_migration_leaves_no_trace(store: Store) -> None:
    known = len(migrations.MIGRATIONS)
    steps = (*migrations.MIGRATIONS, migrations.Migration(known + 1, "fails midway", _half_done))
    with pytest.raises(RuntimeError, match="midway"):
        migrations.migrate(store.engine, migrations=steps)
    with store.read() as conn:
        assert not inspect(conn).has_table("half_done")
        assert migrations.current_version(conn) == known


def test_migration_list_must_be_numbered_in_order(store: Store) -> None:
    gap = len(migrations.MIGRATIONS) + 2
    steps = (*migrations.MIGRATIONS, migrations.Migration(gap, "skips one", _add_notes))
    with pytest.raises(migrations.InvalidMigrationList):
        migrations.migrate(store.engine, migrations=steps)


# -- one active ticket per problem ---------------------------------------------------------


def _raw_ticket(conn: Connection, agent_id: str, status: str) -> None:
    conn.execute(
        schema.tickets.insert().values(
            problem_key="k" * 64, customer="acme", agent_id=agent_id, hostname="pc-01",
            rule="DiskFull", labels={}, status=status, severity="warning", tier=1,
            summary="disk full", value=0.95, context={}, opened_at=T0, tier_since=T0,
            updated_at=T0, reopen_count=0, flapping=False, event_seq=0,
        )
    )  # fmt: skip


def test_a_second_active_ticket_for_a_problem_violates_the_index(
    store: Store, agent: AgentRecord
) -> None:
    with store.transaction() as conn:
        _raw_ticket(conn, agent.agent_id, "resolved")
        _raw_ticket(conn, agent.agent_id, "resolved")
        _raw_ticket(conn, agent.agent_id, "open")
    with pytest.raises(IntegrityError), store.transaction() as conn:
        _raw_ticket(conn, agent.agent_id, "acknowledged")
    with store.read() as conn:
        assert (
            conn.scalar(
                select(schema.tickets.c.id).where(schema.tickets.c.status == "acknowledged")
            )
            is None
        )


# -- enrollment and agents -----------------------------------------------------------------


def test_enrollment_binds_the_credential_to_agent_and_customer(store: Store) -> None:
    with store.transaction() as conn:
        record, token = enrollment.create_token(conn, "acme", now=T0, expires_at=T0 + 3600)
    assert token.startswith("tle_")
    assert not hasattr(record, "token") and not hasattr(record, "token_hash")
    with store.transaction() as conn:
        agent, credential = enrollment.enroll_agent(
            conn,
            token,
            hostname="pc-01",
            site="hq",
            inventory={"os": "linux", "cpus": 4},
            now=T0 + 10,
        )
    assert agent.agent_id.startswith("agt_") and len(agent.agent_id) == 4 + 16
    assert agent.customer == "acme" and agent.inventory == {"os": "linux", "cpus": 4}
    assert credential.startswith(agent.agent_id + ".")
    with store.read() as conn:
        assert agents_store.authenticate(conn, credential) == agent
    with store.read() as conn:
        assert agents_store.get_agent(conn, agent.agent_id) == agent
    with store.transaction() as conn:
        other, other_credential = enrollment.enroll_agent(
            conn, token, hostname="pc-02", site="hq", inventory={}, now=T0 + 20
        )
    assert other.agent_id != agent.agent_id
    with store.read() as conn:
        assert agents_store.authenticate(conn, other_credential) == other
    with store.read() as conn:
        stored = conn.execute(select(schema.agents.c.credential_hash)).scalars().all()
    assert all(credential.split(".")[1] not in h for h in stored)


@pytest.mark.parametrize(
    "credential",
    ["", "no-dot", "agt_0000000000000000.secret", ".secret", "{agent_id}.", "{agent_id}.wrong"],
)
def test_bad_credentials_authenticate_nobody(
    store: Store, agent: AgentRecord, credential: str
) -> None:
    with store.read() as conn:
        assert agents_store.authenticate(conn, credential.format(agent_id=agent.agent_id)) is None


def test_a_revoked_agent_no_longer_authenticates(store: Store) -> None:
    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, "acme", now=T0)
    with store.transaction() as conn:
        agent, credential = enrollment.enroll_agent(
            conn, token, hostname="pc", site="", inventory={}, now=T0
        )
    with store.transaction() as conn:
        agents_store.revoke_agent(conn, agent.agent_id, now=T0 + 5)
    with store.transaction() as conn:
        agents_store.revoke_agent(conn, agent.agent_id, now=T0 + 9)
    with store.read() as conn:
        assert agents_store.authenticate(conn, credential) is None
    with store.read() as conn:
        assert agents_store.get_agent(conn, agent.agent_id).revoked_at == T0 + 5  # type: ignore[union-attr]
    with pytest.raises(AgentNotFound), store.transaction() as conn:
        agents_store.revoke_agent(conn, "agt_missing", now=T0)


def test_enrollment_is_refused_for_unknown_revoked_and_expired_tokens(store: Store) -> None:
    with store.transaction() as conn:
        revoked, revoked_token = enrollment.create_token(conn, "acme", now=T0)
    with store.transaction() as conn:
        enrollment.revoke_token(conn, revoked.id, now=T0 + 1)
    with store.transaction() as conn:
        expired, expired_token = enrollment.create_token(conn, "acme", now=T0, expires_at=T0 + 60)
    cases = {
        "tle_never_issued": "unknown enrollment token",
        revoked_token: f"enrollment token {revoked.id} was revoked",
        expired_token: f"enrollment token {expired.id} has expired",
    }
    for token, reason in cases.items():
        with pytest.raises(EnrollmentRefused) as caught, store.transaction() as conn:
            enrollment.enroll_agent(conn, token, hostname="pc", site="", inventory={}, now=T0 + 60)
        assert caught.value.reason == reason
        assert token not in str(caught.value)
    with store.read() as conn:
        assert agents_store.list_agents(conn) == []
    # Still valid one second before it expires.
    with store.transaction() as conn:
        enrollment.enroll_agent(
            conn, expired_token, hostname="pc", site="", inventory={}, now=T0 + 59
        )


def test_operator_chosen_tokens_are_idempotent_per_customer(store: Store) -> None:
    with store.transaction() as conn:
        first = enrollment.ensure_token(conn, "acme", "acme-demo-token", now=T0)
    with store.transaction() as conn:
        again = enrollment.ensure_token(conn, "acme", "acme-demo-token", now=T0 + 100)
    assert again == first and first.created_at == T0
    with pytest.raises(EnrollmentTokenConflict), store.transaction() as conn:
        enrollment.ensure_token(conn, "globex", "acme-demo-token", now=T0)
    with store.transaction() as conn:
        enrollment.create_token(conn, "globex", now=T0)
    with store.read() as conn:
        assert [t.customer for t in enrollment.list_tokens(conn)] == ["acme", "globex"]
    with store.read() as conn:
        assert enrollment.list_tokens(conn, "acme") == [first]
    with store.transaction() as conn:
        agent, _ = enrollment.enroll_agent(
            conn, "acme-demo-token", hostname="pc", site="", inventory={}, now=T0
        )
    assert agent.customer == "acme"
    with pytest.raises(EnrollmentTokenNotFound), store.transaction() as conn:
        enrollment.revoke_token(conn, 999, now=T0)


def test_agents_are_listed_per_customer_and_keep_their_inventory(store: Store) -> None:
    with store.transaction() as conn:
        _, acme = enrollment.create_token(conn, "acme", now=T0)
    with store.transaction() as conn:
        _, globex = enrollment.create_token(conn, "globex", now=T0)
    with store.transaction() as conn:
        a, _ = enrollment.enroll_agent(
            conn, acme, hostname="b-pc", site="hq", inventory={}, now=T0, tags={"role": "desk"}
        )
    with store.transaction() as conn:
        b, _ = enrollment.enroll_agent(conn, acme, hostname="a-pc", site="hq", inventory={}, now=T0)
    with store.transaction() as conn:
        c, _ = enrollment.enroll_agent(conn, globex, hostname="c-pc", site="", inventory={}, now=T0)
    with store.read() as conn:
        assert [r.hostname for r in agents_store.list_agents(conn, "acme")] == ["a-pc", "b-pc"]
    with store.read() as conn:
        assert {r.agent_id for r in agents_store.list_agents(conn)} == {
            a.agent_id,
            b.agent_id,
            c.agent_id,
        }
    with store.read() as conn:
        assert agents_store.get_agent(conn, a.agent_id).tags == {"role": "desk"}  # type: ignore[union-attr]
    with store.transaction() as conn:
        agents_store.update_inventory(
            conn, a.agent_id, "b-pc.acme.local", {"os": "Windows 11", "ram": 16}, now=T0 + 30
        )
    with store.read() as conn:
        updated = agents_store.get_agent(conn, a.agent_id)
    assert updated is not None
    assert (updated.hostname, updated.inventory, updated.last_seen_at) == (
        "b-pc.acme.local", {"os": "Windows 11", "ram": 16}, T0 + 30,
    )  # fmt: skip
    with store.read() as conn:
        assert agents_store.get_agent(conn, "agt_missing") is None
    with pytest.raises(AgentNotFound), store.transaction() as conn:
        agents_store.update_inventory(conn, "agt_missing", "x", {}, now=T0)


# -- delivery bookkeeping ------------------------------------------------------------------


def test_applied_seq_only_moves_forward(store: Store, agent: AgentRecord) -> None:
    with store.read() as conn:
        assert agent_instances.applied_seq(conn, agent.agent_id, "boot-1") == 0
    with store.transaction() as conn:
        agent_instances.record_applied(
            conn, agent.agent_id, "boot-1", 5, dropped_total=0, now=T0 + 1
        )
    with store.read() as conn:
        assert agent_instances.applied_seq(conn, agent.agent_id, "boot-1") == 5
    for stale in (5, 3):
        with pytest.raises(SeqAlreadyApplied) as caught, store.transaction() as conn:
            agent_instances.record_applied(
                conn, agent.agent_id, "boot-1", stale, dropped_total=0, now=T0 + 2
            )
        assert (caught.value.seq, caught.value.applied_seq) == (stale, 5)
    with store.transaction() as conn:
        agent_instances.record_applied(
            conn, agent.agent_id, "boot-1", 9, dropped_total=2, now=T0 + 3
        )
        agent_instances.record_applied(
            conn, agent.agent_id, "boot-2", 1, dropped_total=0, now=T0 + 4
        )
    with store.read() as conn:
        assert agent_instances.applied_seq(conn, agent.agent_id, "boot-1") == 9
    with store.read() as conn:
        assert agent_instances.applied_seq(conn, agent.agent_id, "boot-2") == 1
    with store.read() as conn:
        row = conn.execute(
            select(schema.agent_instances).where(schema.agent_instances.c.instance_id == "boot-1")
        ).one()
    assert (row.dropped_reports_total, row.first_seen_at, row.last_seen_at) == (2, T0 + 1, T0 + 3)
    with store.read() as conn:
        assert agents_store.last_seen_all(conn) == {agent.agent_id: T0 + 4}


def test_only_the_newest_instances_of_an_agent_are_kept(store: Store, agent: AgentRecord) -> None:
    keep = 16  # MAX_INSTANCES_PER_AGENT, the number docs/limits.md states

    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, "globex", now=T0)
    with store.transaction() as conn:
        other_agent, _ = enrollment.enroll_agent(
            conn, token, hostname="pc-02", site="", inventory={}, now=T0
        )
    with store.transaction() as conn:
        agent_instances.record_applied(
            conn, other_agent.agent_id, "theirs", 1, dropped_total=0, now=T0
        )
    for i in range(keep + 40):  # an agent inventing a spool instance per report
        with store.transaction() as conn:
            agent_instances.record_applied(
                conn, agent.agent_id, f"i-{i}", 3, dropped_total=0, now=T0 + i
            )
    with store.read() as conn:
        rows = conn.execute(
            select(schema.agent_instances.c.instance_id).where(
                schema.agent_instances.c.agent_id == agent.agent_id
            )
        ).all()
    assert sorted(r.instance_id for r in rows) == sorted(f"i-{i}" for i in range(40, keep + 40))
    with store.read() as conn:
        assert agent_instances.applied_seq(conn, agent.agent_id, f"i-{keep + 39}") == 3
    with store.read() as conn:
        assert (
            agent_instances.applied_seq(conn, agent.agent_id, "i-0") == 0
        )  # forgotten: would apply afresh
    with store.read() as conn:
        assert agent_instances.applied_seq(conn, other_agent.agent_id, "theirs") == 1


def test_record_applied_rolls_back_with_the_effects_it_guards(
    store: Store, agent: AgentRecord
) -> None:
    class EffectFailed(Exception):
        pass

    with pytest.raises(EffectFailed), store.transaction() as conn:
        agent_instances.record_applied(
            conn, agent.agent_id, "boot-1", 1, dropped_total=0, now=T0 + 1
        )
        raise EffectFailed
    with store.read() as conn:
        assert agent_instances.applied_seq(conn, agent.agent_id, "boot-1") == 0
    with store.read() as conn:
        assert agents_store.last_seen_all(conn) == {}
    with pytest.raises(AgentNotFound), store.transaction() as conn:
        agent_instances.record_applied(conn, "agt_missing", "boot-1", 1, dropped_total=0, now=T0)


def test_last_seen_skips_revoked_and_never_seen_agents(store: Store, agent: AgentRecord) -> None:
    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, "acme", now=T0)
    with store.transaction() as conn:
        quiet, _ = enrollment.enroll_agent(
            conn, token, hostname="quiet", site="", inventory={}, now=T0
        )
    with store.transaction() as conn:
        gone, _ = enrollment.enroll_agent(
            conn, token, hostname="gone", site="", inventory={}, now=T0
        )
    with store.transaction() as conn:
        agents_store.update_inventory(conn, agent.agent_id, "pc-01", {}, now=T0 + 7)
    with store.transaction() as conn:
        agents_store.update_inventory(conn, gone.agent_id, "gone", {}, now=T0 + 8)
    with store.transaction() as conn:
        agents_store.revoke_agent(conn, gone.agent_id, now=T0 + 9)
    with store.read() as conn:
        assert agents_store.last_seen_all(conn) == {agent.agent_id: T0 + 7}
    with store.read() as conn:
        assert quiet.agent_id not in agents_store.last_seen_all(conn)


# -- alert state ---------------------------------------------------------------------------


def test_alert_states_round_trip_across_a_restart(
    store_url: str, store: Store, agent: AgentRecord
) -> None:
    disk = AlertKey(agent.agent_id, "DiskFull", (("mountpoint", "/"), ("device", "sda1")))
    cpu = AlertKey(agent.agent_id, "CpuHigh", ())
    pending = AlertState(
        "pending", active_since=T0, firing_since=None, clear_since=None, value=0.93, last_eval=T0
    )
    firing = AlertState("firing", T0 - 600, T0 - 300, clear_since=T0, value=0.5, last_eval=T0)
    with store.transaction() as conn:
        alert_states.save(conn, {disk: pending, cpu: firing})
    with store.read() as conn:
        assert alert_states.load(conn) == {disk: pending, cpu: firing}
    later = AlertState("firing", T0, T0 + 300, None, 0.97, T0 + 300)
    with store.transaction() as conn:
        alert_states.save(conn, {disk: later, cpu: None})
    store.close()
    restarted = Store(store_url)
    with restarted.read() as conn:
        assert alert_states.load(conn) == {disk: later}
    restarted.close()


# -- unavailability ------------------------------------------------------------------------


def _sqlite_store(tmp_path: Path, **kwargs: float) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'tripline.db'}", **kwargs)
    store.migrate()
    return store


def test_data_dir_store_is_a_wal_file_with_foreign_keys(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    store = Store(collector_config(tmp_path / "data").effective_database_url)
    store.migrate()
    with store.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    store.close()
    assert (tmp_path / "data" / "tripline.db").is_file()


def test_a_read_only_database_is_unavailable_for_writes(tmp_path: Path) -> None:
    writable = _sqlite_store(tmp_path)
    with writable.transaction() as conn:
        _, token = enrollment.create_token(conn, "acme", now=T0)
    writable.close()
    read_only = Store(f"sqlite:///file:{tmp_path / 'tripline.db'}?mode=ro&uri=true")
    with read_only.read() as conn:
        assert [t.customer for t in enrollment.list_tokens(conn)] == ["acme"]
    with (
        pytest.raises(StoreUnavailable, match=r"readonly|read-only|read only"),
        read_only.transaction() as conn,
    ):
        enrollment.enroll_agent(conn, token, hostname="pc", site="", inventory={}, now=T0)
    read_only.close()


def test_a_locked_database_is_unavailable(tmp_path: Path) -> None:
    holder = _sqlite_store(tmp_path)
    waiter = Store(f"sqlite:///{tmp_path / 'tripline.db'}", busy_timeout=0.05)
    with (
        holder.transaction(),
        pytest.raises(StoreUnavailable, match="locked"),
        waiter.transaction() as conn,
    ):
        enrollment.create_token(conn, "acme", now=T0)
    with waiter.transaction() as conn:
        enrollment.create_token(conn, "acme", now=T0)
    holder.close()
    waiter.close()


def test_a_full_database_is_unavailable(tmp_path: Path) -> None:
    store = _sqlite_store(tmp_path)
    with pytest.raises(StoreUnavailable, match="full"), store.transaction() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
        for n in range(2000):
            enrollment.create_token(conn, f"customer-{n:04d}-" + "x" * 150, now=T0)
    store.close()


def test_a_full_database_is_unavailable_inside_a_ticket_savepoint(tmp_path: Path) -> None:
    store = _sqlite_store(tmp_path)
    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, "acme", now=T0)
    with store.transaction() as conn:
        agent, _ = enrollment.enroll_agent(
            conn, token, hostname="pc", site="", inventory={}, now=T0
        )
    with pytest.raises(StoreUnavailable, match="full"), store.transaction() as conn:
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
        conn.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
        tickets.on_alert_firing(
            conn, customer="acme", agent_id=agent.agent_id, hostname="pc", rule="DiskFull",
            labels=(), severity="critical", tier=1, summary="full", runbook=None, value=1.0,
            threshold=0.9, context={"log": "x" * 100_000}, now=T0,
            policy=ticketmodel.TicketPolicy(),
        )  # fmt: skip
    store.close()


def test_bugs_are_not_disguised_as_unavailability(tmp_path: Path) -> None:
    store = _sqlite_store(tmp_path)
    with pytest.raises(OperationalError, match="no such table"), store.transaction() as conn:
        conn.execute(text("SELECT * FROM no_such_table"))
    store.close()


def test_an_unreachable_postgresql_is_unavailable() -> None:
    pytest.importorskip("psycopg", reason="needs psycopg (pip install .[postgres])")
    store = Store("postgresql+psycopg://tripline@127.0.0.1:1/tripline?connect_timeout=2")
    with pytest.raises(StoreUnavailable), store.read() as conn:
        agents_store.list_agents(conn)
    store.close()


def test_a_store_can_be_shared_by_threads(store: Store, agent: AgentRecord) -> None:
    errors: list[BaseException] = []

    def report(instance: str) -> None:
        try:
            for seq in range(1, 21):
                with store.transaction() as conn:
                    agent_instances.record_applied(
                        conn, agent.agent_id, instance, seq, dropped_total=0, now=T0 + seq
                    )
        except BaseException as error:  # handed to the main thread's assertion
            errors.append(error)

    threads = [threading.Thread(target=report, args=(f"boot-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with store.read() as conn:
        assert [
            agent_instances.applied_seq(conn, agent.agent_id, f"boot-{n}") for n in range(4)
        ] == [20] * 4


def test_collectors_starting_together_register_a_flag_token_once(
    store_url: str, store: Store
) -> None:
    racers = [Store(store_url) for _ in range(3)]
    barrier = threading.Barrier(len(racers))
    results: list[object] = []

    def start(racer: Store) -> None:
        try:
            barrier.wait(timeout=10)
            with racer.transaction() as conn:
                results.append(enrollment.ensure_token(conn, "acme", "acme-flag-token", now=T0))
        except BaseException as error:  # handed to the main thread's assertion
            results.append(error)

    threads = [threading.Thread(target=start, args=(racer,)) for racer in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with store.read() as conn:
        assert len(enrollment.list_tokens(conn)) == 1
    with store.read() as conn:
        assert results == [enrollment.list_tokens(conn)[0]] * 3
    for racer in racers:
        racer.close()


def test_an_in_memory_store_works_for_quick_demos() -> None:
    store = Store("sqlite://")
    store.migrate()
    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, "acme", now=T0)
    with store.transaction() as conn:
        agent, credential = enrollment.enroll_agent(
            conn, token, hostname="pc", site="", inventory={}, now=T0
        )
    with store.read() as conn:
        assert agents_store.authenticate(conn, credential) == agent
    store.close()


# -- health: only a transaction that wrote rows shows the store takes writes ----------------


def test_health_turns_on_failed_writes_and_back_only_on_a_write_that_changed_rows(
    store: Store,
) -> None:
    changes: list[tuple[bool, str]] = []
    store.health.on_change = lambda healthy, reason: changes.append((healthy, reason))
    store.health.failed(StoreUnavailable("database unavailable: disk I/O error"))
    assert not store.health.healthy
    assert store.health.reason == "store unavailable: database unavailable: disk I/O error"
    # Commits that change nothing prove nothing: the evaluation tick's escalation pass
    # commits empty transactions every second, on a full disk too.
    with store.transaction() as conn:
        conn.execute(select(schema.agents.c.agent_id))
    with store.transaction() as conn:
        conn.execute(
            schema.agents.update().where(schema.agents.c.agent_id == "none").values(site="x")
        )
    assert not store.health.healthy
    store.probe(T0)
    assert store.health.healthy and store.health.reason == "ready"
    with store.read() as conn:
        assert conn.execute(select(schema.store_probe.c.writes)).scalar_one() == 1
    # Failing again with the same reason is not a new transition.
    store.health.failed(StoreUnavailable("x"))
    store.health.failed(StoreUnavailable("x"))
    assert changes == [
        (False, "store unavailable: database unavailable: disk I/O error"),
        (True, "ready"),
        (False, "store unavailable: x"),
    ]


def test_a_failing_write_marks_the_store_unhealthy(tmp_path: Path) -> None:
    holder = _sqlite_store(tmp_path)
    waiter = Store(f"sqlite:///{tmp_path / 'tripline.db'}", busy_timeout=0.05)
    waiter.probe(T0)
    assert waiter.health.healthy
    with holder.transaction(), pytest.raises(StoreUnavailable, match="locked"):
        waiter.probe(T0)
    assert not waiter.health.healthy and "locked" in waiter.health.reason
    with waiter.transaction() as conn:
        enrollment.create_token(conn, "acme", now=T0)  # real work heals
    assert waiter.health.healthy
    holder.close()
    waiter.close()


def test_a_deleted_database_file_refuses_commits_and_is_not_recreated(tmp_path: Path) -> None:
    store = _sqlite_store(tmp_path)
    db = tmp_path / "tripline.db"
    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, "acme", now=T0)
    moved = tmp_path / "moved.db"
    db.rename(moved)
    with pytest.raises(StoreFileGone, match="deleted") as caught, store.transaction() as conn:
        enrollment.enroll_agent(conn, token, hostname="pc", site="", inventory={}, now=T0)
    assert caught.value.path == db and str(db) in str(caught.value)
    assert not store.health.healthy
    # A connection the pool opens now must not create an empty database at the path.
    store.close()
    with pytest.raises(StoreFileGone), store.transaction() as conn:
        enrollment.create_token(conn, "beta", now=T0)
    assert not db.exists()
    # The same file back at its path (same inode): writes go on.
    moved.rename(db)
    store.probe(T0)
    assert store.health.healthy
    with store.read() as conn:
        assert [t.customer for t in enrollment.list_tokens(conn)] == ["acme"]
    store.close()


def test_a_replaced_database_file_refuses_commits(tmp_path: Path) -> None:
    store = _sqlite_store(tmp_path)
    db = tmp_path / "tripline.db"
    copy = tmp_path / "copy.db"
    copy.write_bytes(db.read_bytes())
    os.replace(copy, db)
    with pytest.raises(StoreFileGone, match="replaced"):
        store.probe(T0)
    store.close()


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b""])
def test_a_corrupt_database_names_the_file_and_how_to_recover(
    tmp_path: Path, content: bytes
) -> None:
    db = tmp_path / "tripline.db"
    if content:
        db.write_bytes(content)
    else:  # a real database cut in half
        _sqlite_store(tmp_path).close()
        whole = db.read_bytes()
        db.write_bytes(whole[: len(whole) // 2])
    store = Store(f"sqlite:///{db}")
    with pytest.raises(StoreCorrupt) as caught:
        store.migrate()
    assert caught.value.path == db
    assert str(db) in str(caught.value) and ".recover" in str(caught.value)
    store.close()


def test_one_lock_holder_per_database_released_with_its_descriptor(tmp_path: Path) -> None:
    db = tmp_path / "tripline.db"
    first = DataDirLock(db)
    first.acquire()
    second = DataDirLock(db)  # flock is per open file: a second open conflicts, even here
    with pytest.raises(DataDirLocked, match=rf"pid {os.getpid()}") as caught:
        second.acquire()
    assert caught.value.lock_path == tmp_path / "tripline.db.lock"
    first.release()
    second.acquire()
    second.release()
