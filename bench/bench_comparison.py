"""What champion/challenger comparison costs the in-process pipeline: the same shadow traffic
(a champion and its challenger scoring every request) with ``comparison`` off and on.

    .venv/bin/python bench/bench_comparison.py [--seconds 1800] [--rate 20] [--repeats 3]

Each configuration runs ``--repeats`` times, alternating, on the same records; the figure is the
best CPU time of each (``time.process_time``: the box is shared), per prediction, and their ratio.
Comparison works on the label clock only (per closed outcome interval, per pair and segment), so
its cost grows with outcomes, not with features.
"""

from __future__ import annotations

import argparse
import time

from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.simulate import LabelDelay, ModelSpec, Scenario, generate

START = 1_767_225_600_000


def settings(compare: bool) -> Settings:
    pair = {"model_id": "m", "champion": "1", "challenger": "2", "mode": "shadow"}
    comparison: dict[str, object] = {"pairs": [pair], "request_separator": "-v"} if compare else {}
    return Settings(windows={"sizes_s": [300], "metrics_interval_s": 60, "segment_keys": []},
                    join={"label_horizon_s": 600}, topics={"partitions": 2}, comparison=comparison)


def run(compare: bool, records: list[RawRecord], end_ms: int) -> tuple[float, int]:
    pipeline = InProcessPipeline(settings(compare))
    t0 = time.process_time()
    for i in range(0, len(records), 2000):
        pipeline.feed(records[i : i + 2000])
    pipeline.finish(end_ms)
    return time.process_time() - t0, len(pipeline.rows.get("version_comparison", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=1800)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scenario = Scenario(seed=3, start=START, duration_s=args.seconds, rate=args.rate,
                        models=[ModelSpec(model_id="m", n_numeric=20, n_categorical=5, challenger=True)],
                        label_delay=LabelDelay(median_s=20, max_s=120))
    records = logged_records(generate(scenario), settings(False))
    predictions = sum(1 for r in records if r.topic == settings(False).topics.predictions)
    end_ms = START + args.seconds * 1000 + 600_000
    best = {False: float("inf"), True: float("inf")}
    rows = 0
    for _ in range(args.repeats):
        for compare in (False, True):
            seconds, n = run(compare, records, end_ms)
            best[compare] = min(best[compare], seconds)
            rows = max(rows, n)
    off, on = (best[c] / predictions * 1e6 for c in (False, True))
    print(f"{predictions} predictions (champion + challenger, 25 features), {rows} version_comparison rows")
    print(f"pipeline CPU per prediction: comparison off {off:.1f} us, on {on:.1f} us, ratio {on / off:.3f}")


if __name__ == "__main__":
    main()
