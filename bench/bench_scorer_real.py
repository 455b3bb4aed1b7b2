"""The batch scorer's default rule beside the pipeline's floors on the real streams in ../shared/data.

Each window of 2,000 rows is scored against the 8,000 rows before it. These streams drift, cycle and
stay drifted, so flags are expected; the figures say how often each rule flags a feature there.

    .venv/bin/python bench/bench_scorer_real.py [--data ../shared/data]

``--compiled-paths`` instead scores small windows (``--window`` rows, default 120, 200 and 600,
against the ``--reference`` rows before each, default 1,000: effective KS sizes below
``KS_EXACT_BELOW``, where the p-value is scipy's Durbin, Pomeranz or Pelz-Good method) with the C
paths off and on (``worker.compiled_paths``; the p-value cache emptied before each), and prints
per stream and size whether every verdict is the same, the largest relative gap between the two
sides' KS p-values, and each side's CPU a window (scoring only, alternating, best of 3).
"""

from __future__ import annotations

import argparse
import csv
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from driftline.config import DriftSettings
from driftline.detect import DriftScorer
from driftline.operators import drift as drift_module
from driftline.operators.compiled_paths import reference_paths

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


def compiled_against_reference(data: dict[str, np.ndarray], categorical: list[str], window: int,
                               reference: int, rounds: int = 3) -> tuple[int, int, int, float, float, float]:
    """Every ``window``-row window scored against the ``reference`` rows before it with the C paths
    off and on: (windows, KS p-values compared, windows whose verdicts differ, largest relative gap
    of a p-value, best CPU-ms a window off, on)."""
    n = len(next(iter(data.values())))
    pairs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for start in range(reference, n - window, window):
            scorer = DriftScorer.from_reference({c: v[start - reference : start] for c, v in data.items()},
                                                categorical=categorical, drift=DriftSettings())
            pairs.append((scorer, {c: v[start : start + window] for c, v in data.items()}))
    best = {False: float("inf"), True: float("inf")}
    reports: dict[bool, list] = {}
    for _ in range(rounds):
        for compiled in (False, True):
            drift_module.clear_pvalue_cache()
            started = time.process_time()
            if compiled:
                reports[compiled] = [scorer.score(win) for scorer, win in pairs]
            else:
                with reference_paths():
                    reports[compiled] = [scorer.score(win) for scorer, win in pairs]
            best[compiled] = min(best[compiled], time.process_time() - started)
    drift_module.clear_pvalue_cache()
    compared, differ, gap = 0, 0, 0.0
    for off, on in zip(reports[False], reports[True], strict=True):
        differ += off.drifted_features != on.drifted_features
        for name in off.features:
            a, b = off[name].ks_pvalue, on[name].ks_pvalue
            if a is not None and b is not None:
                compared += 1
                gap = max(gap, abs(a - b) / a if a else abs(b))
    return (len(pairs), compared, differ, gap, best[False] / len(pairs) * 1e3, best[True] / len(pairs) * 1e3)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--compiled-paths", action="store_true",
                        help="small windows' verdicts and KS p-values, C paths off and on (docstring)")
    parser.add_argument("--window", type=int, nargs="+", default=[120, 200, 600])
    parser.add_argument("--reference", type=int, default=1_000)
    args = parser.parse_args(argv)
    for file, drop, categorical in STREAMS:
        path = args.data / file
        if not path.exists():
            print(f"{file}: not found under {args.data}; skipped")
            continue
        data = load(path, drop)
        if args.compiled_paths:
            for window in args.window:
                windows, compared, differ, gap, off, on = compiled_against_reference(
                    data, categorical, window, args.reference)
                print(f"{file}: windows of {window} rows against {args.reference}: {windows} windows, "
                      f"verdicts differing {differ}, {compared:,} KS p-values, largest relative gap "
                      f"{gap:.1e}; scoring {off:.2f} ms a window with the C paths off, {on:.2f} on "
                      f"({on / off:.2f}x)")
            continue
        for label, drift in (("scorer default (effect >= 0.05 sd)", None),
                             ("pipeline floors (PSI 0.2 / JS 0.1)", DriftSettings())):
            shares = flagged_shares(data, categorical, drift)
            print(f"{file}: {label}: {len(shares)} windows, mean share of features flagged "
                  f"{np.mean(shares):.2f}, windows with a flag {np.mean([s > 0 for s in shares]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
