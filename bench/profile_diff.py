"""Two py-spy profiles of the same work side by side: where one run's CPU goes beyond the other's.

Reads py-spy's raw (collapsed) output of two runs, keeps the samples under a frame that names the
timed part (``--under``, e.g. bench_models' timed feed ``run (bench_models.py:272)``: a substring of
the frame), and prints per function (line numbers dropped) its inclusive CPU per item in each run
and their difference, largest first. ``--per-item US``: the first run's measured CPU per item,
which scales samples to microseconds (both runs are taken to cover the same number of items, as
bench_models' two children do); without it, shares of the first run's samples.

    py-spy record -s -r 250 -f raw -o models.raw -- .venv/bin/python bench/bench_models.py \\
        --models 300 --n 200000 --rate 5000
    grep "child many" models.raw > many.raw; grep "child one" models.raw > one.raw
    .venv/bin/python bench/profile_diff.py many.raw one.raw --under "run (bench_models.py:272)" \\
        --per-item 42.8 [--depth 8] [--top 45]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

_LINE = re.compile(r":\d+\)")


def inclusive(path: Path, under: str, depth: int) -> tuple[Counter[str], int]:
    """Samples per function within ``depth`` frames below the innermost frame naming ``under``
    (each function counted once a stack), and the samples under it in all."""
    found: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if under not in stack:
            continue
        samples = int(count)
        total += samples
        frames = stack.split(";")
        top = max(i for i, frame in enumerate(frames) if under in frame)
        seen = {_LINE.sub(")", frame) for frame in frames[top + 1 : top + 1 + depth]}
        for function in seen:
            found[function] += samples
    return found, total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--under", required=True, help="a substring of the frame that names the timed part")
    parser.add_argument("--per-item", type=float, default=None, help="the first run's CPU-us per item")
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--top", type=int, default=45)
    args = parser.parse_args(argv)
    first, first_total = inclusive(args.first, args.under, args.depth)
    second, second_total = inclusive(args.second, args.under, args.depth)
    if not first_total:
        raise SystemExit(f"no samples under {args.under!r} in {args.first}")
    scale = (args.per_item if args.per_item is not None else 100.0) / first_total
    unit = "us" if args.per_item is not None else "%"
    print(f"samples {first_total:,} and {second_total:,}; {unit} per item: first, second, difference")
    for function in sorted(set(first) | set(second), key=lambda f: second[f] - first[f])[: args.top]:
        a, b = first[function] * scale, second[function] * scale
        print(f"{a:8.2f} {b:8.2f} {a - b:+8.2f}  {function}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
