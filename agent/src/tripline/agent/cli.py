"""The ``tripline-agent`` command: run the agent, print one snapshot, install the service.

The only place on the PC that exits the process or configures logging. It imports
nothing of the collector: an office PC installs the agent distribution alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tripline.agent.config import AgentConfig, load_agent_config
from tripline.common import logs
from tripline.common.config import ConfigError

EXIT_USAGE = 2
ONCE_SAMPLE_WAIT = 0.5  # seconds between --once's two CPU snapshots


class CliError(Exception):
    """A problem the user can fix; printed without a traceback."""


def _config(args: argparse.Namespace) -> AgentConfig:
    return load_agent_config(
        args.config,
        flags={
            "collector": args.collector,
            "enrollment_token": args.enrollment_token,
            "state_dir": args.state_dir,
            "interval": args.interval,
            "site": args.site,
            "log_format": args.log_format,
            "tls_ca": args.tls_ca,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "plaintext": args.plaintext,
        },
    )


def cmd_run(args: argparse.Namespace) -> int:
    if args.action is not None:
        return _service(args)
    config = _config(args)
    if args.once:
        # the config's redaction applies: what --once prints is what the agent would send
        return _once(args.json, config)
    # Imported here: --once and install-service start without asyncio, gRPC or the spool.
    import asyncio
    import signal

    from tripline.agent.enroll import EnrollmentFailed
    from tripline.agent.runner import AgentRunner

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


def _service(args: argparse.Namespace) -> int:
    from tripline.agent.service import ServiceError, install_service, under_root, uninstall_service

    try:
        if args.action == "uninstall-service":
            result = uninstall_service(root=args.root)
        else:
            if args.config is None:
                raise CliError("install-service needs --config FILE (the agent's YAML config)")
            config = args.config.resolve()
            load_agent_config(under_root(args.root, config), environ={})  # fail before writing
            result = install_service(config, root=args.root, start=not args.no_start)
    except ServiceError as exc:
        raise CliError(str(exc)) from None
    print(result.describe())
    return 0


def _once(as_json: bool, config: AgentConfig) -> int:
    from tripline.agent.inventory import inventory as read_inventory
    from tripline.agent.prober_setup import prober_for

    prober = prober_for(config)
    prober.collect(time.time())  # baseline: CPU ratios need two snapshots
    second_at = time.monotonic() + ONCE_SAMPLE_WAIT
    # Done while the CPU counters move rather than after the second snapshot.
    from tripline.agent import render

    inventory = read_inventory()
    time.sleep(max(0.0, second_at - time.monotonic()))
    collection = prober.collect(time.time())
    if as_json:
        print(render.render_json(collection, inventory))
    else:
        print(render.render_table(collection, inventory))
    return 0


def add_arguments(ag: argparse.ArgumentParser) -> None:
    ag.add_argument("--config", type=Path, help="YAML config file (flags win over it)")
    ag.add_argument("--collector", help="collector HOST:PORT")
    ag.add_argument("--enrollment-token", help="customer's enrollment token (first start only)")
    ag.add_argument("--state-dir", type=Path, help="spool and identity directory")
    ag.add_argument("--interval", help="collection interval until the collector sets one")
    ag.add_argument("--site", help="the customer's site this PC is at")
    ag.add_argument("--log-format", choices=["json", "text"])
    ag.add_argument("--tls-ca", type=Path, help="PEM CA of the collector (default: system CAs)")
    ag.add_argument("--tls-cert", type=Path, help="PEM client certificate (mutual TLS)")
    ag.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    ag.add_argument(
        "--plaintext",
        action="store_true",
        default=None,
        help="connect without TLS (local development only)",
    )
    ag.add_argument("--once", action="store_true", help="print one snapshot and exit")
    ag.add_argument("--json", action="store_true", help="with --once: JSON instead of a table")
    ag.add_argument(
        "action",
        nargs="?",
        choices=["install-service", "uninstall-service"],
        help="install or remove the agent as a system service (systemd, launchd, Windows)",
    )
    ag.add_argument("--no-start", action="store_true", help="install-service: enable only")
    ag.add_argument(
        "--root", type=Path, default=Path("/"), help="install-service: into this root (images)"
    )
    ag.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tripline-agent",
        description="Tripline's agent: samples this PC's health and streams it to a collector.",
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (CliError, ConfigError) as exc:
        print(f"tripline-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
