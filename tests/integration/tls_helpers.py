"""Collector and agent configured for TLS on loopback, shared by test_tls.py and
test_security.py (plaintext ones are `collector_config`/`agent_config` in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import grpc
from sqlalchemy import select

from bench.tlsfiles import CertAuthority, Issued
from tests.integration.conftest import agent_config as plaintext_agent_config
from tests.integration.conftest import collector_config as plaintext_collector_config
from tripline.agent.config import AgentConfig
from tripline.collector.app import CollectorApp
from tripline.collector.config import CollectorConfig
from tripline.collector.schema import agent_instances

TOKEN = "tle_acme_tls_WWBUjJXFCaKNGkk8mKUE_tK7NA1IThon"


def collector_config(data_dir: Path, **flags: object) -> CollectorConfig:
    """conftest's collector, with this module's token and TLS unless `flags` say otherwise."""
    return plaintext_collector_config(
        data_dir, **{"customers": {"acme": TOKEN}, "plaintext": False, **flags}
    )


def agent_config(state_dir: Path, port: int, **flags: object) -> AgentConfig:
    """conftest's agent, with this module's token and TLS unless `flags` say otherwise."""
    return plaintext_agent_config(
        state_dir, port, TOKEN, **{"plaintext": False, "backoff_max": 0.3, **flags}
    )


def delivery(app: CollectorApp, agent_id: str) -> tuple[int, int]:
    """(applied_seq, reports_applied) summed over the agent's instances."""
    with app.store.read() as conn:
        rows = conn.execute(
            select(agent_instances.c.applied_seq, agent_instances.c.reports_applied).where(
                agent_instances.c.agent_id == agent_id
            )
        ).all()
    return sum(r.applied_seq for r in rows), sum(r.reports_applied for r in rows)


def client_credentials(ca: CertAuthority, client: Issued | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.path.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
