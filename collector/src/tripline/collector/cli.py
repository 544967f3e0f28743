"""The ``tripline`` command. The only place that exits the process or configures logging."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tripline.alerts.rules import RuleFileError, load_rules
from tripline.collector import entropy
from tripline.collector.config import CollectorConfig, ConfigError, load_collector_config
from tripline.common import logs
from tripline.common.terminal import cell, escape

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
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "tls_client_ca": args.tls_client_ca,
            "plaintext": args.plaintext,
            "workers": getattr(args, "workers", None),
        },
    )


# -- collector / agent / demo ----------------------------------------------------


def cmd_collector(args: argparse.Namespace) -> int:
    # Imported here: the agent's install runs this module without the collector's libraries.
    from tripline.collector.app import serve
    from tripline.collector.lockfile import DataDirLocked
    from tripline.collector.migrations import MigrationError
    from tripline.collector.store import StoreCorrupt, StoreUnavailable

    config = _collector_config(args)
    logs.configure(config.log_format, config.log_level)
    if config.rules is not None:
        load_rules(config.rules)  # fail at start, with the file's errors, not later
    try:
        if config.workers > 1:
            from tripline.collector.workers import run_workers

            return run_workers(config)
        asyncio.run(serve(config))
    except (DataDirLocked, StoreCorrupt, MigrationError) as exc:
        # Refused for good until a person acts: another collector owns the database, the
        # file is damaged, or its schema is newer than this code.
        # One line naming the file and the next step; a traceback would bury both.
        print(f"tripline collector: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        # Transient (locked, unreachable): a service manager's restart may well succeed.
        print(f"tripline collector: cannot start: {_one_line(exc)}", file=sys.stderr)
        return 1
    return 0


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def run_agent(argv: Sequence[str]) -> int:
    """``tripline agent ...`` is ``tripline-agent ...``: the agent is its own program (and
    its own install on an office PC), so this only hands over, importing none of it."""
    import importlib.util

    if importlib.util.find_spec("tripline.agent") is None:
        raise CliError("the agent is not installed here: pip install tripline-agent")
    command = [sys.executable, "-m", "tripline.agent.cli", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    if sys.platform == "win32":  # no exec that keeps the console: run it and pass its code
        import subprocess

        return subprocess.call(command)
    os.execv(sys.executable, command)
    raise AssertionError("unreachable: execv returns only by raising")


def cmd_demo(args: argparse.Namespace) -> int:
    from tripline.collector.app import CollectorApp

    data_dir: Path = args.data_dir or Path("tripline-data")
    token_file = data_dir / "demo-enrollment-token"
    from tripline.common import files

    files.private_dir(data_dir, "data_dir")  # before the token lands in it
    if not token_file.exists():
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(entropy.generate())
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
    if not config.plaintext and config.tls_cert is None:
        # TLS in the demo too: a self-signed certificate the demo's agent trusts.
        listen_host = config.listen.rsplit(":", 1)[0].strip("[]")
        from tripline.collector import tls

        cert, key = tls.ensure_self_signed(
            data_dir, ("localhost", "127.0.0.1", "::1", listen_host), time.time()
        )
        config = dataclasses.replace(config, tls_cert=cert, tls_key=key)

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
        # The agent is its own program, as on an office PC: the collector imports none of it.
        agent = await asyncio.create_subprocess_exec(
            *_agent_command(config, app.grpc_port, data_dir),
            env={**os.environ, "TRIPLINE_AGENT_ENROLLMENT_TOKEN": token},
        )
        try:
            ended = asyncio.ensure_future(agent.wait())
            await asyncio.wait(
                [ended, asyncio.ensure_future(stop.wait())], return_when="FIRST_COMPLETED"
            )
            if ended.done():
                print(
                    f"tripline demo: the agent exited with code {agent.returncode}", file=sys.stderr
                )
        finally:
            if agent.returncode is None:
                agent.terminate()
                await agent.wait()
            await app.stop()

    from tripline.collector.lockfile import DataDirLocked
    from tripline.collector.migrations import MigrationError
    from tripline.collector.store import StoreCorrupt

    try:
        asyncio.run(main())
    except (DataDirLocked, StoreCorrupt, MigrationError) as exc:
        print(f"tripline demo: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    print("Tripline demo stopped.")
    return 0


def _agent_command(config: CollectorConfig, grpc_port: int, data_dir: Path) -> list[str]:
    """The demo's agent: ``tripline-agent`` run by this Python, trusting the demo's cert."""
    host = config.listen.rsplit(":", 1)[0]
    command = [
        sys.executable,
        "-m",
        "tripline.agent.cli",
        "--collector",
        f"{host}:{grpc_port}",
        "--state-dir",
        str(data_dir / "agent"),
        "--interval",
        f"{config.interval:g}",
        "--site",
        "demo-office",
        "--log-format",
        config.log_format,
    ]
    if config.plaintext:
        return [*command, "--plaintext"]
    assert config.tls_cert is not None
    return [*command, "--tls-ca", str(config.tls_cert)]


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

    return files("tripline.alerts").joinpath("default_rules.yaml").read_text() + DEMO_RULE


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
    # Imported here: the agent's commands must not pay for SQLAlchemy on an office PC.
    from tripline.collector.migrations import MigrationError
    from tripline.collector.store import Store, StoreError

    config = load_collector_config(
        args.config, flags={"data_dir": args.data_dir, "database_url": args.database_url}
    )
    if config.database_url is None and not config.database_file.exists():
        raise CliError(
            f"no Tripline database in {config.data_dir}/ (start the collector or the demo "
            "first, or pass --data-dir / --database-url)"
        )
    try:
        store = Store(config.effective_database_url)
        try:
            store.migrate()
            yield store
        finally:
            store.close()
    except (StoreError, MigrationError) as exc:
        raise CliError(str(exc)) from None


def _fmt_time(ts: Any) -> str:
    """A stored time as local date and time; whatever a broken row holds (None, NaN,
    1e300, text) is shown as it is rather than crashing the command."""
    if ts is None:
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    except (OverflowError, OSError, ValueError, TypeError):
        return f"<{escape(ts)}>"


def _fmt_num(value: Any, spec: str) -> str:
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return f"<{escape(value)}>"


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The dict entries of a stored list; anything else in a broken row is skipped."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _print_ticket(d: dict[str, Any]) -> None:
    # Every value came from an agent, a rule file or the store: escaped before printing.
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
        f"  value {_fmt_num(d.get('value'), '.4g')}"
        f" (threshold {_fmt_num(d.get('threshold'), '.4g')})"
        f"  opened {_fmt_time(d.get('opened_at'))}"
    )
    if d.get("flapping"):
        print(f"  FLAPPING: reopened {e(d.get('reopen_count'))} times")
    if d.get("runbook"):
        print(f"  runbook: {e(d['runbook'])}")
    context = d.get("context")
    context = context if isinstance(context, dict) else {}
    top_cpu = _dicts(context.get("top_cpu"))
    if top_cpu:
        print("  top processes by CPU:")
        for p in top_cpu:
            print(
                f"    {cell(p.get('pid', ''), 7)}  {_fmt_num(p.get('cpu_ratio', 0), '5.2f')} cores"
                f"  {e(p.get('name', ''))}"
            )
    filesystems = _dicts(context.get("filesystems"))
    if filesystems:
        print("  filesystems:")
        for f in filesystems:
            print(
                f"    {cell(f.get('mountpoint', ''), 24)} "
                f"{_fmt_num(f.get('used_ratio', 0), '6.1%')} used"
            )
    print("  timeline:")
    for ev in _dicts(d.get("events")):
        msg = f"  {e(ev['message'])}" if ev.get("message") else ""
        print(
            f"    {_fmt_time(ev.get('at'))}  {cell(ev.get('kind'), 12)}"
            f" by {e(ev.get('actor'))}{msg}"
        )


def _print_ticket_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
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


@dataclasses.dataclass(frozen=True)
class _ApiClient:
    """A running collector's HTTP API, as `tripline tickets --api-url` reaches it."""

    base: str  # ending in /api/v1
    token: str = dataclasses.field(repr=False)

    def call(
        self, method: str, path: str, *, params: dict[str, Any] | None = None, body: Any = None
    ) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"}
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = httpx.request(
                method, self.base + path, params=query, json=body, headers=headers, timeout=10.0
            )
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the collector API at {self.base}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            data = None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            status = response.status_code
            raise CliError(f"the collector API answered {status}: {error or response.text}")
        return data


