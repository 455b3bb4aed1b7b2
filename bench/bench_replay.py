"""Replay speed on one core: the in-process pipeline (both stages, pure operators) fed from
pre-generated records, rows drained to a counting writer — no broker, no consumer group, no
ClickHouse.

Run: .venv/bin/python bench/bench_replay.py [--duration 1800] [--rate 50] [--batch 5000]
Workload: one simulated model with 20 numeric + 5 categorical features, labels for every
prediction (median delay 30 s), default windows (300 s and 3600 s), 4 partitions; the process
is pinned to one CPU. Prints events/s, where an event is one prediction or label record.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from driftline.config import Settings
from driftline.replay.engine import Replayer
from driftline.replay.files import FileEvent, to_records
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import CovariateDrift, LabelDelay, ModelSpec


class CountingWriter:
    """A RowWriter that only counts."""

    def __init__(self) -> None:
        self.rows: Counter[str] = Counter()

    def write(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        self.rows[table] += len(rows)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=1800, help="simulated seconds")
    parser.add_argument("--rate", type=float, default=50, help="predictions per simulated second")
    parser.add_argument("--batch", type=int, default=5000, help="records per micro-batch")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    settings = Settings()
    scenario = Scenario(
        seed=1, start=1_767_225_600_000, duration_s=args.duration, rate=args.rate,
        models=[ModelSpec(model_id="bench", n_numeric=20, n_categorical=5, covariate_drift=[
            CovariateDrift(feature="x3", at_s=args.duration / 2, magnitude=1.0)])],
        label_delay=LabelDelay(median_s=30, max_s=600),
    )
    t0 = time.perf_counter()
    events = list(generate(scenario))
    predictions = [FileEvent(e.key, e.timestamp_ms, e.value) for e in events if e.kind != "labels"]
    labels = [FileEvent(e.key, e.timestamp_ms, e.value) for e in events if e.kind == "labels"]
    records = to_records(settings, predictions, labels)
    print(f"generated {len(records):,} records ({len(predictions):,} predictions, {len(labels):,} labels) "
          f"in {time.perf_counter() - t0:.1f}s")

    writer = CountingWriter()
    replayer = Replayer(settings, "bench", writer)
    start = time.perf_counter()
    for i in range(0, len(records), args.batch):
        replayer.feed(records[i : i + args.batch])
    result = replayer.finish()
    elapsed = time.perf_counter() - start
    print(f"replayed {result.records:,} records in {elapsed:.2f}s on one core: "
          f"{result.records / elapsed:,.0f} events/s ({len(predictions) / elapsed:,.0f} predictions/s)")
    print("rows: " + ", ".join(f"{t}={n:,}" for t, n in sorted(writer.rows.items())))


if __name__ == "__main__":
    main()
