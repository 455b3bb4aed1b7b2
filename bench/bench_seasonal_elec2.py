"""elec2 replayed in its own time (a row every 30 min), profiled on its first weeks, with and without
a daily season (docs/real-data.md, finding 4).

    .venv/bin/python bench/bench_seasonal_elec2.py [--weeks 4] [--rows N]

Rows become prediction events at 2026-01-01T00:00Z + row x 30 min (the rows are half-hourly and
row 0 is ``period`` 0, so the UTC hours are elec2's), the first ``--weeks`` weeks are the training
table and the rows after them are replayed. Windows of 3 days (144 events, above drift.min_count)
feed the retrain policy. Prints, per profile, the episodes (with the features that opened them)
and the drift triggers. elec2 has real drift (the imputed Victorian values end at row 17,424,
prices move over the years): zero is not the aim, the difference is.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from driftline.config import Settings
from driftline.operators.model_watch import multivariate_section
from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.operators.seasonal import DAILY, fit_season, seasonal_multivariate_section
from driftline.replay.run import replay_files
from driftline.store.writer import MemoryRowWriter

ELEC2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "elec2.csv"
START = 1_767_225_600_000
ROW_MS = 1_800_000
WINDOW_S = 3 * 86_400


def load(rows: int | None) -> tuple[list[str], dict[str, np.ndarray], list[str]]:
    with ELEC2.open() as f:
        reader = csv.DictReader(f)
        data = [r for _, r in zip(range(rows or 10**9), reader, strict=False)]
    names = [n for n in data[0] if n != "class"]
    return names, {n: np.array([float(r[n]) for r in data]) for n in names}, [r["class"] for r in data]


def profile(columns: dict[str, np.ndarray], times: np.ndarray, *, seasonal: bool) -> ReferenceProfile:
    season = fit_season(columns, times, DAILY, bins=10) if seasonal else None
    multivariate = (seasonal_multivariate_section(season, columns, times, bins=10) if season is not None
                    else multivariate_section(columns, bins=10))
    return build_profile("elec", "1", {n: c.tolist() for n, c in columns.items()}, label_column=None,
                         prediction_column=None, bins=10, top_k=10, created_at_ms=START,
                         multivariate=multivariate, season=season)


def replay(events: Path, reference: ReferenceProfile) -> dict[str, Any]:
    writer = MemoryRowWriter()
    settings = Settings(windows={"sizes_s": [WINDOW_S]})
    began = time.perf_counter()
    replay_files(settings, "elec-season", writer, events, None,
                 profiles=[reference.model_dump_json().encode()])
    latest: dict[str, dict[str, Any]] = {}
    for row in writer.rows["drift_episodes"]:
        if row["episode_id"] not in latest or row["version"] >= latest[row["episode_id"]]["version"]:
            latest[row["episode_id"]] = row
    windows = [r for r in writer.rows["model_drift"] if r["segment"] == ""]
    opened = sorted(((e["opened_at"] - START) // ROW_MS, e["feature"], e["opened_component"])
                    for e in latest.values())
    triggers = sorted((t["triggered_at"] - START) // ROW_MS for t in writer.rows["retrain_triggers"])
    return {"episodes": Counter(e["feature"] for e in latest.values()), "triggers": len(triggers),
            "opened": opened, "trigger_rows": triggers,
            "windows": f"{sum(bool(r['drifted']) for r in windows)}/{len(windows)}",
            "seconds": time.perf_counter() - began}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=4, help="training weeks (default 4)")
    parser.add_argument("--rows", type=int, help="rows read (default: all 45,312)")
    parser.add_argument("--drop", nargs="*", default=["date"], metavar="COLUMN",
                        help="columns left out (default: date, a trend that drifts every window; "
                        "as most users of elec2 do)")
    args = parser.parse_args()
    if not ELEC2.exists():
        print(f"{ELEC2} not found", file=sys.stderr)
        return 1
    names, columns, labels = load(args.rows)
    names = [n for n in names if n not in args.drop]
    columns = {n: columns[n] for n in names}
    times = START + np.arange(len(labels), dtype=np.int64) * ROW_MS
    train = args.weeks * 7 * 48
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "elec.jsonl"
        with events.open("w") as f:
            for i in range(train, len(labels)):
                f.write(json.dumps({"prediction_id": f"e{i}", "model_id": "elec", "model_version": "1",
                                    "timestamp": int(times[i]), "prediction": {"label": labels[i]},
                                    "features": {n: float(columns[n][i]) for n in names}}) + "\n")
        for seasonal in (False, True):
            reference = profile({n: c[:train] for n, c in columns.items()}, times[:train], seasonal=seasonal)
            followed = sorted(reference.season.features) if reference.season is not None else []
            result = replay(events, reference)
            print(f"{'seasonal' if seasonal else 'pooled':8}  episodes {sum(result['episodes'].values()):3d} "
                  f"({', '.join(f'{k} {v}' for k, v in sorted(result['episodes'].items()))})  "
                  f"triggers {result['triggers']:3d}  drifted 3-day windows {result['windows']}  "
                  f"{result['seconds']:.1f} s")
            if followed:
                print(f"          following the cycle: {', '.join(followed)}")
            print("          opened at row: " + ", ".join(f"{f} {r} ({c})" for r, f, c in result["opened"]))
            print(f"          triggers at row: {result['trigger_rows']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
