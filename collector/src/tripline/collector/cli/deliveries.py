"""`tripline deliveries`: ticket deliveries parked after their retries, and sending them
again, from the data dir or a running collector's API."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from tripline.collector.cli.apiclient import api_client, api_flags
from tripline.collector.cli.errors import CliError
from tripline.collector.cli.localstore import open_store
from tripline.collector.cli.options import store_flags
from tripline.collector.cli.printing import print_json, print_parked, printable


def register(sub: Any) -> None:
    dl = sub.add_parser("deliveries", help="ticket deliveries parked after their retries")
    dsub = dl.add_subparsers(dest="deliveries_cmd", required=True)
    dp = dsub.add_parser("parked", help="list parked events, oldest first")
    dp.add_argument("--route")
    dp.add_argument("--customer")
    dp.add_argument("--limit", type=int, default=100)
    dr = dsub.add_parser("retry", help="send parked events again (their route sends them next)")
    dr.add_argument("route")
    dr.add_argument("event_ids", type=int, nargs="+", metavar="EVENT_ID")
    for tp in dsub.choices.values():
        store_flags(tp)
        tp.add_argument("--json", action="store_true")
        api_flags(
            tp,
            help_url="a running collector's HTTP address (env TRIPLINE_API_URL)",
            help_token="prefer env TRIPLINE_API_TOKEN (not shown by ps)",
        )
        tp.set_defaults(func=cmd_deliveries)


def cmd_deliveries(args: argparse.Namespace) -> int:
    from tripline.collector import delivery_parking

    api = api_client(args)
    if args.deliveries_cmd == "parked":
        if api is not None:
            params = {"route": args.route, "customer": args.customer, "limit": args.limit}
            rows = api.call("GET", "/deliveries/parked", params=params)["items"]
        else:
            with open_store(args) as store, store.read() as conn:
                parked = delivery_parking.list_parked(
                    conn,
                    route=args.route,
                    customers=None if args.customer is None else [args.customer],
                    limit=args.limit,
                )
            rows = [p.to_dict() for p in parked]
        print_parked(rows, args.json)
        return 0
    retried: list[dict[str, Any]] = []
    for event_id in args.event_ids:
        if api is not None:
            path = f"/deliveries/parked/{quote(args.route, safe='')}/{event_id}/retry"
            retried.append(api.call("POST", path, body={}))
            continue
        try:
            # the collector sees the event pending at its next poll (a second at most)
            with open_store(args) as store, store.transaction() as conn:
                retried.append(delivery_parking.unpark(conn, args.route, event_id).to_dict())
        except delivery_parking.ParkedEventNotFound as exc:
            raise CliError(str(exc)) from None
    if args.json:
        print_json(retried)
    else:
        for r in retried:
            print(
                f"{printable(r['route'])} event {r['event_id']} ({r['idempotency_key']}): pending"
            )
    return 0
