"""`tripline rules check`: validate rule files without a collector."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    rules = sub.add_parser("rules", help="rule files")
    rsub = rules.add_subparsers(dest="rules_cmd", required=True)
    check = rsub.add_parser("check", help="validate rule files")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(func=cmd_rules_check)


def cmd_rules_check(args: argparse.Namespace) -> int:
    from tripline.alerts.rules import RuleFileError, load_rules

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
