"""The `tripline` command run in-process: exit codes and the messages a person reads."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tripline.collector import enrollment, entropy, tickets
from tripline.collector.cli import main
from tripline.collector.store import Store
from tripline.collector.ticketmodel import TicketPolicy

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_700_000_000.0

GOOD_RULES = """\
rules:
  - name: FilesystemAlmostFull
    metric: filesystem_used_ratio
    match: {fstype: {not_regex: "tmpfs|overlay"}}
    op: ">"
    threshold: 0.90
    for: 5m
    severity: warning
    tier: 1
    summary: "{host}: {mountpoint} is {value:.0%} full"
"""

BROKEN_RULES = """\
rules:
  - name: FilesystemAlmostFull
    metric: filesystem_used_ratio
    op: ">>"
    threshold: 0.90
    summary: "{host}: {mountpoint} is {value:.0%} full"
  - name: CpuBusy
    metric: cpu_usage_ratio
    op: ">"
    threshold: high
    severty: warning
    summary: "{host} is busy"
"""


@pytest.fixture(autouse=True)
def _no_tripline_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands read TRIPLINE_* from the environment: the test run's must not leak in."""
    for name in list(os.environ):
        if name.startswith("TRIPLINE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A data directory holding a migrated, empty store."""
    data = tmp_path / "data"
    data.mkdir()
    store = Store(f"sqlite:///{data / 'tripline.db'}")
    store.migrate()
    store.close()
    return data


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# -- rules check -----------------------------------------------------------------------


def test_rules_check_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(GOOD_RULES)
    code, out, err = run(capsys, "rules", "check", path)
    # the built-in offline rule is added to every file
    assert (code, out, err) == (0, f"{path}: OK, 2 rules\n", "")


def test_rules_check_broken_file_names_file_rule_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(GOOD_RULES)
    broken = tmp_path / "broken.yaml"
    broken.write_text(BROKEN_RULES)
    code, out, err = run(capsys, "rules", "check", broken, good)
    assert code == 1
    # every file is checked, every problem of a file listed
    assert out == f"{good}: OK, 2 rules\n"
    assert err.splitlines() == [
        f"{broken}: rule #1 'FilesystemAlmostFull': field 'op': "
        "expected one of >, >=, <, <=, ==, !=, got '>>'",
        f"{broken}: rule #2 'CpuBusy': field 'severty': unknown field (did you mean 'severity'?)",
        f"{broken}: rule #2 'CpuBusy': field 'threshold': expected a number, got 'high'",
    ]


def test_rules_check_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    code, _, err = run(capsys, "rules", "check", missing)
    assert code == 1
    assert err == f"{missing}: cannot read file: No such file or directory\n"


# -- store-backed commands ---------------------------------------------------------------


def test_tickets_list_without_a_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, "tickets", "list", "--json", "--data-dir", empty)
    assert (code, out) == (2, "")
    assert err == (
        f"tripline: no Tripline database in {empty}/ (start the collector or the demo first, "
        "or pass --data-dir / --database-url)\n"
    )
    assert list(empty.iterdir()) == []  # looking did not create one


def test_tokens_create_then_list(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "tokens", "create", "--customer", "acme", "--data-dir", store_dir)
    assert (code, err) == (0, "")
    heading, token = out.splitlines()
    assert heading == "enrollment token for customer 'acme' (id 1), shown once:"
    assert token.startswith("tle_")
    # the secret works for enrollment and is not stored in the clear
    store = Store(f"sqlite:///{store_dir / 'tripline.db'}")
    with store.transaction() as conn:
        record, _ = enrollment.enroll_agent(
            conn, token, hostname="pc-01", site="", inventory={}, now=T0
        )
    store.close()
    assert record.customer == "acme"
    assert token.encode() not in (store_dir / "tripline.db").read_bytes()

    code, out, _ = run(capsys, "tokens", "list", "--data-dir", store_dir)
    assert code == 0
    assert out.split()[:3] == ["1", "acme", "active"]


@pytest.mark.parametrize("customer", ["", " acme"])
def test_tokens_create_with_a_bad_customer(
    store_dir: Path, capsys: pytest.CaptureFixture[str], customer: str
) -> None:
    code, out, err = run(
        capsys, "tokens", "create", "--customer", customer, "--data-dir", store_dir
    )
    assert (code, out) == (2, "")
    assert err == (
        "tripline: --customer expects a customer name without surrounding spaces, "
        f"got {customer!r}\n"
    )


def test_tokens_create_with_an_agent_limit_and_expiry_shows_them_in_the_list(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "tokens",
        "create",
        "--customer",
        "acme",
        "--max-agents",
        "2",
        "--expires",
        "30d",
        "--data-dir",
        store_dir,
    )
    assert (code, err) == (0, "")
    heading, token = out.splitlines()
    assert heading.startswith("enrollment token for customer 'acme' (id 1, at most 2 agents, ")
    store = Store(f"sqlite:///{store_dir / 'tripline.db'}")
    with store.read() as conn:
        (record,) = enrollment.list_tokens(conn)
    assert record.max_agents == 2
    assert record.expires_at is not None and record.expires_at - time.time() > 29.9 * 86400
    with store.transaction() as conn:
        enrollment.enroll_agent(
            conn, token, hostname="pc-01", site="", inventory={}, now=time.time()
        )
    store.close()
    code, out, _ = run(capsys, "tokens", "list", "--data-dir", store_dir)
    assert code == 0
    assert out.split()[:5] == ["1", "acme", "active", "agents", "1/2"]