def _api_client(args: argparse.Namespace) -> _ApiClient | None:
    """The API to use instead of the data dir, when one is configured; None otherwise."""
    from tripline.collector.api import API_PREFIX
    from tripline.collector.config import load_api_client_config

    config = load_api_client_config(flags={"url": args.api_url, "token": args.api_token})
    local = args.data_dir is not None or args.database_url is not None
    if config.url is None or (local and args.api_url is None):
        return None
    if local:
        raise CliError("give --api-url or --data-dir/--database-url, not both")
    if not config.token:
        raise CliError("--api-url needs an API token: set TRIPLINE_API_TOKEN (or --api-token)")
    if getattr(args, "actor", None):
        raise CliError("through the API the actor is the API token's name: drop --actor")
    base = config.url.rstrip("/")
    return _ApiClient(base if base.endswith(API_PREFIX) else base + API_PREFIX, config.token)


def _tickets_via_api(args: argparse.Namespace, api: _ApiClient) -> int:
    if args.tickets_cmd == "list":
        params = {"status": args.status, "customer": args.customer, "limit": args.limit}
        _print_ticket_rows(api.call("GET", "/tickets", params=params)["items"], args.json)
        return 0
    path = f"/tickets/{args.id}"
    if args.tickets_cmd == "show":
        ticket = api.call("GET", path)
    elif args.tickets_cmd == "ack":
        ticket = api.call("POST", path + "/ack", body={})
    elif args.tickets_cmd == "comment":
        ticket = api.call("POST", path + "/comment", body={"text": args.text})
    else:
        ticket = api.call("POST", path + "/resolve", body={"note": args.note})
    if args.json:
        print(json.dumps(ticket, indent=2))
    else:
        _print_ticket(ticket)
    return 0


