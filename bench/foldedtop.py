"""Top functions of a py-spy profile in collapsed-stack form (``py-spy record --format raw``).

    py-spy record --format raw -o /tmp/collector.txt --pid PID --duration 30
    python -m bench.foldedtop /tmp/collector.txt

Prints the frames with the most samples on top of the stack (self) and anywhere in it
(total, each frame counted once per stack), as shares of all samples.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path


def summarize(lines: list[str]) -> tuple[int, Counter[str], Counter[str]]:
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return total, own, inclusive


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.foldedtop", description=__doc__.split("\n")[0]
    )
    p.add_argument("file", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    total, own, inclusive = summarize(args.file.read_text().splitlines())
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples")
    for title, counter in (("self", own), ("total", inclusive)):
        print(f"-- top {args.top} by {title}")
        for frame, count in counter.most_common(args.top):
            print(f"{100 * count / total:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