def test_tokens_generate_prints_a_strong_token_each_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tokens = set()
    for _ in range(3):
        code, out, err = run(capsys, "tokens", "generate")
        assert (code, err) == (0, "")
        token = out.strip()
        assert token.startswith("tle_") and entropy.estimate_bits(token) >= 128
        tokens.add(token)
    assert len(tokens) == 3


@pytest.mark.parametrize(
    "token", ["1234", "tle_1234", "a" * 64, "abc" * 30, "tle_acme_tls_integration"]
)
def test_collector_refuses_a_weak_enrollment_token_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], token: str
) -> None:
    code, out, err = run(
        capsys,
        "collector",
        "--data-dir",
        tmp_path,
        "--listen",
        "127.0.0.1:0",
        "--customer",
        f"acme={token}",
    )
    assert (code, out) == (2, "")
    assert "config key 'customers.acme': the token has about " in err
    assert "at least 128 are needed: make one with `tripline tokens generate`" in err
    assert token not in err  # the secret itself is never echoed
    assert list(tmp_path.iterdir()) == []  # refused before anything started


@pytest.mark.parametrize("value", ["acme", "=tle_x", "acme=", "acme= tle_x"])
def test_collector_customer_flag_with_a_bad_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    code, out, err = run(
        capsys, "collector", "--data-dir", tmp_path, "--listen", "127.0.0.1:0", "--customer", value
    )
    assert (code, out) == (2, "")
    assert err == f"tripline: --customer expects NAME=ENROLLMENT_TOKEN, got {value!r}\n"
    assert list(tmp_path.iterdir()) == []  # refused before anything started


def test_collector_bad_config_value(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "collector", "--data-dir", tmp_path, "--interval", "soon")
    assert code == 2
    assert err.startswith("tripline: command line: config key 'interval': expected a duration")


def _open_ticket(store_dir: Path) -> int:
    store = Store(f"sqlite:///{store_dir / 'tripline.db'}")
    with store.transaction() as conn:
        _, token = enrollment.create_token(conn, "acme", now=T0)
    with store.transaction() as conn:
        agent, _ = enrollment.enroll_agent(
            conn, token, hostname="pc-01", site="hq", inventory={}, now=T0
        )
    with store.transaction() as conn:
        change = tickets.on_alert_firing(
            conn,
            customer="acme",
            agent_id=agent.agent_id,
            hostname="pc-01",
            rule="FilesystemAlmostFull",
            labels=(("mountpoint", "C:\\"),),
            severity="warning",
            tier=1,
            summary="pc-01: C:\\ is 97% full",
            runbook="Empty the recycle bin.",
            value=0.97,
            threshold=0.9,
            context={
                "top_cpu": [{"pid": 4242, "name": "backup.exe", "cpu_ratio": 0.71}],
                "filesystems": [{"mountpoint": "C:\\", "used_ratio": 0.97}],
            },
            now=T0,
            policy=TicketPolicy(),
        )
    store.close()
    return change.ticket_id


