"""The batch scorer's default rule beside the pipeline's floors on the real streams in ../shared/data.

Each window of 2,000 rows is scored against the 8,000 rows before it. These streams drift, cycle and
stay drifted, so flags are expected; the figures say how often each rule flags a feature there.

    .venv/bin/python bench/bench_scorer_real.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import csv
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from driftline.config import DriftSettings
from driftline.detect import DriftScorer

STREAMS = (  # file, columns left out, integer-coded categorical columns
    ("elec2.csv", {"class", "date"}, ["day"]),
    ("noaa_weather.csv", {"target"}, []),
)


def load(path: Path, drop: set[str]) -> dict[str, np.ndarray]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {c: np.array([float(r[c]) for r in rows]) for c in rows[0] if c not in drop}


def flagged_shares(data: dict[str, np.ndarray], categorical: list[str], drift: DriftSettings | None,
                   reference: int = 8_000, window: int = 2_000) -> list[float]:
    n = len(next(iter(data.values())))
    shares = []
    for start in range(reference, n - window, window):
        ref = {c: v[start - reference : start] for c, v in data.items()}
        win = {c: v[start : start + window] for c, v in data.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few-valued integer columns: the point is the rule, not dtypes
            if drift is None:
                scorer = DriftScorer.from_reference(ref, categorical=categorical)
            else:
                scorer = DriftScorer.from_reference(ref, categorical=categorical, drift=drift)
        shares.append(len(scorer.score(win).drifted_features) / len(data))
    return shares


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args(argv)
    for file, drop, categorical in STREAMS:
        path = args.data / file
        if not path.exists():
            print(f"{file}: not found under {args.data}; skipped")
            continue
        data = load(path, drop)
        for label, drift in (("scorer default (effect >= 0.05 sd)", None),
                             ("pipeline floors (PSI 0.2 / JS 0.1)", DriftSettings())):
            shares = flagged_shares(data, categorical, drift)
            print(f"{file}: {label}: {len(shares)} windows, mean share of features flagged "
                  f"{np.mean(shares):.2f}, windows with a flag {np.mean([s > 0 for s in shares]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
