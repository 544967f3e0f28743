"""1 worker against N workers in one run: ``python -m bench.workers_compare``.

Runs ``bench.loadgen`` once per worker count, one after the other, with the same
arguments (same generator, same offered load; no baseline, no idle /metrics comparison)
and prints one row per count and the ratio of applied reports/s to one worker's (to the
first count's without 1; give ``--counts 2,1`` to run them the other way round)::

    python -m bench.workers_compare --counts 1,2 -- --agents 5000 --interval 3 --duration 40

Issue 10's target: 2 workers apply >= 1.7x the reports/s of 1 worker at saturation. Offer
more than the largest count applies (on the 2-core machine ``--interval 5``, 1,000
reports/s, no longer saturates two workers: they apply all of it and the ratio is capped
at offered / one worker's); a run that lost nothing in the window was not saturated.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from bench import loadgen

COLUMNS = (
    ("workers", "workers", "{}"),
    ("reports_per_second", "reports/s applied", "{:.1f}"),
    ("ack_p50_ms", "ack p50 ms", "{:.0f}"),
    ("ack_p99_ms", "ack p99 ms", "{:.0f}"),
    ("client_lost", "lost", "{}"),
    ("client_stream_errors", "stream errors", "{}"),
    ("store_contended", "contended commits", "{:.0f}"),
    ("store_went_unhealthy", "store unhealthy", "{:.0f}"),
    ("offline_tickets", "offline tickets", "{}"),
    ("collector_cpu_percent", "collector CPU %", "{:.0f}"),
    ("machine_busy_percent", "machine busy %", "{:.0f}"),
)


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 1,2, got {text!r}") from None
    if not counts or not all(1 <= c <= 64 for c in counts):
        raise argparse.ArgumentTypeError("each count must be 1..64")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.workers_compare", description=__doc__)
    p.add_argument("--counts", type=_counts, default=[1, 2], help="worker counts (default 1,2)")
    p.add_argument("--json", action="store_true", help="also print every run's figures")
    p.add_argument("loadgen_args", nargs="*", help="bench.loadgen arguments (after --)")
    args = p.parse_args(argv)
    runs: list[dict[str, Any]] = []
    for count in args.counts:
        largs = loadgen.parse_args(
            [*args.loadgen_args, "--no-baseline", "--no-compare", f"--workers={count}"]
        )
        print(f"--- {count} worker(s)", flush=True)
        try:
            figures = loadgen.run(largs)
        except loadgen.BenchError as exc:
            print(f"workers_compare: {count} worker(s) failed: {exc}", file=sys.stderr)
            return 1
        loadgen.report(figures)
        runs.append(figures)
    print("| " + " | ".join(title for _, title, _ in COLUMNS) + " | saturated | ratio |")
    print("|" + " --- |" * (len(COLUMNS) + 2))
    # against one worker when it ran (counts may come in any order), else the first count
    first = next((f for f in runs if f["workers"] == 1), runs[0])["reports_per_second"]
    for f in runs:
        cells = ["-" if f.get(key) is None else fmt.format(f[key]) for key, _, fmt in COLUMNS]
        ratio = f["reports_per_second"] / first if first else float("nan")
        # reports still unacked when the window closed: the collector fell behind the offer
        saturated = "yes" if f.get("client_lost") else "no"
        print("| " + " | ".join(cells) + f" | {saturated} | {ratio:.2f}x |")
    if args.json or "--json" in args.loadgen_args:
        print("json: " + json.dumps(runs, default=str))
    ok = all(not f["failures"] and f.get("collector_exit_code", 0) == 0 for f in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
