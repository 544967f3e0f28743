"""`tripline api-tokens`: operators' tokens for the HTTP API."""

from __future__ import annotations

import argparse
import getpass
import time
from typing import Any

from tripline.collector.cli.errors import CliError
from tripline.collector.cli.localstore import open_store
from tripline.collector.cli.options import store_flags
from tripline.collector.cli.printing import fmt_time, print_json
from tripline.common.terminal import cell


def register(sub: Any) -> None:
    apt = sub.add_parser("api-tokens", help="operators' HTTP API tokens")
    aptsub = apt.add_subparsers(dest="api_tokens_cmd", required=True)
    aptc = aptsub.add_parser("create")
    aptc.add_argument("--name", required=True, help="who the token's changes are recorded as")
    aptc.add_argument(
        "--customer",
        action="append",
        help="a customer the token may see (repeatable; none: all customers)",
    )
    aptl = aptsub.add_parser("list")
    aptl.add_argument("--json", action="store_true")
    aptr = aptsub.add_parser("revoke")
    aptr.add_argument("id", type=int)
    for tp in aptsub.choices.values():
        store_flags(tp)
        tp.set_defaults(func=cmd_api_tokens)


def cmd_api_tokens(args: argparse.Namespace) -> int:
    from tripline.collector import apitokens

    now = time.time()
    actor = getpass.getuser()
    with open_store(args) as store:
        try:
            if args.api_tokens_cmd == "create":
                with store.transaction() as conn:
                    token, secret = apitokens.create_token(
                        conn, args.name, args.customer, actor=actor, now=now
                    )
                scope = ", ".join(token.customers) if token.customers else "all customers"
                print(f"API token {token.name!r} (id {token.id}) for {scope}, shown once:")
                print(secret)
                return 0
            if args.api_tokens_cmd == "revoke":
                with store.transaction() as conn:
                    token = apitokens.revoke_token(conn, args.id, actor=actor, now=now)
                print(f"API token {token.id} ({token.name!r}) revoked")
                return 0
            with store.read() as conn:
                found = apitokens.list_tokens(conn)
        except (apitokens.ApiTokenError, ValueError) as exc:
            raise CliError(str(exc)) from None
    if args.json:
        print_json([t.to_dict() for t in found])
        return 0
    for t in found:
        state = "revoked" if t.revoked_at else "active"
        scope = ",".join(t.customers) if t.customers else "*"
        print(
            f"{t.id:>4}  {cell(t.name, 24)} {state:<8} {cell(scope, 24)}"
            f" created {fmt_time(t.created_at)}"
        )
    return 0
