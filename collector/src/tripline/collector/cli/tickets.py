"""`tripline tickets`: the ticket queue, from the data dir or a running collector's API."""

from __future__ import annotations

import argparse
import time
from typing import Any

from tripline.collector.cli.apiclient import api_client, api_flags
from tripline.collector.cli.localstore import open_store
from tripline.collector.cli.options import store_flags
from tripline.collector.cli.printing import print_json, print_ticket, print_ticket_rows
from tripline.collector.cli.ticketclient import HttpTickets, LocalTickets, TicketClient


def register(sub: Any) -> None:
    tk = sub.add_parser("tickets", help="the ticket queue")
    tsub = tk.add_subparsers(dest="tickets_cmd", required=True)
    tl = tsub.add_parser("list")
    tl.add_argument("--status", choices=["open", "acknowledged", "resolved"])
    tl.add_argument("--customer")
    tl.add_argument("--limit", type=int, default=100)
    for name, extra in (("show", None), ("ack", None), ("comment", "text"), ("resolve", "note")):
        tp = tsub.add_parser(name)
        tp.add_argument("id", type=int)
        if extra == "text":
            tp.add_argument("text")
        if name != "show":
            tp.add_argument("--actor", help="who (default: your login name)")
        if extra == "note":
            tp.add_argument("--note")
    tt = tsub.add_parser("tier", help="move an unresolved ticket to another tier")
    tt.add_argument("id", type=int)
    tt.add_argument("tier", type=int, choices=[1, 2, 3], metavar="TIER", help="1, 2 or 3")
    tt.add_argument("--actor", help="who (default: your login name)")
    for tp in tsub.choices.values():
        store_flags(tp)
        tp.add_argument("--json", action="store_true")
        api_flags(
            tp,
            help_url="a running collector's HTTP address instead of the data dir, "
            "e.g. http://127.0.0.1:7701 (env TRIPLINE_API_URL)",
            help_token="API token for --api-url; prefer env TRIPLINE_API_TOKEN (not shown by ps)",
        )
        tp.set_defaults(func=cmd_tickets)


def cmd_tickets(args: argparse.Namespace) -> int:
    api = api_client(args)
    if api is not None:
        return run(args, HttpTickets(api))
    with open_store(args) as store:
        return run(args, LocalTickets(store, time.time()))


def run(args: argparse.Namespace, client: TicketClient) -> int:
    """One `tickets` command against either implementation."""
    if args.tickets_cmd == "list":
        rows = client.list(status=args.status, customer=args.customer, limit=args.limit)
        print_ticket_rows(rows, args.json)
        return 0
    actor = getattr(args, "actor", None)
    if args.tickets_cmd == "show":
        ticket = client.show(args.id)
    elif args.tickets_cmd == "ack":
        ticket = client.ack(args.id, actor=actor)
    elif args.tickets_cmd == "comment":
        ticket = client.comment(args.id, args.text, actor=actor)
    elif args.tickets_cmd == "tier":
        ticket = client.tier(args.id, args.tier, actor=actor)
    else:
        ticket = client.resolve(args.id, args.note, actor=actor)
    if args.json:
        print_json(ticket)
    else:
        print_ticket(ticket)
    return 0
