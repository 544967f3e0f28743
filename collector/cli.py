"""The ``tripline`` command. The only place that exits the process or configures logging."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import secrets
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from alerts.rules import RuleFileError, load_rules
from collector import logs
from collector.config import (
    CollectorConfig,
    ConfigError,
    load_agent_config,
    load_collector_config,
)
from collector.store import StoreError

EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _customers(values: Sequence[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for value in values:
        name, sep, token = value.partition("=")
        if not sep or not _is_name(name) or not _is_name(token):
            raise CliError(f"--customer expects NAME=ENROLLMENT_TOKEN, got {value!r}")
        out[name] = token
    return out


def _is_name(text: str) -> bool:
    """Non-empty and without surrounding spaces, as the store requires of names and tokens."""
    return bool(text) and text == text.strip()


def _collector_config(args: argparse.Namespace) -> CollectorConfig:
    return load_collector_config(
        args.config,
        flags={
            "listen": args.listen,
            "http_listen": args.http_listen,
            "data_dir": args.data_dir,
            "database_url": args.database_url,
            "rules": args.rules,
            "customers": _customers(args.customer),
            "interval": args.interval,
            "offline_after": args.offline_after,
            "log_format": args.log_format,
        },
    )


# -- collector / agent / demo ----------------------------------------------------


def cmd_collector(args: argparse.Namespace) -> int:
    from collector.app import serve

    config = _collector_config(args)
    logs.configure(config.log_format, config.log_level)
    if config.rules is not None:
        load_rules(config.rules)  # fail at start, with the file's errors, not later
    asyncio.run(serve(config))
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    if args.once:
        return _agent_once(args.json)
    from agent.runner import AgentRunner
    from agent.transport import EnrollmentFailed

    config = load_agent_config(
        args.config,
        flags={
            "collector": args.collector,
            "enrollment_token": args.enrollment_token,
            "state_dir": args.state_dir,
            "interval": args.interval,
            "site": args.site,
            "log_format": args.log_format,
        },
    )
    logs.configure(config.log_format, config.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await AgentRunner(config).run(stop)

    try:
        asyncio.run(main())
    except EnrollmentFailed as exc:
        raise CliError(f"enrollment failed: {exc}") from None
    return 0


def _agent_once(as_json: bool) -> int:
    from agent import probes, render

    prober = probes.Prober()
    prober.collect(time.time())  # baseline: CPU ratios need two snapshots
    time.sleep(0.5)
    collection = prober.collect(time.time())
    inventory = probes.inventory()
    if as_json:
        print(render.render_json(collection, inventory))
    else:
        print(render.render_table(collection, inventory))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.runner import AgentRunner
    from collector.app import CollectorApp

    data_dir: Path = args.data_dir or Path("tripline-data")
    token_file = data_dir / "demo-enrollment-token"
    data_dir.mkdir(parents=True, exist_ok=True)
    if not token_file.exists():
        token_file.write_text("tle_demo_" + secrets.token_urlsafe(24))
        token_file.chmod(0o600)
    token = token_file.read_text().strip()
    rules_file = data_dir / "demo-rules.yaml"
    if not rules_file.exists():
        rules_file.write_text(_demo_rules())
    config = load_collector_config(
        args.config,
        flags={
            "listen": args.listen,
            "http_listen": args.http_listen,
            "data_dir": data_dir,
            "customers": {"demo": token},
            "rules": rules_file,
            "interval": args.interval or 5,
            "log_format": args.log_format or "text",
        },
    )
    logs.configure(config.log_format, config.log_level)
    agent_config = load_agent_config(
        None,
        environ={},
        flags={
            "collector": config.listen,
            "enrollment_token": token,
            "state_dir": data_dir / "agent",
            "interval": config.interval,
            "site": "demo-office",
        },
    )

    async def main() -> None:
        app = CollectorApp(config)
        await app.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, app.reload_rules)
        http = config.http_listen.rsplit(":", 1)[0]
        print(
            "\nTripline demo: a collector and an agent for this PC are running.\n"
            f"  Prometheus metrics: http://{http}:{app.http_port}/metrics\n"
            f"  Tickets:            tripline tickets list --data-dir {data_dir}\n"
            f"  Collector (gRPC):   {config.listen}\n"
            f"  Rules:              {rules_file} (the default pack plus one demo rule;\n"
            "                      edit it, then `kill -HUP` this process to reload)\n"
            f"  Data:               {data_dir}/  (SQLite store, agent spool)\n"
            "Ctrl-C stops both.\n",
            flush=True,
        )
        try:
            await AgentRunner(agent_config).run(stop)
        finally:
            await app.stop()

    asyncio.run(main())
    print("Tripline demo stopped.")
    return 0


DEMO_RULE = """
  # Demo only: trips on every running PC so the demo shows a ticket with its context.
  - name: DemoPcIsUp
    metric: uptime_seconds
    op: ">"
    threshold: 0
    for: 15s
    severity: info
    tier: 1
    summary: "{host} is up for {value:.0f}s (demo rule: shows what a ticket looks like)"
    runbook: >-
      Demo rule. Delete it from demo-rules.yaml and reload (SIGHUP) to see the
      ticket resolve.
