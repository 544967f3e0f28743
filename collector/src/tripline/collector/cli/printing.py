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
    print_snapshot(d.get("snapshot"), d.get("snapshot_taken_at"))
    print_previously(d.get("previously"))
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


def fmt_duration(seconds: Any) -> str:
    """Seconds as its two largest units (3h5m); '?' for what a broken row holds."""
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
        f"{indent}snapshot taken {fmt_time(taken_at)}:"
        f" cpu {fmt_num(snapshot.get('cpu_usage_ratio'), '.0%')}"
        f"  memory {fmt_num(snapshot.get('memory_used_ratio'), '.0%')}"
        f"  up {fmt_duration(snapshot.get('uptime_seconds'))}"
        f"  {e(snapshot.get('processes'))} processes"
    )
    users = snapshot.get("logged_in_users")
    if isinstance(users, list) and users:
        print(f"{indent}  users: {', '.join(e(u) for u in users)}")
    span = fmt_num(snapshot.get("cpu_span_seconds"), ".1f")
    for title, key in ((f"top CPU (over {span}s)", "top_cpu"), ("top memory", "top_memory")):
        rows = dicts(snapshot.get(key))
        if not rows:
            continue
        print(f"{indent}  {title}:")
        for p in rows:
            mib = (
                fmt_num((p.get("memory_rss_bytes") or 0) / 2**20, "7.0f")
                if isinstance(p.get("memory_rss_bytes"), int | float)
                else "      ?"
            )
            print(
                f"{indent}    {cell(p.get('pid', ''), 7)} {fmt_num(p.get('cpu_ratio', 0), '5.2f')}"
                f" cores {mib} MiB  {cell(p.get('username', ''), 12, cut=True)}"
                f" {e(p.get('name', ''))}: {e(p.get('cmdline', ''))[:160]}"
            )
    filesystems = dicts(snapshot.get("filesystems"))
    if filesystems:
        print(f"{indent}  filesystems:")
        for f in filesystems:
            print(
                f"{indent}    {cell(f.get('mountpoint', ''), 24)}"
                f" {fmt_num(f.get('used_ratio', 0), '6.1%')} used"
            )


def print_previously(previously: Any, indent: str = "  ") -> None:
    """The earlier tickets of the rule and how they ended; nothing when there are none."""
    if not isinstance(previously, dict):
        return
    earlier = dicts(previously.get("tickets"))
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
            f"{indent}  #{escape(t.get('id'))}{host} {fmt_time(t.get('resolved_at'))} {who}"
            f" after {fmt_duration(t.get('took_seconds'))}{note}"
        )
