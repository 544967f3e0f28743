"""``tripline agents snapshot AGENT``, and how a snapshot and "previously" print.

A snapshot comes from the running collector that holds the agent's stream, so the
command goes through its HTTP API (``--api-url`` / TRIPLINE_API_URL and an API token).
Every value printed came from an agent or the store: escaped before a terminal sees it.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any
from urllib.parse import quote

from tripline.common.terminal import cell, escape

# The API waits up to snapshot_timeout (default 10 s) for the agent.
HTTP_TIMEOUT = 60.0


def _num(value: Any, spec: str) -> str:
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return f"<{escape(value)}>"


def _when(ts: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    except (OverflowError, OSError, ValueError, TypeError):
        return f"<{escape(ts)}>"


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or seconds != seconds or seconds < 0:
        return "?"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [f"{n}{u}" for n, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts[:2]) or "0s"


def print_snapshot(snapshot: Any, taken_at: Any, indent: str = "  ") -> None:
    """The snapshot as a few lines; nothing when there is none."""
    if not isinstance(snapshot, dict):
        return
    e = escape
    print(
        f"{indent}snapshot taken {_when(taken_at)}:"
        f" cpu {_num(snapshot.get('cpu_usage_ratio'), '.0%')}"
        f"  memory {_num(snapshot.get('memory_used_ratio'), '.0%')}"
        f"  up {_duration(snapshot.get('uptime_seconds'))}"
        f"  {e(snapshot.get('processes'))} processes"
    )
    users = snapshot.get("logged_in_users")
    if isinstance(users, list) and users:
        print(f"{indent}  users: {', '.join(e(u) for u in users)}")
    span = _num(snapshot.get("cpu_span_seconds"), ".1f")
    for title, key in ((f"top CPU (over {span}s)", "top_cpu"), ("top memory", "top_memory")):
        rows = _dicts(snapshot.get(key))
        if not rows:
            continue
        print(f"{indent}  {title}:")
        for p in rows:
            mib = (
                _num((p.get("memory_rss_bytes") or 0) / 2**20, "7.0f")
                if isinstance(p.get("memory_rss_bytes"), int | float)
                else "      ?"
            )
            print(
                f"{indent}    {cell(p.get('pid', ''), 7)} {_num(p.get('cpu_ratio', 0), '5.2f')}"
                f" cores {mib} MiB  {cell(p.get('username', ''), 12, cut=True)}"
                f" {e(p.get('name', ''))}: {e(p.get('cmdline', ''))[:160]}"
            )
    filesystems = _dicts(snapshot.get("filesystems"))
    if filesystems:
        print(f"{indent}  filesystems:")
        for f in filesystems:
            print(
                f"{indent}    {cell(f.get('mountpoint', ''), 24)}"
                f" {_num(f.get('used_ratio', 0), '6.1%')} used"
            )


def print_previously(previously: Any, indent: str = "  ") -> None:
    """The earlier tickets of the rule and how they ended; nothing when there are none."""
    if not isinstance(previously, dict):
        return
    earlier = _dicts(previously.get("tickets"))
    if not earlier:
        return
    where = "this PC" if previously.get("scope") == "agent" else "this customer"
    print(f"{indent}previously on {where}:")
    for t in earlier:
        who = (
            "auto-resolved"
            if t.get("auto_resolved")
            else f"resolved by {escape(t.get('resolved_by'))}"
        )
        host = "" if previously.get("scope") == "agent" else f" on {escape(t.get('hostname'))}"
        note = f": {escape(t['note'])}" if t.get("note") else ""
        print(
            f"{indent}  #{escape(t.get('id'))}{host} {_when(t.get('resolved_at'))} {who}"
            f" after {_duration(t.get('took_seconds'))}{note}"
        )


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
    import httpx

    from tripline.collector.cli import CliError, _api_client

    api = _api_client(args)
    if api is None:
        raise CliError(
            "a snapshot comes from the running collector: give --api-url (or set "
            "TRIPLINE_API_URL) and an API token (TRIPLINE_API_TOKEN)"
        )
    url = f"{api.base}/agents/{quote(args.agent_id, safe='')}/snapshot"
    try:
        response = httpx.post(
            url, json={}, headers={"Authorization": f"Bearer {api.token}"}, timeout=HTTP_TIMEOUT
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the collector API at {api.base}: {exc}") from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code >= 400 or not isinstance(data, dict):
        error = data.get("error") if isinstance(data, dict) else response.text
        raise CliError(f"the collector API answered {response.status_code}: {escape(error)}")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"agent {escape(data.get('agent_id'))}  host {escape(data.get('hostname'))}")
    print_snapshot(data.get("snapshot"), data.get("taken_at"))
    return 0
