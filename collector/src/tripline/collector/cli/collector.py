"""`tripline collector`: run the collector in the foreground until a signal stops it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tripline.collector.cli.errors import EXIT_USAGE, CliError, one_line
from tripline.collector.cli.options import is_name, server_flags, store_flags

if TYPE_CHECKING:
    from tripline.collector.config import CollectorConfig


def register(sub: Any) -> None:
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


def _customers(values: Sequence[str] | None) -> dict[str, str] | None:
    if not values:
        return None
    out = {}
    for value in values:
        name, sep, token = value.partition("=")
        if not sep or not is_name(name) or not is_name(token):
            raise CliError(f"--customer expects NAME=ENROLLMENT_TOKEN, got {value!r}")
        out[name] = token
    return out


def _collector_config(args: argparse.Namespace) -> CollectorConfig:
    from tripline.collector.config import load_collector_config

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
            "workers": args.workers,
        },
    )


def cmd_collector(args: argparse.Namespace) -> int:
    from tripline.alerts.rules import RuleFileError

    try:
        return _run(args)
    except RuleFileError as exc:  # the rule file's errors, named; imported here, not in main
        raise CliError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from tripline.alerts.rules import load_rules
    from tripline.collector.app import serve
    from tripline.collector.lockfile import DataDirLocked
    from tripline.collector.migrations import MigrationError
    from tripline.collector.store import StoreCorrupt, StoreUnavailable
    from tripline.collector.workers import PortInUse
    from tripline.common import logs

    config = _collector_config(args)
    logs.configure(config.log_format, config.log_level)
    if config.rules is not None:
        load_rules(config.rules)  # fail at start, with the file's errors, not later
    try:
        if config.workers > 1:
            from tripline.collector.workers import run_workers

            return run_workers(config)
        asyncio.run(serve(config))
    except (DataDirLocked, StoreCorrupt, MigrationError, PortInUse) as exc:
        # Refused for good until a person acts: another collector owns the database, the
        # file is damaged, or its schema is newer than this code.
        # One line naming the file and the next step; a traceback would bury both.
        print(f"tripline collector: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except StoreUnavailable as exc:
        # Transient (locked, unreachable): a service manager's restart may well succeed.
        print(f"tripline collector: cannot start: {one_line(exc)}", file=sys.stderr)
        return 1
    return 0
