"""How long the command-line tools take to start: wall time and import time, best of N.

A tool, not a server: ``tripline tickets list``, ``tripline rules check FILE`` and
``tripline-agent --once`` should import only what they run. Each command runs as its own
process (this Python, ``-m``), N times for the wall time and N times under
``-X importtime`` for the time spent importing; the best run of each is printed, since
the machine's other work only ever adds time.

``tripline-agent --once`` samples the CPU twice, 0.5 s apart (CPU ratios need two
snapshots), so its wall time holds that wait; "start" subtracts it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tripline.agent.cli import ONCE_SAMPLE_WAIT

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RULES = ROOT / "alerts/src/tripline/alerts/default_rules.yaml"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench.startup", description="Start time of tripline's commands (best of N)."
    )
    p.add_argument("--runs", type=int, default=5, help="runs per command and measure")
    p.add_argument(
        "--baseline",
        type=Path,
        help="also measure this source tree (e.g. `git archive main | tar -x -C DIR`), "
        "alternating runs with this checkout's",
    )
    p.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    return p.parse_args(argv)


def _commands(work: Path) -> dict[str, list[str]]:
    data_dir = work / "data"
    agent_config = work / "agent.yaml"
    agent_config.write_text(f"state_dir: {work / 'agent'}\n")
    return {
        "tickets_list": [
            *("-m", "tripline.collector.cli", "tickets", "list"),
            *("--data-dir", str(data_dir)),
        ],
        "rules_check": ["-m", "tripline.collector.cli", "rules", "check", str(DEFAULT_RULES)],
        "agent_once": ["-m", "tripline.agent.cli", "--once", "--config", str(agent_config)],
    }


def _make_store(data_dir: Path) -> None:
    """An empty migrated SQLite store, as a collector leaves one, made in a child process
    so this process's imports stay out of the measurement's way."""
    data_dir.mkdir(mode=0o700)
    code = (
        "import sys; from tripline.collector.store import Store; "
        "s = Store('sqlite:///' + sys.argv[1]); s.migrate(); s.close()"
    )
    subprocess.run([sys.executable, "-c", code, str(data_dir / "tripline.db")], check=True)


def _env(work: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIPLINE_")}
    env["HOME"] = str(work)  # no operator's config file or API URL leaks in
    return env


def _wall_and_cpu(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and the child's CPU seconds (user + system): on a machine shared with
    other work the CPU time moves far less than the wall time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([sys.executable, *argv], env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _imports(argv: list[str], env: dict[str, str]) -> tuple[float, set[str]]:
    """Seconds spent importing (the top-level lines of -X importtime) and the modules."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    total_us = 0
    modules = set()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if cumulative.strip().isdigit():
            modules.add(name.strip())
            if not name.startswith("  "):  # top level: its time includes its children's
                total_us += int(cumulative)
    return total_us / 1e6, modules


HEAVY = ("sqlalchemy", "starlette", "uvicorn", "grpc", "httpx", "cryptography")
LABELS = {
    "tickets_list": "tripline tickets list",
    "rules_check": "tripline rules check FILE",
    "agent_once": "tripline-agent --once",
}


def _baseline_env(env: dict[str, str], tree: Path) -> dict[str, str]:
    """``env`` importing tripline from another source tree (e.g. `git archive main`):
    its four src/ folders first on the path, ahead of this checkout's install."""
    roots = [tree / d / "src" for d in ("protos", "alerts", "agent", "collector")]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        raise SystemExit(f"--baseline {tree}: not a Tripline source tree (no {missing[0]})")
    return {**env, "PYTHONPATH": os.pathsep.join(map(str, roots))}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Best of N per command; with --baseline the two trees' runs alternate, so a change
    in the machine's load hits both alike."""
    figures: dict[str, Any] = {"runs": args.runs, "baseline": args.baseline is not None}
    with tempfile.TemporaryDirectory(prefix="tripline-startup-") as tmp:
        work = Path(tmp)
        _make_store(work / "data")
        envs = {"": _env(work)}
        if args.baseline is not None:
            envs["baseline_"] = _baseline_env(envs[""], args.baseline.resolve())
        for name, argv in _commands(work).items():
            runs: dict[str, list[tuple[float, float]]] = {prefix: [] for prefix in envs}
            timed: dict[str, list[tuple[float, set[str]]]] = {prefix: [] for prefix in envs}
            for _ in range(args.runs):
                for prefix, env in envs.items():
                    runs[prefix].append(_wall_and_cpu(argv, env))
                    timed[prefix].append(_imports(argv, env))
            for prefix in envs:
                key = f"{prefix}{name}"
                figures[f"{key}_wall_s"] = round(min(w for w, _ in runs[prefix]), 3)
                figures[f"{key}_cpu_s"] = round(min(c for _, c in runs[prefix]), 3)
                figures[f"{key}_imports_s"] = round(min(t for t, _ in timed[prefix]), 3)
                modules = timed[prefix][0][1]
                figures[f"{key}_heavy_imports"] = sorted(h for h in HEAVY if h in modules)
        for prefix in envs:
            once = figures[f"{prefix}agent_once_wall_s"]
            figures[f"{prefix}agent_once_start_s"] = round(once - ONCE_SAMPLE_WAIT, 3)
    return figures


def _print(f: dict[str, Any], prefix: str) -> None:
    for name, label in LABELS.items():
        key = f"{prefix}{name}"
        heavy = ", ".join(f[f"{key}_heavy_imports"]) or "none"
        wall, cpu, imports = (f[f"{key}_{m}_s"] for m in ("wall", "cpu", "imports"))
        print(
            f"  {label:<28} wall {wall:.3f} s  cpu {cpu:.3f} s  imports {imports:.3f} s"
            f"  heavy libraries imported: {heavy}"
        )
    print(
        f"  tripline-agent --once start  {f[f'{prefix}agent_once_start_s']:.3f} s"
        f" (wall less its {ONCE_SAMPLE_WAIT} s CPU sampling wait)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    f = run(args)
    print(
        f"command start time, best of {f['runs']} (wall: process start to exit;"
        " cpu: its user + system time; imports: -X importtime's total)"
    )
    if f["baseline"]:
        print(f"baseline ({args.baseline}):")
        _print(f, "baseline_")
        print("this tree:")
    _print(f, "")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    if args.json:
        print("json: " + json.dumps(f))
    return 0


if __name__ == "__main__":
    sys.exit(main())
