"""`tripline report`: a customer's service report, from the local store or a collector's API."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tripline.collector.cli.apiclient import ApiClient, api_client
from tripline.collector.cli.errors import CliError
from tripline.collector.cli.localstore import open_store

FORMATS = ("html", "json", "csv")  # report.FORMATS, without importing the store here


def register(sub: Any) -> None:
    """Add the `report` command to the `tripline` parser."""
    p = sub.add_parser(
        "report",
        help="a customer's service report for a period (HTML, JSON or CSV)",
        description="A customer's service report: fleet, tickets, what to plan. "
        "Dates are UTC days; --to is the first day not included.",
    )
    p.add_argument("--customer", required=True)
    p.add_argument("--from", dest="first", required=True, metavar="YYYY-MM-DD")
    p.add_argument("--to", dest="until", required=True, metavar="YYYY-MM-DD")
    p.add_argument("--format", choices=FORMATS, default="html")
    p.add_argument("--output", type=Path, help="write here instead of standard output")
    p.add_argument("--config", type=Path, help="YAML config file (flags win over it)")
    p.add_argument("--data-dir", type=Path, help="collector data directory")
    p.add_argument("--database-url", help="store URL instead of the data dir's SQLite")
    p.add_argument("--api-url", help="a running collector's HTTP address (env TRIPLINE_API_URL)")
    p.add_argument("--api-token", help="prefer env TRIPLINE_API_TOKEN (not shown by ps)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    # Imported here: the agent's commands must not pay for SQLAlchemy or Jinja2.
    from tripline.alerts.rules import default_rules, load_rules
    from tripline.collector import report
    from tripline.collector.config import load_collector_config

    try:
        period = report.parse_period(args.first, args.until)
    except report.ReportPeriodError as exc:
        raise CliError(str(exc)) from None
    api = api_client(args)
    if api is not None:
        text = _via_api(api, args)
    else:
        config = load_collector_config(
            args.config, flags={"data_dir": args.data_dir, "database_url": args.database_url}
        )
        rules = default_rules() if config.rules is None else load_rules(config.rules)
        with open_store(args) as store, store.read() as conn:
            if not report.customer_known(conn, args.customer):
                raise CliError(f"no agent or ticket of customer {args.customer!r} in the store")
            built = report.build_report(
                conn,
                args.customer,
                period,
                memory_rules=report.memory_rule_names(rules),
                gap=config.effective_offline_after,
                now=time.time(),
            )
        text = report.render(built, args.format)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _via_api(api: ApiClient, args: argparse.Namespace) -> str:
    params = {"from": args.first, "to": args.until, "format": args.format}
    return api.text(f"/reports/{quote(args.customer, safe='')}", params=params)
