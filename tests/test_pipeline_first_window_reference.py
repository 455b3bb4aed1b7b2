"""A model without a training profile takes a window as its reference: the first overall window of
the smallest size holding ``drift.min_count`` events, or, for a model too slow to ever fill one, the
first longer window that does (it was never scored at all). In process, stage 1 and stage 2."""

from __future__ import annotations

from collections import Counter

import orjson

from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline

START = 1_767_225_600_000  # on an hour boundary
HOURS = 4


def _settings() -> Settings:
    return Settings(
        topics={"partitions": 2, "model_events_partitions": 1},
        windows={"sizes_s": [300, 3600], "allowed_lateness_s": 5, "metrics_interval_s": 300},
        drift={"min_count": 100},
    )


def _records(settings: Settings) -> list[RawRecord]:
    """'busy': one prediction a second (300 a 5-minute window); 'slow': one every 10 s (30 a
    5-minute window, 360 an hour)."""
    events = []
    for second in range(HOURS * 3600):
        ts = START + second * 1_000
        models = ["busy"] + (["slow"] if second % 10 == 0 else [])
        for model in models:
            events.append((ts, settings.topics.predictions, orjson.dumps({
                "prediction_id": f"{model}-{second}", "model_id": model, "timestamp": ts,
                "features": {"x": float(second % 17), "c": "ab"[second % 2]},
                "prediction": {"label": "a"}})))
    offsets: Counter[int] = Counter()
    out = []
    for i, (ts, topic, value) in enumerate(events):
        partition = i % settings.topics.partitions
        out.append(RawRecord(topic, partition, offsets[partition], ts, None, value))
        offsets[partition] += 1
    return out


def _run() -> InProcessPipeline:
    settings = _settings()
    pipeline = InProcessPipeline(settings)
    records = _records(settings)
    for i in range(0, len(records), 1_000):
        pipeline.feed(records[i : i + 1_000])
    pipeline.finish(START + HOURS * 3_600_000)
    return pipeline


def test_a_model_too_slow_for_the_smallest_window_gets_its_reference_from_a_longer_one() -> None:
    pipeline = _run()
    references = {r["model_id"]: r for r in pipeline.rows["reference_profiles"]}
    assert set(references) == {"busy", "slow"}
    busy, slow = (orjson.loads(references[m]["profile"]) for m in ("busy", "slow"))
    # the busy model's reference is its first 5-minute window, as before
    assert busy["effective_from_ms"] == START + 300_000 and busy["features"]["x"]["n"] == 300
    # the slow one never fills a 5-minute window (30 events): its first hour (360 events) is its reference
    assert slow["effective_from_ms"] == START + 3_600_000 and slow["features"]["x"]["n"] == 360
    assert sum(1 for r in pipeline.rows["reference_profiles"] if r["model_id"] == "slow") == 1

    scored = [r for r in pipeline.rows["model_drift"] if r["model_id"] == "slow"]
    hours = sorted(r["window_start"] for r in scored if r["window_size_s"] == 3600 and r["reference_id"])
    # every hour after the reference window is scored against it (the reference window is not)
    assert hours == [START + h * 3_600_000 for h in range(1, HOURS)]
    assert {r["reference_id"] for r in scored if r["reference_id"]} == {slow["profile_id"]}
    scores = [r for r in pipeline.rows["drift_scores"] if r["model_id"] == "slow"
              and r["window_size_s"] == 3600 and r["feature"] == "x" and r["reference_id"]]
    assert len(scores) == HOURS - 1 and all(r["psi"] is not None for r in scores)
    # its 5-minute windows after the reference are scored too, without a verdict (30 < min_count)
    fives = [r for r in scored if r["window_size_s"] == 300 and r["reference_id"]]
    assert fives and all(not r["drifted"] for r in fives)
