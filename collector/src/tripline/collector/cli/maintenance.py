"""`tripline maintenance`: windows in which alerts are held back instead of ticketed."""

from __future__ import annotations

import argparse
import getpass
import time
from typing import TYPE_CHECKING, Any

from tripline.collector.cli.errors import CliError
from tripline.collector.cli.localstore import open_store
from tripline.collector.cli.options import store_flags
from tripline.collector.cli.printing import fmt_time, print_json
from tripline.common.terminal import cell, escape

if TYPE_CHECKING:
    from tripline.collector.maintenance import MaintenanceWindow
    from tripline.collector.store import Store


def register(sub: Any) -> None:
    mw = sub.add_parser("maintenance", help="maintenance windows (alerts held back)")
    msub = mw.add_subparsers(dest="maintenance_cmd", required=True)
    ma = msub.add_parser("add", help="add a window: a scope and one schedule")
    for scope in ("customer", "site", "agent", "rule"):
        ma.add_argument(f"--{scope}", help=f"only alerts of this {scope} (all given must match)")
    ma.add_argument("--start", help="one-time: start, e.g. '2024-03-04 18:00' (default: now)")
    ma.add_argument("--end", help="one-time: end, e.g. '2024-03-04 20:00'")
    ma.add_argument("--for", dest="length", help="one-time: length instead of --end, e.g. 2h")
    ma.add_argument("--weekly", help="recurring, e.g. 'Mon-Fri 18:00-08:00', 'Fri 18:00-Mon 06:00'")
    ma.add_argument("--cron", help="recurring starts, e.g. '0 2 * * Sun' (with --duration)")
    ma.add_argument("--duration", help="with --cron: each window's length, e.g. 2h")
    ma.add_argument(
        "--tz", help="IANA time zone of the times given (required for --weekly and --cron)"
    )
    ma.add_argument("--comment", default="", help="why, for the people reading the list")
    ma.add_argument("--actor", help="who (default: your login name)")
    ml = msub.add_parser("list", help="windows that are active or still to come")
    ml.add_argument("--customer")
    ml.add_argument("--all", action="store_true", help="include one-time windows that ended")
    md = msub.add_parser("delete", help="delete a window; alerts it held back then open tickets")
    md.add_argument("id", type=int)
    for tp in msub.choices.values():
        store_flags(tp)
        tp.add_argument("--json", action="store_true")
        tp.set_defaults(func=cmd_maintenance)


def cmd_maintenance(args: argparse.Namespace) -> int:
    from tripline.alerts import calendar
    from tripline.collector import maintenance

    now = time.time()
    with open_store(args) as store:
        try:
            if args.maintenance_cmd == "add":
                windows = [_add_window(args, store, now)]
            elif args.maintenance_cmd == "delete":
                with store.transaction() as conn:
                    windows = [maintenance.delete_window(conn, args.id)]
            else:
                with store.read() as conn:
                    windows = maintenance.list_windows(
                        conn,
                        customers=[args.customer] if args.customer else None,
                        current_after=None if args.all else now,
                    )
        except (maintenance.MaintenanceError, calendar.CalendarError) as exc:
            raise CliError(str(exc)) from None
    if args.json:
        listed = [w.to_dict() for w in windows]
        print_json(listed if args.maintenance_cmd == "list" else listed[0])
        return 0
    if args.maintenance_cmd == "delete":
        print(f"maintenance window {windows[0].id} deleted")
        return 0
    if not windows:
        print("no maintenance windows")
    for window in windows:
        print(_window_line(window, now))
    return 0


def _moment(text: str, tz: str | None, flag: str) -> float:
    """ISO 8601 date and time; without an offset it is read in `tz`, else local time."""
    from datetime import datetime

    from tripline.alerts import calendar

    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        why = f"expected a date and time like '2024-03-04 18:00', got {text!r}"
        raise CliError(f"{flag}: {why}") from None
    if moment.tzinfo is None and tz is not None:
        moment = moment.replace(tzinfo=calendar.zone(tz))
    # naive and no --tz: timestamp() reads it as this machine's local time
    return moment.timestamp()


def _window_line(window: MaintenanceWindow, now: float) -> str:
    scope = " ".join(
        f"{name}={getattr(window, name)}"
        for name in ("customer", "site", "agent_id", "rule")
        if getattr(window, name) is not None
    )
    if window.kind == "once":
        schedule = f"{fmt_time(window.starts_at)} .. {fmt_time(window.ends_at)}"
    elif window.kind == "weekly":
        schedule = f"weekly {window.weekly!r} {window.timezone}"
    else:
        schedule = f"cron {window.cron!r} for {window.duration:g}s {window.timezone}"
    comment = f"  # {escape(window.comment)}" if window.comment else ""
    return f"{window.id:>4}  {window.status(now):<9} {cell(scope, 36)} {escape(schedule)}{comment}"


def _add_window(args: argparse.Namespace, store: Store, now: float) -> MaintenanceWindow:
    from tripline.collector import maintenance
    from tripline.common.durations import parse_duration

    def duration(text: str, flag: str) -> float:
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise CliError(f"{flag}: {exc}") from None

    schedule: dict[str, Any] = {}
    one_time = args.start is not None or args.end is not None or args.length is not None
    if sum(map(bool, (one_time, args.weekly, args.cron))) != 1:
        raise CliError("give one schedule: --start/--end (or --for), --weekly, or --cron")
    if one_time:
        start = now if args.start is None else _moment(args.start, args.tz, "--start")
        if (args.end is None) == (args.length is None):
            raise CliError("a one-time window needs --end or --for")
        end = (
            start + duration(args.length, "--for")
            if args.length is not None
            else _moment(args.end, args.tz, "--end")
        )
        schedule = {"starts_at": start, "ends_at": end}
    else:
        if args.tz is None:
            raise CliError("--weekly and --cron need --tz, the zone of their wall times")
        schedule = {"timezone": args.tz}
        if args.weekly:
            schedule["weekly"] = args.weekly
        else:
            if args.duration is None:
                raise CliError("--cron needs --duration, e.g. --duration 2h")
            schedule["cron"] = args.cron
            schedule["duration"] = duration(args.duration, "--duration")
    with store.transaction() as conn:
        return maintenance.create_window(
            conn,
            actor=args.actor or getpass.getuser(),
            now=now,
            customer=args.customer,
            site=args.site,
            agent_id=args.agent,
            rule=args.rule,
            comment=args.comment,
            **schedule,
        )
