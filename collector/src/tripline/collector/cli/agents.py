"""`tripline agents`: the enrolled agents, and revoking one."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from tripline.collector.cli import snapshots
from tripline.collector.cli.localstore import open_store
from tripline.collector.cli.options import store_flags
from tripline.collector.cli.printing import fmt_time
from tripline.common.terminal import cell, escape


def register(sub: Any) -> None:
    agp = sub.add_parser("agents", help="enrolled agents")
    asub = agp.add_subparsers(dest="agents_cmd", required=True)
    al = asub.add_parser("list")
    al.add_argument("--customer")
    al.add_argument("--json", action="store_true")
    ar = asub.add_parser("revoke")
    ar.add_argument("agent_id")
    for tp in asub.choices.values():
        store_flags(tp)
        tp.set_defaults(func=cmd_agents)
    snapshots.register(asub)


def cmd_agents(args: argparse.Namespace) -> int:
    from tripline.collector import agents_store  # here: only this command pays for SQLAlchemy

    with open_store(args) as store:
        if args.agents_cmd == "revoke":
            with store.transaction() as conn:
                agents_store.revoke_agent(conn, args.agent_id, time.time())
            print(f"agent {args.agent_id} revoked; it is refused on its next message")
            return 0
        with store.read() as conn:
            agents = agents_store.list_agents(conn, args.customer)
        if args.json:
            print(json.dumps([a.__dict__ for a in agents], indent=2, default=str))
            return 0
        for a in agents:
            state = "revoked" if a.revoked_at else "active"
            print(
                f"{escape(a.agent_id)}  {cell(a.customer, 16)} {cell(a.hostname, 24)} {state:<8}"
                f" last seen {fmt_time(a.last_seen_at)}"
            )
    return 0
