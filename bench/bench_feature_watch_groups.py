"""FeatureWatch on real streams cut into a model's few events per call, as many models make it.

Elec2 and NOAA weather (``/work/shared/data``, read in place; their first 5,000 rows are the
training profile, the next 10,000 the traffic, half-hourly): the same stream fed to
``FeatureWatch.observe`` in one call and in groups of 1-7 events (the list path a group under
``PER_VALUE_BELOW`` takes). Prints whether the reports are equal, feature by feature (they must be:
episodes open, escalate and close on these streams), and the CPU time per event of each.

    .venv/bin/python bench/bench_feature_watch_groups.py
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.profile import ReferenceProfile, build_profile

DATA = Path("/work/shared/data")
STREAMS = {"elec2.csv": {"class", "date"}, "noaa_weather.csv": set()}  # columns that are not features
TRAINING, TRAFFIC, STEP_MS = 5000, 10_000, 1_800_000


def _numeric_columns(path: Path, skip: set[str]) -> dict[str, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for name in rows[0]:
        if name in skip:
            continue
        try:
            out[name] = np.array([float(r[name]) for r in rows], dtype=np.float64)
        except ValueError:
            continue  # a text column
    return out


def _watch(profile: ReferenceProfile) -> FeatureWatch:
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=86_400_000)
    watch.add_profile(profile)
    return watch


def _by_feature(reports: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        out.setdefault(str(report["feature"]), []).append(report)
    return out


def measure(path: Path, skip: set[str]) -> tuple[bool, int, float, float]:
    """(reports equal, reports, CPU us/event in one call, in groups of 1-7)."""
    columns = _numeric_columns(path, skip)
    profile = build_profile("m", "1", {n: c[:TRAINING] for n, c in columns.items()}, label_column=None,
                            prediction_column=None, bins=10, top_k=5, created_at_ms=0, source="training")
    names = list(columns)
    traffic = np.column_stack([columns[n][TRAINING:TRAINING + TRAFFIC] for n in names]).tolist()
    features = [dict(zip(names, row, strict=True)) for row in traffic]
    times = [i * STEP_MS for i in range(len(features))]
    ids = [f"p{i}" for i in range(len(features))]
    _watch(profile).observe("m", "1", times[:1], ids[:1], features[:1])  # the process's bank cache warm
    started = time.process_time()
    whole = _watch(profile).observe("m", "1", times, ids, features)
    whole_s = time.process_time() - started
    rng, watch, grouped, lo = np.random.default_rng(0), _watch(profile), [], 0
    cuts = []
    while lo < len(features):
        cuts.append((lo, hi := min(len(features), lo + int(rng.integers(1, 8)))))
        lo = hi
    started = time.process_time()
    for lo, hi in cuts:
        grouped += watch.observe("m", "1", times[lo:hi], ids[lo:hi], features[lo:hi])
    grouped_s = time.process_time() - started
    n = len(features)
    return _by_feature(grouped) == _by_feature(whole), len(whole), whole_s / n * 1e6, grouped_s / n * 1e6


def main(argv: list[str] | None = None) -> int:
    missing = [str(DATA / f) for f in STREAMS if not (DATA / f).is_file()]
    if missing:
        print(f"data not found: {missing}")
        return 1
    ok = True
    for file, skip in STREAMS.items():
        equal, n_reports, whole_us, grouped_us = measure(DATA / file, skip)
        ok &= equal
        print(f"{file}: {n_reports} reports, equal in groups of 1-7: {equal}; CPU {whole_us:.1f} us/event "
              f"in one call, {grouped_us:.1f} in groups ({grouped_us / whole_us:.1f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
