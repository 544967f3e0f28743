"""``tripline agents snapshot AGENT``: what a connected agent sees now (printing.py prints it).

A snapshot comes from the running collector that holds the agent's stream, so the
command goes through its HTTP API (``--api-url`` / TRIPLINE_API_URL and an API token).
Every value printed came from an agent or the store: escaped before a terminal sees it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import quote

from tripline.collector.cli.apiclient import api_client
from tripline.collector.cli.errors import CliError
from tripline.collector.cli.printing import print_snapshot
from tripline.common.terminal import escape

# The API waits up to snapshot_timeout (default 10 s) for the agent.
HTTP_TIMEOUT = 60.0


def register(sub: Any) -> None:
    """Add ``snapshot`` to the ``tripline agents`` sub-commands."""
    sp = sub.add_parser(
        "snapshot", help="ask a connected agent what is happening now (through the API)"
    )
    sp.add_argument("agent_id")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--api-url", help="the running collector's HTTP address (env TRIPLINE_API_URL)")
    sp.add_argument("--api-token", help="prefer env TRIPLINE_API_TOKEN (not shown by ps)")
    sp.set_defaults(func=cmd_snapshot, data_dir=None, database_url=None)


def cmd_snapshot(args: argparse.Namespace) -> int:
    api = api_client(args)
    if api is None:
        raise CliError(
            "a snapshot comes from the running collector: give --api-url (or set "
            "TRIPLINE_API_URL) and an API token (TRIPLINE_API_TOKEN)"
        )
    data = api.call(
        "POST", f"/agents/{quote(args.agent_id, safe='')}/snapshot", body={}, timeout=HTTP_TIMEOUT
    )
    if not isinstance(data, dict):
        raise CliError("the collector API answered with no snapshot")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"agent {escape(data.get('agent_id'))}  host {escape(data.get('hostname'))}")
    print_snapshot(data.get("snapshot"), data.get("taken_at"))
    return 0
