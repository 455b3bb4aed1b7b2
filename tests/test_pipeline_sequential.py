"""Sequential detectors inside the pipeline: stage-1 feature banks and the stage-2 error stream.

One model, 20 features, 3 of which shift at minute 30 together with a concept drift, with a
training profile published before the traffic. The shifted features (and only they) raise
drift_alerts soon after the shift, long before the window that first shows the drift closes; the
error stream alarms after the concept drift; the alerts become retrain evidence; and the alerts
are a function of the logs alone (batching, interleaving, crash/restore change nothing).
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from driftline.config import Settings
from driftline.demo.training import training_profiles
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import ConceptDrift, CovariateDrift, LabelDelay, ModelSpec

START = 1_767_225_600_000
SHIFT_S = 1800
SHIFT_MS = START + SHIFT_S * 1000
SHIFTED = ("x2", "x7", "c1")
WINDOW_S = 300


def _settings(**overrides: object) -> Settings:
    return Settings(
        windows={"sizes_s": [WINDOW_S], "allowed_lateness_s": 30, "metrics_interval_s": 300},
        join={"label_horizon_s": 600},
        triggers={"drift_k": 1, "drift_n": 1},
        topics={"partitions": 2},
        **overrides,
    )


def _scenario() -> Scenario:
    return Scenario(
        seed=11,
        start=START,
        duration_s=3600,
        rate=20,
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


@pytest.fixture(scope="module")
def profiles() -> list[bytes]:
    settings = _settings()
    made = training_profiles(_scenario(), settings.drift.bins, settings.drift.top_k, effective_from_ms=0)
    return [p.model_dump_json().encode() for p in made]


@pytest.fixture(scope="module")
def stream() -> list[RawRecord]:
    return logged_records(generate(_scenario()), _settings())


@pytest.fixture(scope="module")
def baseline(stream: list[RawRecord], profiles: list[bytes]) -> InProcessPipeline:
    pipeline = InProcessPipeline(_settings(), profiles=profiles)
    for i in range(0, len(stream), 2000):
        pipeline.feed(stream[i : i + 2000])
    return pipeline


def _canonical(rows: dict[str, list[dict[str, object]]]) -> dict[str, list[bytes]]:
    return {t: sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rs) for t, rs in rows.items()}


def test_only_shifted_features_alert_and_soon_after_the_shift(baseline: InProcessPipeline) -> None:
    alerts = [a for a in baseline.rows["drift_alerts"] if a["source"] == "features"]
    assert {a["feature"] for a in alerts} == set(SHIFTED), alerts
    assert all(a["event_time"] >= SHIFT_MS for a in alerts), "an alert before the shift: a false alarm"
    for feature in SHIFTED:
        first = min(a["event_time"] for a in alerts if a["feature"] == feature)
        # A 1-sd shift at 20 events/s: within a minute of event time, where the first drifted
        # window only closes at the end of its 5-minute window.
        assert first - SHIFT_MS < 60_000, (feature, first - SHIFT_MS)
    drifted_ends = [r["window_end"] for r in baseline.rows["model_drift"] if r["drifted"]]
    assert min(a["event_time"] for a in alerts) < min(drifted_ends) - 120_000
    for a in alerts:
        assert a["statistic"] >= a["threshold"] > 0 and a["arl"] >= 1e6 and a["reference_id"]
        assert a["component"] and a["prediction_id"] and a["feature_kind"] in ("numeric", "categorical")


def test_error_stream_alerts_after_the_concept_drift_only(baseline: InProcessPipeline) -> None:
    errors = [a for a in baseline.rows["drift_alerts"] if a["source"] == "errors"]
    assert errors, "the accuracy drop (0.9 -> ~0.58) must raise an error-stream alert"
    assert all(a["feature"] == "__error__" and a["event_time"] >= SHIFT_MS for a in errors), errors
    assert min(a["event_time"] for a in errors) < SHIFT_MS + 300_000
    assert errors[0]["reference_id"] == "baseline"  # the training profile carries the accuracy


def test_alerts_are_retrain_evidence(baseline: InProcessPipeline) -> None:
    triggers = [orjson.loads(t) for t in baseline.triggers if orjson.loads(t)["reason"] == "drift"]
    assert triggers
    windows = triggers[0]["evidence"]["windows"]
    assert any(w["evidence"].get("sequential_alerts") for w in windows), windows


def test_alerts_without_a_training_profile_come_from_the_error_stream_only(stream: list[RawRecord]) -> None:
    pipeline = InProcessPipeline(_settings())
    for i in range(0, len(stream), 3000):
        pipeline.feed(stream[i : i + 3000])
    assert {a["source"] for a in pipeline.rows["drift_alerts"]} == {"errors"}
    assert all(a["reference_id"] == "warmup" for a in pipeline.rows["drift_alerts"])


def test_disabled_means_no_alerts(stream: list[RawRecord], profiles: list[bytes]) -> None:
    # The whole stream, shift included: enabled, it alerts (see the baseline tests).
    pipeline = InProcessPipeline(_settings(sequential={"enabled": False}), profiles=profiles)
    for i in range(0, len(stream), 3000):
        pipeline.feed(stream[i : i + 3000])
    assert pipeline.rows["model_drift"] and not pipeline.rows.get("drift_alerts")


def test_alerts_do_not_depend_on_batching(
    stream: list[RawRecord], profiles: list[bytes], baseline: InProcessPipeline
) -> None:
    rng = random.Random(5)
    other = InProcessPipeline(_settings(), profiles=profiles)
    i = 0
    while i < len(stream):
        n = rng.choice([1, 7, 300, 4999])
        other.feed(stream[i : i + n])
        i += n
    assert _canonical(other.rows) == _canonical(baseline.rows)


def test_crash_and_restore_reproduces_the_alerts(
    stream: list[RawRecord], profiles: list[bytes], baseline: InProcessPipeline, feed_with_crashes: Any
) -> None:
    batches = [stream[i : i + 1700] for i in range(0, len(stream), 1700)]
    crash_at = {len(batches) // 2 + 1, (3 * len(batches)) // 4}
    pipeline = InProcessPipeline(_settings(), profiles=profiles)
    deduped = feed_with_crashes(pipeline, batches, crash_at, every=5)
    assert _canonical(deduped)["drift_alerts"] == _canonical(baseline.rows)["drift_alerts"]
    assert _canonical(deduped) == _canonical(baseline.rows)
