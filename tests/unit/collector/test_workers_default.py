"""The default number of collector workers is one value, said the same way everywhere a
person reads it: the config's default, `tripline collector --help`, docs/scale-out.md
and docs/configuration.md (bench/README.md and docs/scale-out.md say why it is 1)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from tripline.collector.cli import build_parser
from tripline.collector.config import load_collector_config

ROOT = Path(__file__).resolve().parents[3]


def _collector_help() -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    collector: argparse.ArgumentParser = sub.choices["collector"]
    return collector.format_help()


def test_the_default_workers_is_what_the_help_and_the_docs_say() -> None:
    default = load_collector_config(None, environ={}).workers
    help_text = " ".join(_collector_help().split())
    stated = re.search(r"--workers WORKERS .*?\(default (\d+);", help_text)
    assert stated is not None, help_text
    scale_out = (ROOT / "docs/scale-out.md").read_text()
    in_scale_out = re.search(r"runs N worker processes on one host \(default (\d+)", scale_out)
    assert in_scale_out is not None
    configuration = (ROOT / "docs/configuration.md").read_text()
    in_table = re.search(r"^\| `workers` \| `--workers` \| (\d+) \|", configuration, re.M)
    assert in_table is not None
    assert (
        int(stated.group(1)),
        int(in_scale_out.group(1)),
        int(in_table.group(1)),
    ) == (default, default, default)


def test_an_explicit_workers_count_overrides_the_default() -> None:
    assert load_collector_config(None, environ={}, flags={"workers": 2}).workers == 2
    env = {"TRIPLINE_COLLECTOR_WORKERS": "3"}
    assert load_collector_config(None, environ=env).workers == 3
