"""Does a location episode tell a spread that also changes, and does a pure shift never tell one?

Synthetic, seeded: a reference of N(0, 1) (20,000 values), 5,000 reference-like values, then

* ``at once``: mean +2 sd and sd x3 for ``--values`` values;
* ``later``: mean +2 sd for 5,000 values, then sd x3 too for the rest;
* ``shift``: mean +-2 / +3 sd only (the spread unchanged) for ``--values`` values;

each over ``--runs`` seeds. Prints, per case, how many runs told the spread (an event in
``sd_ratio``: the opening or an escalation), the values from the opening (``at once``) or the
change (``later``) to that event, what it read, and every other escalation (false ones for a
steady regime).

    .venv/bin/python bench/bench_episode_spread.py [--runs 24] [--values 60000]

Before/after a change: ``PYTHONPATH=<other checkout>/src`` runs another tree's code.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np

import driftline
from driftline.detect import EpisodeEvent, EpisodeMonitor

BEFORE = 5_000
LATER = 5_000


def _events(seed: int, segments: Sequence[tuple[float, float, int]]) -> list[EpisodeEvent]:
    rng = np.random.default_rng(seed)
    mon = EpisodeMonitor.from_reference(rng.normal(size=20_000), arl=1e6)
    values = np.concatenate([rng.normal(size=BEFORE)] + [rng.normal(m, s, n) for m, s, n in segments])
    return [e for i in range(0, values.size, 1_000) for e in mon.update_many(values[i : i + 1_000])]


def _case(name: str, segments: Sequence[tuple[float, float, int]], runs: int, change_at: int | None) -> None:
    told, delays, readings, other = 0, [], [], 0
    for seed in range(runs):
        events = _events(100 + seed, segments)
        spread = [e for e in events if e.unit == "sd_ratio"]
        opened = next((e for e in events if e.kind == "opened"), None)
        other += sum(e.kind == "escalated" and e not in spread for e in events)
        if spread and opened is not None:
            told += 1
            start = opened.index if change_at is None else change_at
            delays.append(spread[0].index - start)
            readings.append(spread[0].magnitude)
        other += max(len(spread) - 1, 0)  # a spread told more than once is a false escalation too
    span = f"{min(delays)}-{max(delays)} values" if delays else "-"
    read = f"{min(readings):.2f}-{max(readings):.2f}" if readings else "-"
    print(f"{name:<22} told in {told:>2}/{runs} runs, after {span:<18} read {read:<10} "
          f"other escalations {other}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24)
    parser.add_argument("--values", type=int, default=60_000)
    args = parser.parse_args(argv)
    n = args.values
    print(f"driftline from {driftline.__file__.rsplit('/', 1)[0]}")
    _case("at once +2 sd, sd x3", [(2.0, 3.0, n)], args.runs, None)
    _case("later: +2 sd, then x3", [(2.0, 1.0, LATER), (2.0, 3.0, n - LATER)], args.runs, BEFORE + LATER)
    for shift in (2.0, -2.0, 3.0):
        _case(f"shift {shift:+g} sd only", [(shift, 1.0, n)], args.runs, None)


if __name__ == "__main__":
    main()
