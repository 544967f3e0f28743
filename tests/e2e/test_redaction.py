"""Secrets stay on the PC and files stay private, with real processes.

A real process holds secrets in its command line; a real agent reports it to a real
collector (both started with umask 000). The process shows up in the ticket's context,
its secrets nowhere: not in the ticket, the collector's database, the agent's spool or
the logs, and every file holding them is owner-only.
"""

from __future__ import annotations

import json
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Cluster, by_rule, eventually, write_rules

pytestmark = pytest.mark.e2e

TOKEN = "tle_redact_" + secrets.token_urlsafe(24)
PASSWORD = "pw-" + secrets.token_hex(8)
KV_TOKEN = "kv-" + secrets.token_hex(8)
URL_PASSWORD = "url-" + secrets.token_hex(8)
LICENSE = f"ACME-LICENSE-{secrets.randbelow(10**9):09d}"  # matched by redact_patterns
SECRETS = (TOKEN, PASSWORD, KV_TOKEN, URL_PASSWORD, LICENSE)


def start_holder(marker: str, ballast_mib: int, *secret_args: str) -> subprocess.Popen[bytes]:
    """A process whose command line holds secrets; its resident ballast puts it among
    the top processes by memory, so the agent reports its command line."""
    code = (
        f"import time; ballast = b'x' * ({ballast_mib} << 20); "
        "print('ready', flush=True); time.sleep(600)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, marker, *secret_args], stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    return child


@pytest.fixture
def holders() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for child in started:
        child.kill()
        child.wait()


def listed(context: dict[str, Any], pid: int) -> dict[str, Any] | None:
    for process in context.get("top_memory", []):
        if process["pid"] == pid:
            return dict(process)
    return None


def assert_no_secret(values: tuple[str, ...], where: str, data: bytes) -> None:
    for value in values:
        assert value.encode() not in data, f"{value!r} leaked into {where}"


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from (p for p in root.rglob("*") if p.is_file())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_command_line_secrets_never_leave_the_pc_and_files_are_private(
    cluster: Cluster, tmp_path: Path, holders: list[subprocess.Popen[bytes]]
) -> None:
    holder = start_holder(
        "tripline-redaction-marker",
        512,
        "--password",
        PASSWORD,
        f"token={KV_TOKEN}",
        f"https://u:{URL_PASSWORD}@example.com/x",
        "--customer",
        f"acme={TOKEN}",
        TOKEN,  # bare: only the exact-value rule knows it
        LICENSE,
    )
    holders.append(holder)
    rules = tmp_path / "rules.yaml"
    write_rules(rules, 0)
    state_dir = tmp_path / "agent"
    config = tmp_path / "agent.yaml"
    config.write_text(
        json.dumps(
            {
                "agent": {
                    "enrollment_token": TOKEN,
                    "state_dir": str(state_dir),
                    "redact_patterns": ["ACME-LICENSE-[0-9]+"],
                }
            }
        )
    )
    collector = cluster.collector(
        "--rules", str(rules), "--customer", f"acme={TOKEN}", "--interval", "1"
    )
    collector.umask = 0o000
    collector.start()
    collector.wait_ready()
    agent = cluster.agent(collector, TOKEN, "--config", str(config))
    agent.umask = 0o000
    agent.start()

    opened = eventually(
        lambda: by_rule(cluster.tickets(collector.data_dir), "MemoryPresent"),
        what="MemoryPresent ticket opened",
    )
    shown = cluster.cli(
        "tickets", "show", str(opened[0]["id"]), "--json", "--data-dir", str(collector.data_dir)
    )
    assert shown.returncode == 0, shown.stderr
    process = listed(json.loads(shown.stdout)["context"], holder.pid)
    assert process is not None, "the secret-holding process is in the ticket's context"
    assert "tripline-redaction-marker" in process["cmdline"]
    assert "--password ***" in process["cmdline"]
    assert "https://u:***@example.com/x" in process["cmdline"]
    assert "--customer acme=***" in process["cmdline"]
    assert_no_secret(SECRETS, "tickets show", shown.stdout.encode())
    listing = cluster.cli("tickets", "list", "--data-dir", str(collector.data_dir))
    assert_no_secret(SECRETS, "tickets list", listing.stdout.encode())

    # The agent's credential, once enrolled, is redacted too: what --once prints is what
    # the agent sends, with the same config and state.
    credential = json.loads((state_dir / "identity.json").read_text())["credential"]
    second = start_holder("tripline-credential-marker", 640, credential)
    holders.append(second)
    once = cluster.cli("agent", "--once", "--json", "--config", str(config))
    assert once.returncode == 0, once.stderr
    snapshot = json.loads(once.stdout)["context"]
    for pid, marker in ((second.pid, "tripline-credential-marker"), (holder.pid, "--password ***")):
        shown_process = listed(snapshot, pid)
        assert shown_process is not None, f"pid {pid} among the top processes by memory"
        assert marker in shown_process["cmdline"]
    assert_no_secret((*SECRETS, credential), "agent --once", once.stdout.encode())

    agent.stop()
    collector.stop()
    for path in files_under(collector.data_dir, state_dir):
        assert_no_secret((PASSWORD, KV_TOKEN, URL_PASSWORD, LICENSE), str(path), path.read_bytes())
    for path in (agent.log_path, collector.log_path):
        assert_no_secret((PASSWORD, KV_TOKEN, URL_PASSWORD, LICENSE), str(path), path.read_bytes())

    # umask 000 or not: owner-only directories and files.
    assert mode(collector.data_dir) == 0o700
    assert mode(state_dir) == 0o700
    private = [
        collector.data_dir / "tripline.db",
        state_dir / "spool.db",
        state_dir / "identity.json",
    ]
    private += [p.with_name(p.name + s) for p in private[:2] for s in ("-wal", "-shm")]
    for path in private:
        if path.exists():  # -wal/-shm may be gone after a clean close
            assert mode(path) == 0o600, f"{path} is {mode(path):04o}"
    assert (collector.data_dir / "tripline.db").exists() and (state_dir / "spool.db").exists()
