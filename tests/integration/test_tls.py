"""TLS and mutual TLS on the gRPC port: real gRPC on loopback, real SQLite, real certs."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc import aio

from bench.tlsfiles import CertAuthority, Issued
from tests.conftest import async_eventually as eventually
from tests.conftest import free_port
from tests.integration.conftest import running_agent, running_app
from tests.integration.tls_helpers import (
    TOKEN,
    agent_config,
    client_credentials,
    collector_config,
    delivery,
)
from tripline.agent import identity as identity_file
from tripline.agent.identity import Identity
from tripline.collector import agents_store, enrollment, tls
from tripline.collector.app import CollectorApp
from tripline.common.tls import PLAINTEXT_WARNING
from tripline.v1 import tripline_pb2 as pb
from tripline.v1 import tripline_pb2_grpc as pb_grpc


def enroll_directly(app: CollectorApp, state_dir: Path) -> Identity:
    """Enroll through the store and write the agent's identity file, as a past run would."""
    with app.store.transaction() as conn:
        agent, credential = enrollment.enroll_agent(
            conn, TOKEN, hostname="pc-01", site="hq", inventory={}, now=time.time()
        )
    ident = Identity(agent_id=agent.agent_id, credential=credential, customer=agent.customer)
    identity_file.save(state_dir / "identity.json", ident)
    return ident


# -- server TLS -------------------------------------------------------------------------


def test_agent_with_the_right_ca_enrolls_and_reports(
    tmp_path: Path, pki: tuple[CertAuthority, Issued]
) -> None:
    ca, server = pki

    async def scenario() -> None:
        config = collector_config(tmp_path / "c", tls_cert=server.cert, tls_key=server.key)
        async with running_app(config) as app:
            agent = agent_config(tmp_path / "a", app.grpc_port, tls_ca=ca.path)
            async with running_agent(agent) as runner:
                await eventually(lambda: runner.transport.stats.acked_seq >= 3)
            with app.store.read() as conn:
                (record,) = agents_store.list_agents(conn)
            applied, count = delivery(app, record.agent_id)
            assert applied >= 3
            assert count == applied  # every seq from 1 applied once

            # The same port refuses a client that does not speak TLS.
            async with aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                with pytest.raises(aio.AioRpcError) as err:
                    await pb_grpc.CollectorStub(channel).Enroll(
                        pb.EnrollRequest(enrollment_token=TOKEN), timeout=5
                    )
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            with app.store.read() as conn:
                assert len(agents_store.list_agents(conn)) == 1

    asyncio.run(scenario())


def test_wrong_ca_fails_keeps_retrying_and_loses_no_report(
    tmp_path: Path, pki: tuple[CertAuthority, Issued]
) -> None:
    ca, server = pki
    impostor_ca = CertAuthority(tmp_path / "other-pki", name="Some Other CA")

    async def scenario() -> None:
        config = collector_config(tmp_path / "c", tls_cert=server.cert, tls_key=server.key)
        async with running_app(config) as app:
            ident = enroll_directly(app, tmp_path / "a")
            wrong = agent_config(tmp_path / "a", app.grpc_port, tls_ca=impostor_ca.path)
            async with running_agent(wrong) as runner:
                stats = runner.transport.stats
                await eventually(
                    lambda: stats.disconnects >= 3 and runner.spool.stats().reports >= 3
                )
                assert stats.connects == 0
                assert stats.last_error.startswith("UNAVAILABLE")
                newest = runner.spool.stats().newest_seq
            assert delivery(app, ident.agent_id) == (0, 0)  # nothing got through

            right = agent_config(tmp_path / "a", app.grpc_port, tls_ca=ca.path)
            async with running_agent(right) as runner:
                await eventually(lambda: delivery(app, ident.agent_id)[0] >= newest)
            applied, count = delivery(app, ident.agent_id)
            # Every report spooled while the CA was wrong arrived, each applied once.
            assert count == applied >= newest >= 3

    asyncio.run(scenario())


def test_plaintext_agent_against_a_tls_collector_fails(
    tmp_path: Path, pki: tuple[CertAuthority, Issued]
) -> None:
    _, server = pki

    async def scenario() -> None:
        config = collector_config(tmp_path / "c", tls_cert=server.cert, tls_key=server.key)
        async with running_app(config) as app:
            ident = enroll_directly(app, tmp_path / "a")
            agent = agent_config(tmp_path / "a", app.grpc_port, plaintext=True)
            async with running_agent(agent) as runner:
                stats = runner.transport.stats
                await eventually(lambda: stats.disconnects >= 2)
                assert stats.connects == 0
                assert stats.last_error.startswith("UNAVAILABLE")
                assert runner.spool.stats().reports >= 1  # kept for a later, secure, send
            assert delivery(app, ident.agent_id) == (0, 0)

    asyncio.run(scenario())


def test_collector_refuses_to_start_without_certificate(tmp_path: Path) -> None:
    async def scenario() -> None:
        app = CollectorApp(collector_config(tmp_path / "c"))
        with pytest.raises(tls.TlsConfigError) as caught:
            await app.start()
        assert caught.value.key == "tls_cert"
        assert app.grpc_port == 0  # nothing was bound

    asyncio.run(scenario())
    assert not (tmp_path / "c").exists()  # refused before the store was touched

    # The command says why and exits 2, before opening any port.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tripline.collector.cli",
            "collector",
            "--data-dir",
            str(tmp_path / "cli"),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--http-listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 2
    assert result.stderr == (
        "tripline: config key 'tls_cert': the gRPC port needs a TLS certificate and key "
        "(--tls-cert FILE --tls-key FILE); for local development only, pass --plaintext "
        "to run without TLS\n"
    )


