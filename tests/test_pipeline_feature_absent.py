"""A profile feature that no event of a window carries (a sensor feed down, a field renamed
upstream) is a feature_windows row counting every event as missing and a drift_scores row saying it
was not tested, not a feature that silently vanishes from the window's rows: found replaying NOAA
with one feature dropped for 1,000 consecutive events (two whole 300 s windows had no row for it)."""

from __future__ import annotations

import random

import orjson

from driftline.config import Settings
from driftline.operators.profile import build_profile
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline

START = 1_767_225_600_000
WINDOW_MS = 300_000
SETTINGS = Settings(
    topics={"partitions": 1},
    windows={"sizes_s": [300], "allowed_lateness_s": 0, "metrics_interval_s": 300},
)


def _records() -> list[RawRecord]:
    """One event a second for four windows; the second and third carry no ``humidity`` at all."""
    rng = random.Random(7)
    out = []
    for i in range(4 * 300):
        ts = START + i * 1000
        features: dict[str, float] = {"temperature": rng.gauss(20, 3)}
        if not WINDOW_MS <= i * 1000 < 3 * WINDOW_MS:
            features["humidity"] = rng.gauss(60, 10)
        value = orjson.dumps({
            "schema_version": 1, "prediction_id": f"p{i}", "model_id": "weather", "model_version": "1",
            "timestamp": ts, "features": features, "prediction": {"label": "dry", "score": 0.8},
        })
        out.append(RawRecord("driftline.predictions", 0, i, ts, f"p{i}".encode(), value))
    return out


def _profile() -> bytes:
    rng = random.Random(3)
    columns = {"temperature": [rng.gauss(20, 3) for _ in range(2000)],
               "humidity": [rng.gauss(60, 10) for _ in range(2000)]}
    profile = build_profile("weather", "1", columns, label_column=None, prediction_column=None,
                            bins=10, top_k=10, created_at_ms=START)
    return profile.model_dump_json().encode()


def test_a_feature_absent_from_a_whole_window_is_a_row_of_missing_values() -> None:
    pipeline = InProcessPipeline(SETTINGS, "absent", [_profile()])
    records = _records()
    for i in range(0, len(records), 250):
        pipeline.feed(records[i : i + 250])
    pipeline.finish(START + 4 * WINDOW_MS)
    windows = {(r["feature"], r["window_start"]): r for r in pipeline.rows["feature_windows"]
               if r["segment"] == ""}
    scores = {(r["feature"], r["window_start"]): r for r in pipeline.rows["drift_scores"]
              if r["segment"] == ""}
    model = {r["window_start"]: r for r in pipeline.rows["model_drift"] if r["segment"] == ""}
    for k in range(4):
        start = START + k * WINDOW_MS
        absent = k in (1, 2)
        humidity = windows[("humidity", start)]
        assert (humidity["count"], humidity["missing"]) == (300, 300 if absent else 0)
        assert humidity["mean"] is None if absent else humidity["mean"] is not None
        assert humidity["reference_id"] == windows[("temperature", start)]["reference_id"] != ""
        score = scores[("humidity", start)]
        assert (score["count"], score["drifted"]) == (0 if absent else 300, False)
        assert model[start]["n_features"] == 2
