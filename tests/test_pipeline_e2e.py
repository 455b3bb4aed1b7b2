"""The full pure pipeline (stage 1 -> stage 2 -> rows) on a seeded synthetic stream.

20 features, 3 of which shift at minute 30 together with a concept drift: the shifted features
are flagged after the shift and the clean ones never; recency-weighted accuracy tracks the true
accuracy; the detector alarms after the drop; exactly one retrain trigger. And the results are a
function of the logs alone: batching, topic interleaving, and crash/restore change nothing.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.pipeline.gauges import by_series
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import ConceptDrift, CovariateDrift, LabelDelay, ModelSpec

START = 1_767_225_600_000
SHIFT_S = 1800
SHIFTED = ("x2", "x7", "c1")
# Events a second. At 10/s the recency-weighted accuracy stays within 0.015 of the truth (the tests
# allow 0.05), no clean feature is flagged in any of 180 windows, the detector alarms 31 s after the
# drop; 20/s cost twice the CPU and checked nothing more.
RATE = 10


def _settings() -> Settings:
    return Settings(
        windows={"sizes_s": [300], "allowed_lateness_s": 30, "metrics_interval_s": 300},
        join={"label_horizon_s": 600},
        triggers={"drift_k": 3, "drift_n": 4},
    )


def _records(settings: Settings, duration_s: int = 3600, rate: float = RATE) -> list[RawRecord]:
    scenario = Scenario(
        seed=7,
        start=START,
        duration_s=duration_s,
        rate=rate,
        models=[
            ModelSpec(
                model_id="m",
                n_numeric=17,
                n_categorical=3,
                accuracy=0.9,
                covariate_drift=[CovariateDrift(feature=f, at_s=SHIFT_S, magnitude=1.0) for f in SHIFTED],
                concept_drift=ConceptDrift(at_s=SHIFT_S, magnitude=0.4),
            )
        ],
        label_delay=LabelDelay(median_s=30, max_s=300),
        malformed_rate=0.01,
    )
    return logged_records(generate(scenario), settings)


@pytest.fixture(scope="module")
def stream() -> list[RawRecord]:
    return _records(_settings())


@pytest.fixture(scope="module")
def baseline(stream: list[RawRecord]) -> InProcessPipeline:
    pipeline = InProcessPipeline(_settings())
    for i in range(0, len(stream), 2000):
        pipeline.feed(stream[i : i + 2000])
    return pipeline


def _canonical(rows: dict[str, list[dict[str, object]]]) -> dict[str, list[bytes]]:
    return {t: sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rs) for t, rs in rows.items()}


def test_shifted_features_flagged_after_the_shift_and_only_they(baseline: InProcessPipeline) -> None:
    verdicts = baseline.rows["model_drift"]
    assert len(verdicts) >= 9
    shift_ms = START + SHIFT_S * 1000
    for row in verdicts:
        if row["window_start"] >= shift_ms:
            assert row["drifted"] == 1 and sorted(row["drifted_features"]) == sorted(SHIFTED), row
        elif row["window_end"] <= shift_ms:
            assert row["drifted"] == 0, row
    clean_flags = [r for r in baseline.rows["drift_scores"] if r["drifted"] and r["feature"] not in SHIFTED]
    assert clean_flags == []


def test_accuracy_tracks_truth_and_detector_alarms_after_the_drop(baseline: InProcessPipeline) -> None:
    shift_ms = START + SHIFT_S * 1000
    intervals = [
        r for r in baseline.rows["model_metrics"] if r["row_kind"] == "interval" and r["segment"] == ""
    ]
    before = [r for r in intervals if r["time"] <= shift_ms and r["time"] > START + 600_000]
    after = [r for r in intervals if r["time"] >= shift_ms + 900_000]
    assert before and after
    # Recency-weighted accuracy within 0.05 of the true accuracy (0.9 before; 0.9*0.6 + 0.1*0.4 ~ 0.58 after).
    for r in before:
        assert abs(r["accuracy_ew"] - 0.9) < 0.05, r
    for r in after:
        assert abs(r["accuracy_ew"] - r["accuracy"]) < 0.05, r
        assert r["accuracy_ew"] < 0.65
    alarms = [r["time"] for r in baseline.rows["model_metrics"] if r["row_kind"] == "alarm"]
    assert alarms and all(t >= shift_ms - 60_000 for t in alarms), alarms
    assert min(alarms) < shift_ms + 600_000
    assert all(r["label_coverage"] == 1.0 for r in intervals)


def test_exactly_one_retrain_trigger_with_evidence(baseline: InProcessPipeline) -> None:
    triggers = [orjson.loads(t) for t in baseline.triggers]
    drift_triggers = [t for t in triggers if t["reason"] == "drift"]
    assert len(drift_triggers) == 1
    last_window = drift_triggers[0]["evidence"]["windows"][-1]
    assert set(last_window["evidence"]["drifted_features"]) == set(SHIFTED)
    assert drift_triggers[0]["window_start"] >= START + SHIFT_S * 1000
    assert len(baseline.rows["retrain_triggers"]) == len(triggers)


def test_episodes_without_a_training_profile_come_from_the_error_stream_only(
    baseline: InProcessPipeline,
) -> None:
    """No training profile: the stage-1 feature monitors have no reference to watch against, the error
    stream learns its own from the first outcomes (with a profile: tests/test_pipeline_sequential.py)."""
    assert {a["source"] for a in baseline.rows["drift_alerts"]} == {"errors"}
    assert {e["source"] for e in baseline.rows["drift_episodes"]} == {"errors"}
    assert all(a["reference_id"] == "warmup" for a in baseline.rows["drift_alerts"])


def test_malformed_events_are_all_dead_lettered(baseline: InProcessPipeline, stream: list[RawRecord]) -> None:
    predictions_topic = _settings().topics.predictions  # built once: Settings() reads the environment
    predictions = [r for r in stream if r.topic == predictions_topic]
    dead = baseline.rows["dead_letters"]
    outcomes = baseline.rows["outcomes"]
    assert dead and all(d["error_kind"] and d["error_message"] for d in dead)
    # Every prediction record is either dead-lettered or accounted for by the windows.
    windowed = sum(r["n_events"] for r in baseline.rows["model_drift"])
    assert len(dead) + len(outcomes) <= len(predictions) + len(stream)
    assert windowed <= len(predictions) - len(dead)


def _interleavings(stream: list[RawRecord], seed: int) -> Iterator[list[RawRecord]]:
    """Random batch sizes, and within each batch the two topics in random relative order."""
    rng = random.Random(seed)
    i = 0
    while i < len(stream):
        n = rng.randint(1, 5000)
        batch = stream[i : i + n]
        rng.shuffle(batch)
        # keep offset order within each partition of each topic (Kafka's only guarantee)
        by_tp: dict[tuple[str, int], list[RawRecord]] = {}
        for r in sorted(batch, key=lambda r: r.offset):
            by_tp.setdefault((r.topic, r.partition), []).append(r)
        order = [(r.topic, r.partition) for r in batch]
        yield [by_tp[tp].pop(0) for tp in order]
        i += n


def test_rows_do_not_depend_on_batching_or_interleaving(
    stream: list[RawRecord], baseline: InProcessPipeline
) -> None:
    # Shift labels relative to predictions: labels run up to 2,000 records behind.
    settings = _settings()
    preds = [r for r in stream if r.topic == settings.topics.predictions]
    labels = [r for r in stream if r.topic == settings.topics.labels]
    skewed = preds[:2000] + [x for pair in zip(preds[2000:], labels, strict=False) for x in pair]
    skewed += labels[len(preds) - 2000 :]
    assert len(skewed) == len(stream)
    other = InProcessPipeline(settings)
    for batch in _interleavings(skewed, seed=3):
        other.feed(batch)
    assert _canonical(other.rows) == _canonical(baseline.rows)


def test_crash_and_restore_from_snapshots_reproduces_every_row(
    stream: list[RawRecord], baseline: InProcessPipeline, feed_with_crashes: Any
) -> None:
    """Snapshot all processors at two points, 'crash' (lose everything after), restore, re-feed
    from the snapshot's offsets: downstream sees duplicates, yet the final rows are identical."""
    batches = [stream[i : i + 1500] for i in range(0, len(stream), 1500)]
    crash_at = {len(batches) // 3, (2 * len(batches)) // 3}
    deduped = feed_with_crashes(InProcessPipeline(_settings()), batches, crash_at, every=4)
    assert _canonical(deduped) == _canonical(baseline.rows)


def test_gauges_expose_per_model_drift_and_accuracy(baseline: InProcessPipeline) -> None:
    gauges: dict[str, float] = {}
    for model in baseline.models:
        gauges.update(by_series(model.gauges()))
    assert gauges['model_drifted_features{model_id="m",model_version="1"}'] == 3.0
    assert 0.5 < gauges['model_accuracy_ew{model_id="m",model_version="1"}'] < 0.65