def test_plaintext_is_explicit_and_logs_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        caplog.set_level(logging.INFO)
        async with running_app(collector_config(tmp_path / "c", plaintext=True)) as app:
            collector_warnings = [
                r
                for r in caplog.records
                if r.levelno == logging.WARNING and r.getMessage() == PLAINTEXT_WARNING
            ]
            assert [r.name for r in collector_warnings] == ["tripline.collector.app"]
            ready = [r for r in caplog.records if r.getMessage() == "collector ready"]
            assert ready[0].tls == "off (plaintext)"  # type: ignore[attr-defined]
            caplog.clear()
            agent = agent_config(tmp_path / "a", app.grpc_port, plaintext=True)
            async with running_agent(agent) as runner:
                await eventually(lambda: runner.transport.stats.acked_seq >= 1)
            agent_warnings = [
                r
                for r in caplog.records
                if r.levelno == logging.WARNING and r.getMessage() == PLAINTEXT_WARNING
            ]
            assert [r.name for r in agent_warnings] == ["tripline.agent.tls"]

    asyncio.run(scenario())


# -- mutual TLS ---------------------------------------------------------------------------


def test_mtls_client_certificate_bound_to_the_agent_id(
    tmp_path: Path, pki: tuple[CertAuthority, Issued]
) -> None:
    ca, server = pki
    agents_ca = CertAuthority(tmp_path / "agents-pki", name="Agents CA")
    stranger_ca = CertAuthority(tmp_path / "stranger-pki", name="Stranger CA")

    async def scenario() -> None:
        config = collector_config(
            tmp_path / "c",
            tls_cert=server.cert,
            tls_key=server.key,
            tls_client_ca=agents_ca.path,
        )
        async with running_app(config) as app:
            target = f"127.0.0.1:{app.grpc_port}"
            # Enrolling needs a certificate from the agents' CA; its name is not bound yet.
            bootstrap = agents_ca.issue("bootstrap-pc-01")
            async with aio.secure_channel(target, client_credentials(ca, bootstrap)) as ch:
                enrolled = await pb_grpc.CollectorStub(ch).Enroll(
                    pb.EnrollRequest(enrollment_token=TOKEN, host=pb.HostInfo(hostname="pc-01"))
                )
            with app.store.transaction() as conn:
                other = enrollment.enroll_agent(
                    conn, TOKEN, hostname="pc-02", site="", inventory={}, now=time.time()
                )[0]
            ident = Identity(enrolled.agent_id, enrolled.credential, enrolled.customer)
            identity_file.save(tmp_path / "a" / "identity.json", ident)

            # The agent with a certificate issued to its agent id reports.
            own = agents_ca.issue(enrolled.agent_id)
            agent = agent_config(
                tmp_path / "a", app.grpc_port, tls_ca=ca.path, tls_cert=own.cert, tls_key=own.key
            )
            async with running_agent(agent) as runner:
                await eventually(lambda: runner.transport.stats.acked_seq >= 2)
            assert delivery(app, enrolled.agent_id)[0] >= 2

            # A SAN naming the agent id binds as well as the CN.
            by_san = agents_ca.issue("pc-01.acme.example", sans=(enrolled.agent_id,))
            assert await connect_status(target, ca, by_san, enrolled.credential) is None

            # This agent's credential with another agent's certificate: UNAUTHENTICATED.
            foreign = agents_ca.issue(other.agent_id)
            status = await connect_status(target, ca, foreign, enrolled.credential)
            assert status is not None
            assert status[0] == grpc.StatusCode.UNAUTHENTICATED
            assert status[1] == (
                f"the client certificate (CN/SAN: {other.agent_id}) is not issued to agent "
                f"{enrolled.agent_id}: give this agent a certificate whose CN or a SAN is its "
                "agent id"
            )
            # Without a client certificate, or with one from another CA: no handshake.
            for cert in (None, stranger_ca.issue(enrolled.agent_id)):
                status = await connect_status(target, ca, cert, enrolled.credential)
                assert status is not None
                assert status[0] == grpc.StatusCode.UNAVAILABLE
            rejected = app.metrics.reports_rejected.labels("unauthenticated")._value.get()
            assert rejected == 1

    asyncio.run(scenario())


async def connect_status(
    target: str, ca: CertAuthority, client: Issued | None, credential: str
) -> tuple[grpc.StatusCode, str] | None:
    """Open Connect, send Hello; None when Welcome comes back, else the refusal."""
    async with aio.secure_channel(target, client_credentials(ca, client)) as channel:
        call = pb_grpc.CollectorStub(channel).Connect(
            metadata=(("authorization", f"Bearer {credential}"),), timeout=10
        )
        try:
            await call.write(
                pb.AgentMessage(hello=pb.Hello(instance_id="probe", sent_at_seconds=time.time()))
            )
            reply = await call.read()
        except aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        assert reply.WhichOneof("kind") == "welcome"
        call.cancel()
        return None
