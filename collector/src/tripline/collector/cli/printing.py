"""How commands print stored values: every value came from an agent, a rule file, a
receiver or the store, so it is escaped before a terminal sees it, and a broken row is
shown as it is rather than crashing the command."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tripline.common.terminal import cell, escape


def fmt_time(ts: Any) -> str:
    """A stored time as local date and time; whatever a broken row holds (None, NaN,
    1e300, text) is shown as it is rather than crashing the command."""
    if ts is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    except (OverflowError, OSError, ValueError, TypeError):
        return f"<{escape(ts)}>"


def fmt_num(value: Any, spec: str) -> str:
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return f"<{escape(value)}>"


def dicts(value: Any) -> list[dict[str, Any]]:
    """The dict entries of a stored list; anything else in a broken row is skipped."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: Any) -> str:
    """Control characters (ESC, CR, LF...) as \\xNN: a receiver's error text or a ticket
    value must not drive the operator's terminal."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_ticket(d: dict[str, Any]) -> None:
    """One ticket with its context and timeline, as `tickets show` prints it."""
    e = escape
    print(
        f"Ticket #{e(d.get('id'))}  [{e(d.get('status'))}]  {e(d.get('severity'))}"
        f"  tier {e(d.get('tier'))}"
    )
    print(f"  {e(d.get('summary'))}")
    print(
        f"  customer {e(d.get('customer'))}  host {e(d.get('hostname'))}"
        f"  agent {e(d.get('agent_id'))}"
    )
    labels = d.get("labels")
    print(f"  rule {e(d.get('rule'))}  labels {e(json.dumps(labels, ensure_ascii=False))}")
    print(
        f"  value {fmt_num(d.get('value'), '.4g')}"
        f" (threshold {fmt_num(d.get('threshold'), '.4g')})"
        f"  opened {fmt_time(d.get('opened_at'))}"
    )
    if d.get("flapping"):
        print(f"  FLAPPING: reopened {e(d.get('reopen_count'))} times")
    if d.get("runbook"):
        print(f"  runbook: {e(d['runbook'])}")
    context = d.get("context")
    context = context if isinstance(context, dict) else {}
    top_cpu = dicts(context.get("top_cpu"))
    if top_cpu:
        print("  top processes by CPU:")
        for p in top_cpu:
            print(
                f"    {cell(p.get('pid', ''), 7)}  {fmt_num(p.get('cpu_ratio', 0), '5.2f')} cores"
                f"  {e(p.get('name', ''))}"
            )
    filesystems = dicts(context.get("filesystems"))
    if filesystems:
        print("  filesystems:")
        for f in filesystems:
            print(
                f"    {cell(f.get('mountpoint', ''), 24)} "
                f"{fmt_num(f.get('used_ratio', 0), '6.1%')} used"
            )
    print("  timeline:")
    for ev in dicts(d.get("events")):
        msg = f"  {e(ev['message'])}" if ev.get("message") else ""
        print(
            f"    {fmt_time(ev.get('at'))}  {cell(ev.get('kind'), 12)} by {e(ev.get('actor'))}{msg}"
        )


def print_ticket_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    """The ticket queue as a table, or as JSON with --json."""
    if as_json:
        print_json(rows)
        return
    if not rows:
        print("no tickets")
        return
    print(f"{'ID':>5}  {'STATUS':<12} {'SEV':<8} {'TIER':<4} {'CUSTOMER':<12} {'HOST':<18} SUMMARY")
    for t in rows:
        flag = " (flapping)" if t.get("flapping") else ""
        print(
            f"{escape(t['id']):>5}  {cell(t['status'], 12)} {cell(t['severity'], 8)} "
            f"{cell(t['tier'], 4)} {cell(t['customer'], 12, cut=True)} "
            f"{cell(t['hostname'], 18, cut=True)} "
            f"{escape(t['summary'])}{flag}"
        )


def print_parked(rows: list[dict[str, Any]], as_json: bool) -> None:
    """Parked deliveries as a table, oldest first, or as JSON with --json."""
    if as_json:
        print_json(rows)
        return
    if not rows:
        print("no parked deliveries")
        return
    print(f"{'ROUTE':<16} {'EVENT':>7}  {'KEY':<12} {'KIND':<12} {'CUSTOMER':<12} PARKED / ERROR")
    for r in rows:
        print(
            f"{printable(r['route'])[:16]:<16} {r['event_id']:>7}  "
            f"{r['idempotency_key']:<12} {r['kind']:<12} {printable(r['customer'])[:12]:<12} "
            f"{fmt_time(r['parked_at'])} after {r['attempts']} tries: "
            f"{printable(r['error'])[:200]}"
        )