def test_tickets_list_show_ack(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tickets", "list", "--data-dir", store_dir)
    assert (code, out) == (0, "no tickets\n")
    ticket_id = _open_ticket(store_dir)

    code, out, _ = run(capsys, "tickets", "list", "--data-dir", store_dir)
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == ["ID", "STATUS", "SEV", "TIER", "CUSTOMER", "HOST", "SUMMARY"]
    assert row.split()[:6] == [str(ticket_id), "open", "warning", "1", "acme", "pc-01"]
    assert row.endswith("pc-01: C:\\ is 97% full")

    code, out, _ = run(capsys, "tickets", "list", "--json", "--data-dir", store_dir)
    listed = json.loads(out)
    assert [(t["id"], t["status"], t["labels"]) for t in listed] == [
        (ticket_id, "open", {"mountpoint": "C:\\"})
    ]
    code, out, _ = run(capsys, "tickets", "list", "--customer", "globex", "--data-dir", store_dir)
    assert out == "no tickets\n"

    code, out, _ = run(capsys, "tickets", "show", ticket_id, "--data-dir", store_dir)
    assert code == 0
    assert f"Ticket #{ticket_id}  [open]  warning  tier 1" in out
    assert "runbook: Empty the recycle bin." in out
    assert "backup.exe" in out
    # a share of one core (0..cpu_count), not a percentage of the machine
    assert "0.71 cores  backup.exe" in out
    assert "opened       by tripline" in out

    code, out, _ = run(
        capsys, "tickets", "ack", ticket_id, "--actor", "bob", "--json", "--data-dir", store_dir
    )
    assert code == 0
    acked = json.loads(out)
    assert (acked["status"], acked["acknowledged_by"]) == ("acknowledged", "bob")
    assert [e["kind"] for e in acked["events"]] == ["opened", "acknowledged"]


def test_tickets_show_unknown_id(store_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "tickets", "show", "999", "--data-dir", store_dir)
    assert (code, out, err) == (2, "", "tripline: no ticket 999\n")


def test_tickets_resolve_twice_says_why(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ticket_id = _open_ticket(store_dir)
    code, _, _ = run(
        capsys, "tickets", "resolve", ticket_id, "--actor", "bob", "--data-dir", store_dir
    )
    assert code == 0
    code, _, err = run(capsys, "tickets", "resolve", ticket_id, "--data-dir", store_dir)
    assert code == 2
    assert err.startswith(f"tripline: cannot resolve ticket {ticket_id}: ")


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["tickets", "frobnicate"])
    assert exited.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


# -- the agent's one-shot snapshot, as a real process -----------------------------------


def test_agent_once_json_prints_a_snapshot() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLINE_")}
    result = subprocess.run(
        [sys.executable, "-m", "tripline.collector.cli", "agent", "--once", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    snapshot = json.loads(result.stdout)
    samples = {
        (s["name"], tuple(sorted(s["labels"].items()))): s["value"] for s in snapshot["samples"]
    }
    assert samples[("memory_total_bytes", ())] > 0
    assert 0.0 <= samples[("memory_used_ratio", ())] <= 1.0
    assert ("cpu_usage_ratio", ()) in samples
    assert snapshot["host"]["hostname"]
    assert snapshot["collected_at"] > T0


# -- hostile stored values reach the terminal escaped --------------------------------

FORGED_HOST = "pc-01\n| 99 | open | critical | fake row"
OSC52 = "\x1b]52;c;cm0gLXJmIH4K\x07"  # writes "rm -rf ~" into the operator's clipboard
C1_CSI = "\x9b31m"
BIDI = "\u202etxt.exe"


def _forge(store_dir: Path) -> int:
    """A real ticket and agent, then odd values written straight into the SQLite file, as
    a buggy or older collector, a hand edit or a hostile agent could leave them."""
    ticket_id = _open_ticket(store_dir)
    db = sqlite3.connect(store_dir / "tripline.db")
    with db:
        db.execute(
            "UPDATE tickets SET hostname = ?, summary = ?, customer = ?, labels = ?, "
            "runbook = ?, value = 'nan', threshold = 9e999, opened_at = 1e300, "
            "context = ? WHERE id = ?",
            (
                FORGED_HOST,
                f"disk full {OSC52}\rOK",
                BIDI,
                json.dumps({"mountpoint": f"C:\\{C1_CSI}\x7f"}),
                "line one\n12:00:00 INFO    forged: log line",
                json.dumps("not an object"),
                ticket_id,
            ),
        )
        db.execute(
            "UPDATE ticket_events SET at = -1e18, actor = ?, message = ? WHERE ticket_id = ?",
            (f"bob{OSC52}", "note\x1b[2J\x1b[H", ticket_id),
        )
        db.execute("UPDATE agents SET hostname = ?, customer = ?", (FORGED_HOST + OSC52, BIDI))
    db.close()
    return ticket_id


RAW = ("\x1b", "\x07", "\x9b", "\x7f", "\r", "\u202e")


def _assert_escaped(out: str, rows: int) -> None:
    for char in RAW:
        assert char not in out, repr(char)
    assert len(out.splitlines()) == rows, out


def test_tickets_list_and_agents_list_escape_forged_rows_and_sequences(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _forge(store_dir)
    code, out, _ = run(capsys, "tickets", "list", "--data-dir", store_dir)
    assert code == 0
    _assert_escaped(out, rows=2)  # the header and one ticket, no forged row
    assert "pc-01\\n| 99 |" in out
    assert "disk full \\x1b]52;c;cm0gLXJmIH4K\\x07\\rOK" in out
    assert "\\u202etxt.ex" in out  # cut to the column

    code, out, _ = run(capsys, "agents", "list", "--data-dir", store_dir)
    assert code == 0
    _assert_escaped(out, rows=1)
    assert "pc-01\\n| 99 | open | critical | fake row\\x1b]52;c;" in out


def test_tickets_show_survives_odd_stored_values_and_escapes_them(store_dir: Path) -> None:
    ticket_id = _forge(store_dir)
    # the real command in its own process, as an operator runs it
    argv = [sys.executable, "-m", "tripline.collector.cli", "tickets", "show", str(ticket_id)]
    argv += ["--data-dir", str(store_dir)]
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRIPLINE_")},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for char in RAW:
        assert char not in out, repr(char)
    assert "host pc-01\\n| 99 | open" in out
    assert "value <nan> (threshold inf)" in out  # SQLite hands the text back
    assert "opened <1e+300>" in out
    assert "runbook: line one\\n12:00:00 INFO" in out
    assert "\\x9b31m\\x7f" in out
    assert "<-1e+18>  opened       by bob\\x1b]52;c;" in out
    assert "note\\x1b[2J\\x1b[H" in out
    assert not any(line.startswith("12:00:00") for line in out.splitlines())