def cmd_tickets(args: argparse.Namespace) -> int:
    from tripline.collector import tickets

    api = _api_client(args)
    if api is not None:
        return _tickets_via_api(args, api)
    now = time.time()
    with _store(args) as store:
        if args.tickets_cmd == "list":
            with store.read() as conn:
                rows = tickets.list_tickets(
                    conn, status=args.status, customer=args.customer, limit=args.limit
                )
            _print_ticket_rows([t.to_dict() for t in rows], args.json)
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
            _print_ticket(ticket.to_dict())
    return 0


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _printable(text: Any) -> str:
    """Control characters (ESC, CR, LF...) as \\xNN: a receiver's error text or a ticket
    value must not drive the operator's terminal."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _print_parked(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print("no parked deliveries")
        return
    print(f"{'ROUTE':<16} {'EVENT':>7}  {'KEY':<12} {'KIND':<12} {'CUSTOMER':<12} PARKED / ERROR")
    for r in rows:
        print(
            f"{_printable(r['route'])[:16]:<16} {r['event_id']:>7}  "
            f"{r['idempotency_key']:<12} {r['kind']:<12} {_printable(r['customer'])[:12]:<12} "
            f"{_fmt_time(r['parked_at'])} after {r['attempts']} tries: "
            f"{_printable(r['error'])[:200]}"
        )


def cmd_deliveries(args: argparse.Namespace) -> int:
    from tripline.collector import delivery

    api = _api_client(args)
    if args.deliveries_cmd == "parked":
        if api is not None:
            params = {"route": args.route, "customer": args.customer, "limit": args.limit}
            rows = api.call("GET", "/deliveries/parked", params=params)["items"]
        else:
            with _store(args) as store, store.read() as conn:
                parked = delivery.list_parked(
                    conn,
                    route=args.route,
                    customers=None if args.customer is None else [args.customer],
                    limit=args.limit,
                )
            rows = [p.to_dict() for p in parked]
        _print_parked(rows, args.json)
        return 0
    retried: list[dict[str, Any]] = []
    for event_id in args.event_ids:
        if api is not None:
            path = f"/deliveries/parked/{quote(args.route, safe='')}/{event_id}/retry"
            retried.append(api.call("POST", path, body={}))
            continue
        try:
            # the collector sees the event pending at its next poll (a second at most)
            with _store(args) as store, store.transaction() as conn:
                retried.append(delivery.unpark(conn, args.route, event_id).to_dict())
        except delivery.ParkedEventNotFound as exc:
            raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(retried, indent=2))
    else:
        for r in retried:
            print(
                f"{_printable(r['route'])} event {r['event_id']} ({r['idempotency_key']}): pending"
            )
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    from tripline.alerts.rules import parse_duration

    if args.tokens_cmd == "generate":
        # Nothing stored: for --customer NAME=TOKEN and `customers:` in the config file.
        print(entropy.generate())
        return 0
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
            if args.max_agents is not None and args.max_agents < 1:
                raise CliError(f"--max-agents must be at least 1, got {args.max_agents}")
            record, token = store.create_enrollment_token(
                args.customer, now, expires, max_agents=args.max_agents
            )
            limits = []
            if record.max_agents is not None:
                limits.append(f"at most {record.max_agents} agents")
            if record.expires_at is not None:
                limits.append(f"expires {_fmt_time(record.expires_at)}")
            print(
                f"enrollment token for customer {record.customer!r} (id {record.id}"
                f"{''.join(', ' + limit for limit in limits)}), shown once:"
            )
            print(token)
            return 0
        if args.tokens_cmd == "revoke":
            store.revoke_enrollment_token(args.id, now)
            print(f"token {args.id} revoked")
            return 0
        enrolled = store.agents_per_token()
        for t in store.list_enrollment_tokens(args.customer):
            state = "revoked" if t.revoked_at else "active"
            if t.revoked_at is None and t.expires_at is not None and t.expires_at <= now:
                state = "expired"
            count = enrolled.get(t.id, 0)
            agents = f"{count}/{t.max_agents}" if t.max_agents is not None else f"{count}/-"
            print(
                f"{t.id:>4}  {cell(t.customer, 20)} {state:<8} agents {agents:<9}"
                f" created {_fmt_time(t.created_at)}  expires {_fmt_time(t.expires_at)}"
            )
    return 0


def cmd_api_tokens(args: argparse.Namespace) -> int:
    from tripline.collector import apitokens

    now = time.time()
    actor = getpass.getuser()
    with _store(args) as store:
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
        print(json.dumps([t.to_dict() for t in found], indent=2))
        return 0
    for t in found:
        state = "revoked" if t.revoked_at else "active"
        scope = ",".join(t.customers) if t.customers else "*"
        print(
            f"{t.id:>4}  {cell(t.name, 24)} {state:<8} {cell(scope, 24)}"
            f" created {_fmt_time(t.created_at)}"
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
                f"{escape(a.agent_id)}  {cell(a.customer, 16)} {cell(a.hostname, 24)} {state:<8}"
                f" last seen {_fmt_time(a.last_seen_at)}"
            )
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


def _window_line(window: Any, now: float) -> str:
    scope = " ".join(
        f"{name}={getattr(window, name)}"
        for name in ("customer", "site", "agent_id", "rule")
        if getattr(window, name) is not None
    )
    if window.kind == "once":
        schedule = f"{_fmt_time(window.starts_at)} .. {_fmt_time(window.ends_at)}"
    elif window.kind == "weekly":
        schedule = f"weekly {window.weekly!r} {window.timezone}"
    else:
        schedule = f"cron {window.cron!r} for {window.duration:g}s {window.timezone}"
    comment = f"  # {escape(window.comment)}" if window.comment else ""
    return f"{window.id:>4}  {window.status(now):<9} {cell(scope, 36)} {escape(schedule)}{comment}"


def cmd_maintenance(args: argparse.Namespace) -> int:
    from tripline.alerts import calendar
    from tripline.collector import maintenance

    now = time.time()
    with _store(args) as store:
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
        print(json.dumps(listed if args.maintenance_cmd == "list" else listed[0], indent=2))
        return 0
    if args.maintenance_cmd == "delete":
        print(f"maintenance window {windows[0].id} deleted")
        return 0
    if not windows:
        print("no maintenance windows")
    for window in windows:
        print(_window_line(window, now))
    return 0


def _add_window(args: argparse.Namespace, store: Any, now: float) -> Any:
    from tripline.alerts.rules import parse_duration
    from tripline.collector import maintenance

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
        "--workers",
        type=int,
        help="processes sharing the gRPC port, one /metrics (default 1; see docs/scale-out.md)",
    )
    col.add_argument(
        "--customer",
        action="append",
        metavar="NAME=ENROLLMENT_TOKEN",
        help="accept this enrollment token for customer NAME (repeatable)",
    )
    col.add_argument(
        "--offline-after", help="silence before an agent is offline (default 3 intervals)"
    )
    col.add_argument("--tls-cert", type=Path, help="PEM server certificate (chain) for gRPC")
    col.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    col.add_argument(
        "--tls-client-ca",
        type=Path,
        help="PEM CA of agents' client certificates: turns on mutual TLS",
    )
    col.add_argument(
        "--plaintext",
        action="store_true",
        default=None,
        help="gRPC without TLS (local development only)",
    )
    col.set_defaults(func=cmd_collector)

    # Handed to tripline-agent before parsing (see main); listed here for --help.
    sub.add_parser("agent", help="run the agent: the same as tripline-agent ARGS", add_help=False)

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
        tp.add_argument(
            "--api-url",
            help="a running collector's HTTP address instead of the data dir, "
            "e.g. http://127.0.0.1:7701 (env TRIPLINE_API_URL)",
        )
        tp.add_argument(
            "--api-token",
            help="API token for --api-url; prefer env TRIPLINE_API_TOKEN (not shown by ps)",
        )
        tp.set_defaults(func=cmd_tickets)

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
        tp.add_argument(
            "--api-url", help="a running collector's HTTP address (env TRIPLINE_API_URL)"
        )
        tp.add_argument("--api-token", help="prefer env TRIPLINE_API_TOKEN (not shown by ps)")
        tp.set_defaults(func=cmd_deliveries)

    to = sub.add_parser("tokens", help="customers' enrollment tokens")
    tosub = to.add_subparsers(dest="tokens_cmd", required=True)
    tc = tosub.add_parser("create")
    tc.add_argument("--customer", required=True)
    tc.add_argument("--expires-in", "--expires", dest="expires_in", help="e.g. 30d")
    tc.add_argument(
        "--max-agents", type=int, help="agents (not revoked) it may enroll (default: no limit)"
    )
    tls = tosub.add_parser("list")
    tls.add_argument("--customer")
    tr = tosub.add_parser("revoke")
    tr.add_argument("id", type=int)
    for tp in tosub.choices.values():
        store_flags(tp)
        tp.set_defaults(func=cmd_tokens)
    tg = tosub.add_parser(
        "generate", help="print a strong token (256 random bits) for --customer NAME=TOKEN"
    )
    tg.set_defaults(func=cmd_tokens)

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
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        if argv[:1] == ["agent"]:
            return run_agent(argv[1:])
        args = parser.parse_args(argv)
        return int(args.func(args))
    except (CliError, ConfigError, RuleFileError) as exc:
        print(f"tripline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
