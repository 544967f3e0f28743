"""The ``tripline`` command. The only place that exits the process or configures logging.

One module per command group, each with ``register(sub)`` adding its sub-parser and
setting ``func``. A module imports at its top only what building the parser needs; what a
command runs (SQLAlchemy, the store, the server, httpx) is imported inside the command,
so `tripline rules check` never pays for the database and `tripline tickets list` never
for the web server (tests/unit/project/test_cli_imports.py holds this).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tripline.collector.cli import (
    agent,
    agents,
    api_tokens,
    collector,
    deliveries,
    demo,
    maintenance,
    report,
    rules,
    tickets,
    tokens,
)
from tripline.collector.cli.errors import EXIT_USAGE, CliError
from tripline.common.config import ConfigError

__all__ = ["EXIT_USAGE", "CliError", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tripline", description="Proactive endpoint monitoring for MSPs."
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # One line per command group, in the order --help lists them.
    demo.register(sub)
    collector.register(sub)
    agent.register(sub)
    rules.register(sub)
    tickets.register(sub)
    deliveries.register(sub)
    tokens.register(sub)
    agents.register(sub)
    api_tokens.register(sub)
    report.register(sub)
    maintenance.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        if argv[:1] == ["agent"]:
            return agent.run_agent(argv[1:])
        args = parser.parse_args(argv)
        return int(args.func(args))
    except (CliError, ConfigError) as exc:
        print(f"tripline: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
