"""What local checks add to one agent collection, on this machine's real processes.

Prints the median collection time of a Prober without process checks (the plain pid
count), with one name check, one command-line check, 32 command-line checks, and of
the textfile collector over 100 files of 5 series, unchanged (cached) and parsed anew.
Usage:

    python -m bench.local_checks [--repeat 30]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from tripline.agent.checks import ProcessCheck
from tripline.agent.probes import Prober
from tripline.agent.textfile import Textfile


def median_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # baselines (CPU snapshots, psutil's process cache)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", action="store_true", help="also print one json: line")
    args = parser.parse_args()
    figures: dict[str, float] = {}
    print(f"processes: {len(psutil.pids())}, median of {args.repeat} collections")

    def prober(**kwargs: object) -> Callable[[], object]:
        p = Prober(collect_processes=False, **kwargs)  # type: ignore[arg-type]
        return lambda: p.collect(time.time())

    name = [ProcessCheck("av", process=re.compile(r"MsMpEng\.exe"))]
    cmdline = [ProcessCheck("sync", cmdline=re.compile(r".*backup.*"))]
    many = [ProcessCheck(f"c{i}", cmdline=re.compile(rf".*backup{i}.*")) for i in range(32)]
    for key, label, run in (
        ("no_checks_ms", "no process checks (pid count)", prober()),
        ("name_check_ms", "1 process-name check", prober(process_checks=name)),
        ("cmdline_check_ms", "1 command-line check", prober(process_checks=cmdline)),
        ("cmdline_checks_32_ms", "32 command-line checks", prober(process_checks=many)),
    ):
        figures[key] = median_ms(run, args.repeat)
        print(f"{label:48s} {figures[key]:8.2f} ms")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for i in range(100):
            lines = "".join(f'job{i}_ok{{n="{j}"}} {j}\n' for j in range(5))
            (directory / f"f{i:03d}.prom").write_text(lines, encoding="utf-8")
        reader = Textfile(directory, max_age=3600, max_series=1000)
        cached = figures["textfile_unchanged_ms"] = median_ms(
            lambda: reader.read(time.time()), args.repeat
        )
        print(f"{'textfile, 100 files x 5 series, unchanged':48s} {cached:8.2f} ms")

        def fresh() -> object:
            return Textfile(directory, max_age=3600, max_series=1000).read(time.time())

        parsed = figures["textfile_parsed_ms"] = median_ms(fresh, min(10, args.repeat))
        print(f"{'textfile, 100 files x 5 series, all parsed':48s} {parsed:8.2f} ms")
    if args.json:
        print("json: " + json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
