"""`tripline demo`: a collector and an agent for this PC on ./tripline-data, over TLS."""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tripline.collector.cli.errors import EXIT_USAGE, CliError, one_line
from tripline.collector.cli.options import config_flag, server_flags

if TYPE_CHECKING:
    from tripline.collector.config import CollectorConfig


def register(sub: Any) -> None:
    demo = sub.add_parser("demo", help="collector + local agent on ./tripline-data")
    config_flag(demo)
    demo.add_argument("--data-dir", type=Path)
    server_flags(demo)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from tripline.alerts.rules import RuleFileError

    try:
        return _run(args)
    except RuleFileError as exc:  # e.g. a demo-rules.yaml edited into something broken
        raise CliError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from tripline.collector import entropy
    from tripline.collector.app import CollectorApp
    from tripline.collector.config import load_collector_config
    from tripline.collector.lockfile import DataDirLocked
    from tripline.collector.migrations import MigrationError
    from tripline.collector.store import StoreCorrupt
    from tripline.common import files, logs

    data_dir: Path = args.data_dir or Path("tripline-data")
    token_file = data_dir / "demo-enrollment-token"
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
            f"  Ticket page:        http://{http}:{app.http_port}/ui/ (log in with a token from\n"
            f"                      tripline api-tokens create --name me --data-dir {data_dir})\n"
            f"  Service report:     http://{http}:{app.http_port}/ui/reports?customer=demo"
            " (same login)\n"
            f"                      or tripline report --customer demo --from DAY --to DAY"
            f" --data-dir {data_dir}\n"
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

    try:
        asyncio.run(main())
    except (DataDirLocked, StoreCorrupt, MigrationError) as exc:
        print(f"tripline demo: {one_line(exc)}", file=sys.stderr)
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
