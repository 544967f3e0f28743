"""`tripline tickets` through its two implementations of one interface: the data dir
(LocalTickets) and a running collector's HTTP API (HttpTickets). The same commands on
two like tickets must leave the same history, so neither path can drift from the other.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import running_collector
from tripline.collector import apitokens, enrollment, tickets
from tripline.collector.cli import main
from tripline.collector.store import Store
from tripline.collector.ticketmodel import TicketPolicy


@pytest.fixture(autouse=True)
def _no_tripline_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("TRIPLINE_"):
            monkeypatch.delenv(name)


def _open(store: Store, agent_id: str, mountpoint: str) -> int:
    with store.transaction() as conn:
        change = tickets.on_alert_firing(
            conn,
            customer="acme",
            agent_id=agent_id,
            hostname="pc-01",
            rule="FilesystemAlmostFull",
            labels=(("mountpoint", mountpoint),),
            severity="warning",
            tier=1,
            summary=f"pc-01: {mountpoint} is 97% full",
            runbook=None,
            value=0.97,
            threshold=0.9,
            context={},
            now=time.time(),
            policy=TicketPolicy(),
        )
    return change.ticket_id


def _history(ticket: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(e["kind"], e["actor"], e["message"]) for e in ticket["events"]]


def test_each_ticket_command_does_the_same_locally_and_through_the_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        data_dir = tmp_path / "collector"
        async with running_collector(data_dir) as app:
            store = app.store
            with store.transaction() as conn:
                _, secret = enrollment.create_token(conn, "acme", now=time.time())
            with store.transaction() as conn:
                agent, _ = enrollment.enroll_agent(
                    conn, secret, hostname="pc-01", site="hq", inventory={}, now=time.time()
                )
            local_id = _open(store, agent.agent_id, "C:\\")
            api_id = _open(store, agent.agent_id, "D:\\")
            with store.transaction() as conn:
                _, secret = apitokens.create_token(conn, "ops", None, actor="test", now=0.0)
            monkeypatch.setenv("TRIPLINE_API_TOKEN", secret)
            where = {
                local_id: ("--data-dir", str(data_dir)),
                api_id: ("--api-url", f"http://127.0.0.1:{app.http_port}"),
            }

            def cli(ticket_id: int, *argv: str) -> tuple[int, str, str]:
                command = [argv[0], str(ticket_id), *argv[1:], *where[ticket_id]]
                if ticket_id == local_id and argv[0] != "show":
                    command += ["--actor", "ops"]  # through the API: the token's name
                code = main(["tickets", *command])
                out, err = capsys.readouterr()
                return code, out, err

            shown = {}
            for ticket_id in (local_id, api_id):
                for step in (
                    ("tier", "3"),
                    ("ack",),
                    ("comment", "called the customer"),
                    ("resolve", "--note", "disk cleaned"),
                ):
                    code, out, err = await asyncio.to_thread(cli, ticket_id, *step)
                    assert (code, err) == (0, ""), step
                    assert f"Ticket #{ticket_id}  [" in out
                # refused alike: a resolved ticket keeps its tier
                code, out, err = await asyncio.to_thread(cli, ticket_id, "tier", "1")
                assert (code, out) == (2, "")
                assert f"cannot change the tier of ticket {ticket_id}: it is resolved" in err
                code, out, _ = await asyncio.to_thread(cli, ticket_id, "show", "--json")
                shown[ticket_id] = json.loads(out)

            local, api = shown[local_id], shown[api_id]
            assert (local["status"], local["tier"]) == ("resolved", 3)
            assert (api["status"], api["tier"]) == ("resolved", 3)
            assert [e["kind"] for e in local["events"]][:1] == ["opened"]
            expected = [
                ("escalated", "ops", "tier 1 -> 3 by ops"),
                ("acknowledged", "ops", "acknowledged by ops"),
                ("commented", "ops", "called the customer"),
                ("resolved", "ops", "disk cleaned"),
            ]
            assert _history(local)[1:] == _history(api)[1:] == expected

    asyncio.run(scenario())


def test_tickets_tier_takes_one_two_or_three(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["tickets", "tier", "1", "4", "--data-dir", "nowhere"])
    assert exited.value.code == 2
    assert "argument TIER: invalid choice: 4 (choose from 1, 2, 3)" in capsys.readouterr().err
