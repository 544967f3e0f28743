"""`tripline tokens`: customers' enrollment tokens (the secret an agent enrolls with)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from tripline.collector.cli.errors import CliError
from tripline.collector.cli.localstore import open_store
from tripline.collector.cli.options import is_name, store_flags
from tripline.collector.cli.printing import fmt_time
from tripline.common.terminal import cell


def register(sub: Any) -> None:
    to = sub.add_parser("tokens", help="customers' enrollment tokens")
    tosub = to.add_subparsers(dest="tokens_cmd", required=True)
    tc = tosub.add_parser("create")
    tc.add_argument("--customer", required=True)
    tc.add_argument("--expires-in", "--expires", dest="expires_in", help="e.g. 30d")
    tc.add_argument(
        "--max-agents", type=int, help="agents (not revoked) it may enroll (default: no limit)"
    )
    tls = tosub.add_parser("list")
    tls.add_argument("--customer")
    tr = tosub.add_parser("revoke")
    tr.add_argument("id", type=int)
    for tp in tosub.choices.values():
        store_flags(tp)
        tp.set_defaults(func=cmd_tokens)
    tg = tosub.add_parser(
        "generate", help="print a strong token (256 random bits) for --customer NAME=TOKEN"
    )
    tg.set_defaults(func=cmd_tokens)


def cmd_tokens(args: argparse.Namespace) -> int:
    from tripline.collector import enrollment, entropy
    from tripline.common.durations import parse_duration

    if args.tokens_cmd == "generate":
        # Nothing stored: for --customer NAME=TOKEN and `customers:` in the config file.
        print(entropy.generate())
        return 0
    now = time.time()
    with open_store(args) as store:
        if args.tokens_cmd == "create":
            if not is_name(args.customer):
                raise CliError(
                    "--customer expects a customer name without surrounding spaces, "
                    f"got {args.customer!r}"
                )
            expires = None
            if args.expires_in:
                try:
                    expires = now + parse_duration(args.expires_in)
                except ValueError as exc:
                    raise CliError(f"--expires-in: {exc}") from None
            if args.max_agents is not None and args.max_agents < 1:
                raise CliError(f"--max-agents must be at least 1, got {args.max_agents}")
            with store.transaction() as conn:
                record, token = enrollment.create_token(
                    conn, args.customer, now, expires, max_agents=args.max_agents
                )
            limits = []
            if record.max_agents is not None:
                limits.append(f"at most {record.max_agents} agents")
            if record.expires_at is not None:
                limits.append(f"expires {fmt_time(record.expires_at)}")
            print(
                f"enrollment token for customer {record.customer!r} (id {record.id}"
                f"{''.join(', ' + limit for limit in limits)}), shown once:"
            )
            print(token)
            return 0
        if args.tokens_cmd == "revoke":
            with store.transaction() as conn:
                enrollment.revoke_token(conn, args.id, now)
            print(f"token {args.id} revoked")
            return 0
        with store.read() as conn:
            enrolled = enrollment.agents_per_token(conn)
            tokens = enrollment.list_tokens(conn, args.customer)
        for t in tokens:
            state = "revoked" if t.revoked_at else "active"
            if t.revoked_at is None and t.expires_at is not None and t.expires_at <= now:
                state = "expired"
            count = enrolled.get(t.id, 0)
            agents = f"{count}/{t.max_agents}" if t.max_agents is not None else f"{count}/-"
            print(
                f"{t.id:>4}  {cell(t.customer, 20)} {state:<8} agents {agents:<9}"
                f" created {fmt_time(t.created_at)}  expires {fmt_time(t.expires_at)}"
            )
    return 0
