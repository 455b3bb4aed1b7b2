"""A busy stationary stream against a seasonal profile of few training values per hour (ceda8d9).

    .venv/bin/python bench/bench_seasonal_sparse.py [--train-step 300] [--live-step 2] [--live-days 1]

Training: two days of ``load = 10 + 3 sin(2 pi t / day) + N(0, 1)`` and ``other = N(5, 1)`` (no
cycle), one value per ``--train-step`` seconds; live: the same stationary stream, one event per
``--live-step`` seconds. Prints, for the pooled and the ``daily`` seasonal profile, the episodes
opened, the drift triggers, the hour windows drifted, the windows in which ``other`` drifted and
the multivariate outlier-rate windows (300 s and 3600 s) found significant.
Nothing changes in the stream, so every episode and trigger is a false alarm.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import orjson

from driftline.config import Settings
from driftline.operators.model_watch import multivariate_section
from driftline.operators.profile import build_profile
from driftline.operators.seasonal import DAILY, fit_season, seasonal_multivariate_section
from driftline.replay.run import replay_files
from driftline.store.writer import MemoryRowWriter

DAY_S = 86_400
START = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def stream(seed: int, first_s: float, days: float, step: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    t = first_s + np.arange(int(days * DAY_S / step)) * step
    load = 10 + 3 * np.sin(2 * np.pi * t / DAY_S) + rng.normal(size=t.size)
    return (START + t * 1000).astype(np.int64), {"load": load, "other": rng.normal(5, 1, size=t.size)}


def run(seasonal: bool, train_step: float, live_step: float, live_days: float) -> str:
    times, columns = stream(1, 0, 2, train_step)
    season = fit_season(columns, times, DAILY, bins=10) if seasonal else None
    section = (seasonal_multivariate_section(season, columns, times, bins=10) if season is not None
               else multivariate_section(columns, bins=10))
    profile = build_profile("m", "1", columns, label_column=None, prediction_column=None, bins=10, top_k=10,
                            created_at_ms=START, multivariate=section, season=season)
    live_times, live = stream(2, 2 * DAY_S, live_days, live_step)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.jsonl"
        with path.open("wb") as f:
            for i, (ts, load, other) in enumerate(zip(live_times.tolist(), live["load"].tolist(),
                                                      live["other"].tolist(), strict=True)):
                f.write(orjson.dumps({"prediction_id": f"p{i}", "model_id": "m", "model_version": "1",
                                      "timestamp": ts, "features": {"load": load, "other": other},
                                      "prediction": {"label": "a"}}) + b"\n")
        writer = MemoryRowWriter()
        replay_files(Settings(), "sparse", writer, path, None, profiles=[profile.model_dump_json().encode()])
    rows = writer.rows
    opened = sorted((r["feature"], r["component"]) for r in rows["drift_alerts"]
                    if r.get("event_kind") == "opened")
    hours = [r for r in rows["model_drift"] if r["segment"] == "" and r["window_size_s"] == 3600]
    other = sum(1 for r in rows["drift_scores"] if r["feature"] == "other" and r["drifted"])
    outliers = [r for r in rows["outlier_rate"] if r["segment"] == ""]
    following = sorted(season.features) if season is not None else []
    return (f"{'seasonal' if seasonal else 'pooled':8}  {live_times.size:,} events  episodes opened "
            f"{len(opened)} {opened}  triggers {len(rows['retrain_triggers'])}  hour windows drifted "
            f"{sum(r['drifted'] for r in hours)}/{len(hours)}  windows with other drifted {other}  "
            f"outlier-rate windows significant {sum(r['significant'] for r in outliers)}/{len(outliers)}"
            + (f"  following the cycle: {', '.join(following)}" if seasonal else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--train-step", type=float, default=300, help="seconds between training values")
    parser.add_argument("--live-step", type=float, default=2, help="seconds between live events")
    parser.add_argument("--live-days", type=float, default=1, help="days of live stream")
    args = parser.parse_args()
    for seasonal in (False, True):
        print(run(seasonal, args.train_step, args.live_step, args.live_days), flush=True)


if __name__ == "__main__":
    main()