"""


def _demo_rules() -> str:
    from importlib.resources import files

    return files("alerts").joinpath("default_rules.yaml").read_text() + DEMO_RULE


# -- rules --------------------------------------------------------------------------


def cmd_rules_check(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            ruleset = load_rules(path)
        except RuleFileError as exc:
            print(exc, file=sys.stderr)
            failed = True
            continue
        print(f"{path}: OK, {len(ruleset.rules)} rules")
    return 1 if failed else 0


# -- store-backed commands ----------------------------------------------------------


@contextlib.contextmanager
def _store(args: argparse.Namespace) -> Iterator[Any]:
    from collector.store import Store

    config = load_collector_config(
        args.config, flags={"data_dir": args.data_dir, "database_url": args.database_url}
    )
    if config.database_url is None and not (config.data_dir / "tripline.db").exists():
        raise CliError(
            f"no Tripline database in {config.data_dir}/ (start the collector or the demo "
            "first, or pass --data-dir / --database-url)"
        )
    store = Store(config.effective_database_url)
    try:
        store.migrate()
        yield store
    finally:
        store.close()


def _fmt_time(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _print_ticket(ticket: Any) -> None:
    d = ticket.to_dict()
    print(f"Ticket #{d['id']}  [{d['status']}]  {d['severity']}  tier {d['tier']}")
    print(f"  {d['summary']}")
    print(f"  customer {d['customer']}  host {d['hostname']}  agent {d['agent_id']}")
    print(f"  rule {d['rule']}  labels {json.dumps(d['labels'])}")
    print(
        f"  value {d['value']:.4g} (threshold {d['threshold']:.4g})"
        f"  opened {_fmt_time(d['opened_at'])}"
    )
    if d.get("flapping"):
        print(f"  FLAPPING: reopened {d['reopen_count']} times")
    if d.get("runbook"):
        print(f"  runbook: {d['runbook']}")
    context = d.get("context") or {}
    if context.get("top_cpu"):
        print("  top processes by CPU:")
        for p in context["top_cpu"]:
            print(f"    {p.get('pid', ''):>7}  {p.get('cpu_ratio', 0):6.1%}  {p.get('name', '')}")
    if context.get("filesystems"):
        print("  filesystems:")
        for f in context["filesystems"]:
            print(f"    {f.get('mountpoint', ''):<24} {f.get('used_ratio', 0):6.1%} used")
    print("  timeline:")
    for e in d.get("events", []):
        msg = f"  {e['message']}" if e.get("message") else ""
        print(f"    {_fmt_time(e['at'])}  {e['kind']:<12} by {e['actor']}{msg}")


def cmd_tickets(args: argparse.Namespace) -> int:
    from collector import tickets

    now = time.time()
    with _store(args) as store:
        if args.tickets_cmd == "list":
            with store.read() as conn:
                rows = tickets.list_tickets(
                    conn, status=args.status, customer=args.customer, limit=args.limit
                )
            if args.json:
                print(json.dumps([t.to_dict() for t in rows], indent=2))
                return 0
            if not rows:
                print("no tickets")
                return 0
            print(
                f"{'ID':>5}  {'STATUS':<12} {'SEV':<8} {'TIER':<4} "
                f"{'CUSTOMER':<12} {'HOST':<18} SUMMARY"
            )
            for t in rows:
                flag = " (flapping)" if t.flapping else ""
                print(
                    f"{t.id:>5}  {t.status:<12} {t.severity:<8} {t.tier:<4} "
                    f"{t.customer[:12]:<12} {t.hostname[:18]:<18} {t.summary}{flag}"
                )
            return 0
        actor = getattr(args, "actor", None) or getpass.getuser()
        try:
            if args.tickets_cmd == "show":
                with store.read() as conn:
                    ticket = tickets.get_ticket(conn, args.id)
            else:
                with store.transaction() as conn:
                    if args.tickets_cmd == "ack":
                        ticket = tickets.acknowledge(conn, args.id, actor=actor, now=now)
                    elif args.tickets_cmd == "comment":
                        ticket = tickets.comment(
                            conn, args.id, actor=actor, text=args.text, now=now
                        )
                    else:
                        ticket = tickets.resolve(
                            conn, args.id, actor=actor, now=now, note=args.note
                        )
        except tickets.TicketError as exc:
            raise CliError(str(exc)) from None
        if args.json:
            print(json.dumps(ticket.to_dict(), indent=2))
        else:
            _print_ticket(ticket)
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    from alerts.rules import parse_duration

    now = time.time()
    with _store(args) as store:
        if args.tokens_cmd == "create":
            if not _is_name(args.customer):
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
            record, token = store.create_enrollment_token(args.customer, now, expires)
            print(
                f"enrollment token for customer {record.customer!r} (id {record.id}), shown once:"
            )
            print(token)
            return 0
        if args.tokens_cmd == "revoke":
            store.revoke_enrollment_token(args.id, now)
            print(f"token {args.id} revoked")
            return 0
        for t in store.list_enrollment_tokens(args.customer):
            state = "revoked" if t.revoked_at else "active"
            print(
                f"{t.id:>4}  {t.customer:<20} {state:<8} created {_fmt_time(t.created_at)}"
                f"  expires {_fmt_time(t.expires_at)}"
            )
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    with _store(args) as store:
        if args.agents_cmd == "revoke":
            store.revoke_agent(args.agent_id, time.time())
            print(f"agent {args.agent_id} revoked; it is refused on its next message")
            return 0
        agents = store.list_agents(args.customer)
        if args.json:
            print(json.dumps([a.__dict__ for a in agents], indent=2, default=str))
            return 0
        for a in agents:
            state = "revoked" if a.revoked_at else "active"
            print(
                f"{a.agent_id}  {a.customer:<16} {a.hostname:<24} {state:<8}"
                f" last seen {_fmt_time(a.last_seen_at)}"
            )
    return 0


# -- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tripline", description="Proactive endpoint monitoring for MSPs."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", type=Path, help="YAML config file (flags win over it)")

    def store_flags(sp: argparse.ArgumentParser) -> None:
        common(sp)
        sp.add_argument("--data-dir", type=Path, help="collector data directory")
        sp.add_argument("--database-url", help="store URL instead of the data dir's SQLite")

    def server_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--listen", help="gRPC HOST:PORT (default 127.0.0.1:7700)")
        sp.add_argument(
            "--http-listen", help="HTTP HOST:PORT for /metrics (default 127.0.0.1:7701)"
        )
        sp.add_argument("--interval", help="agents' collection interval (default 10s)")
        sp.add_argument("--log-format", choices=["json", "text"])

    demo = sub.add_parser("demo", help="collector + local agent on ./tripline-data")
    common(demo)
    demo.add_argument("--data-dir", type=Path)
    server_flags(demo)
    demo.set_defaults(func=cmd_demo)

    col = sub.add_parser("collector", help="run the collector")
    store_flags(col)
    server_flags(col)
    col.add_argument("--rules", type=Path, help="rule file (default: the built-in rule pack)")
    col.add_argument(
        "--customer",
        action="append",
        metavar="NAME=ENROLLMENT_TOKEN",
        help="accept this enrollment token for customer NAME (repeatable)",
    )
    col.add_argument(
        "--offline-after", help="silence before an agent is offline (default 3 intervals)"
    )
    col.set_defaults(func=cmd_collector)

    ag = sub.add_parser("agent", help="run the agent, or print one snapshot with --once")
    common(ag)
    ag.add_argument("--collector", help="collector HOST:PORT")
    ag.add_argument("--enrollment-token", help="customer's enrollment token (first start only)")
    ag.add_argument("--state-dir", type=Path, help="spool and identity directory")
    ag.add_argument("--interval", help="collection interval until the collector sets one")
    ag.add_argument("--site", help="the customer's site this PC is at")
    ag.add_argument("--log-format", choices=["json", "text"])
    ag.add_argument("--once", action="store_true", help="print one snapshot and exit")
    ag.add_argument("--json", action="store_true", help="with --once: JSON instead of a table")
    ag.set_defaults(func=cmd_agent)

    rules = sub.add_parser("rules", help="rule files")
    rsub = rules.add_subparsers(dest="rules_cmd", required=True)
    check = rsub.add_parser("check", help="validate rule files")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(func=cmd_rules_check)

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
    for tp in tsub.choices.values():
        store_flags(tp)
        tp.add_argument("--json", action="store_true")
        tp.set_defaults(func=cmd_tickets)

    to = sub.add_parser("tokens", help="customers' enrollment tokens")
    tosub = to.add_subparsers(dest="tokens_cmd", required=True)
    tc = tosub.add_parser("create")
    tc.add_argument("--customer", required=True)
    tc.add_argument("--expires-in", help="e.g. 7d")
    tls = tosub.add_parser("list")
    tls.add_argument("--customer")
    tr = tosub.add_parser("revoke")
    tr.add_argument("id", type=int)
    for tp in tosub.choices.values():
        store_flags(tp)
        tp.set_defaults(func=cmd_tokens)

    agp = sub.add_parser("agents", help="enrolled agents")
    asub = agp.add_subparsers(dest="agents_cmd", required=True)
    al = asub.add_parser("list")
    al.add_argument("--customer")
    al.add_argument("--json", action="store_true")
    ar = asub.add_parser("revoke")
    ar.add_argument("agent_id")
    for tp in asub.choices.values():
        store_flags(tp)
        tp.set_defaults(func=cmd_agents)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, ConfigError, RuleFileError, StoreError) as exc:
        print(f"tripline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
