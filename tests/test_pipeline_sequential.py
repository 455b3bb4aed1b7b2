"""Drift episodes inside the pipeline: stage-1 feature monitors and the stage-2 error stream.

One model, 20 features, 3 of which shift at minute 30 together with a concept drift, with a
training profile published before the traffic. The shift lasts to the end of the stream. Each
shifted feature (and only they) opens ONE drift episode soon after the shift, long before the
window that first shows the drift closes, and it stays open, kept current, with no further alarm
rows; the error stream opens its own episode after the concept drift; the episodes are retrain
evidence; and episodes and their events are a function of the logs alone (batching,
interleaving, crash/restore change nothing).
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
# Events a second. At 10/s the shifted features' episodes open within 6 s of the shift (the test
# allows 60 s) and the error stream's within 30 s (300 s); 20/s cost twice the CPU and checked
# nothing more. Without a training profile only the error stream opens episodes: that is checked on
# tests/test_pipeline_e2e.py's baseline (this scenario with another seed), not by a run of its own here.
RATE = 10


def _settings(**overrides: object) -> Settings:
    return Settings(
        windows={"sizes_s": [WINDOW_S], "allowed_lateness_s": 30, "metrics_interval_s": 300},
        join={"label_horizon_s": 600},
        # no cooldown: the lasting shift is one trigger by the policy's hysteresis alone (the
        # default 6 h cooldown outlasts this hour and would hide its loss)
        triggers={"drift_k": 1, "drift_n": 1, "cooldown_s": 0},
        topics={"partitions": 2},
        **overrides,
    )


def _scenario() -> Scenario:
    return Scenario(
        seed=11,
        start=START,
        duration_s=3600,
        rate=RATE,
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
    # univariate: the multivariate section's stage-1 detectors were a quarter of each run's CPU here;
    # their rows under batching and crash/restore are tests/test_pipeline_multivariate.py's, their
    # episodes beside these tests/test_pipeline_two_phase.py's
    made = training_profiles(_scenario(), settings.drift.bins, settings.drift.top_k, effective_from_ms=0,
                             multivariate=False)
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


def latest_episodes(rows: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """drift_episodes as FINAL reads it: the row with the highest version per episode."""
    latest: dict[str, dict[str, Any]] = {}
    for r in rows["drift_episodes"]:
        if r["episode_id"] not in latest or r["version"] > latest[r["episode_id"]]["version"]:
            latest[r["episode_id"]] = r
    return latest


def test_each_shifted_feature_opens_one_episode_soon_after_the_shift(baseline: InProcessPipeline) -> None:
    episodes = [e for e in latest_episodes(baseline.rows).values() if e["source"] == "features"]
    assert sorted(e["feature"] for e in episodes) == sorted(SHIFTED), episodes  # one each, no other
    for e in episodes:
        # A 1-sd shift at RATE events/s: within a minute of event time, where the first drifted
        # window only closes at the end of its 5-minute window.
        assert SHIFT_MS <= e["opened_at"] < SHIFT_MS + 60_000, e
        # the shift lasts: still open at the end, kept current, seen by both shards
        assert e["status"] == "open" and e["closed_at"] is None and e["shards"] == [0, 1], e
        # ... up to the last window stage 2 closed (the clock that applies the shards' reports)
        last_closed = max(r["window_end"] for r in baseline.rows["model_drift"])
        assert last_closed - WINDOW_S * 1000 <= e["last_seen"] < last_closed, e
        # values seen since the opening: all of them (RATE events/s, less the 1 % malformed)
        expected = (e["last_seen"] - e["opened_at"]) / 1000 * RATE
        assert 0.95 * expected < e["events_seen"] <= 1.01 * expected, (e, expected)
        assert e["opened_statistic"] >= e["opened_threshold"] > 0 and e["arl"] >= 1e6 and e["reference_id"]
        assert e["opened_component"] and e["opened_prediction_id"]
        if e["feature_kind"] == "numeric":
            assert e["unit"] == "sd" and 0.8 < e["magnitude"] < 1.2, e  # the simulator's 1 sd
        else:
            assert e["unit"] == "psi" and e["magnitude"] > 0.1, e
    drifted_ends = [r["window_end"] for r in baseline.rows["model_drift"] if r["drifted"]]
    assert min(e["opened_at"] for e in episodes) < min(drifted_ends) - 120_000
    # drift_alerts is the log of the episodes' events: one opening per episode, no alarm flood
    events = [a for a in baseline.rows["drift_alerts"] if a["source"] == "features"]
    assert sorted((a["feature"], a["event_kind"]) for a in events) == sorted((f, "opened") for f in SHIFTED)
    assert {a["episode_id"] for a in events} == {e["episode_id"] for e in episodes}
    # one row version per 5-minute bucket in which an episode changed, at most
    versions = [(r["episode_id"], r["version"]) for r in baseline.rows["drift_episodes"]]
    assert len(versions) == len(set(versions))


def test_error_stream_opens_an_episode_after_the_concept_drift_only(baseline: InProcessPipeline) -> None:
    errors = [e for e in latest_episodes(baseline.rows).values() if e["source"] == "errors"]
    assert len(errors) == 1, "the accuracy drop (0.9 -> ~0.58) must open one error-stream episode"
    episode = errors[0]
    assert episode["feature"] == "__error__" and episode["unit"] == "rate_ratio"
    assert SHIFT_MS <= episode["opened_at"] < SHIFT_MS + 300_000
    assert episode["magnitude"] > 2 and episode["status"] == "open"
    assert episode["reference_id"] == "baseline"  # the training profile carries the accuracy


def test_episodes_are_retrain_evidence(baseline: InProcessPipeline) -> None:
    triggers = [orjson.loads(t) for t in baseline.triggers]
    drift = [t for t in triggers if t["reason"] == "drift"]
    assert len(drift) == 1, "a lasting shift is one change: one data-drift trigger"
    features = {e["episode_id"] for e in latest_episodes(baseline.rows).values() if e["source"] == "features"}
    assert set(drift[0]["evidence"]["episodes"]) == features
    windows = drift[0]["evidence"]["windows"]
    assert any(w["evidence"].get("episode_events") for w in windows), windows
    assert any(t["reason"] == "concept_drift" for t in triggers)


def test_disabled_means_no_episodes(stream: list[RawRecord], profiles: list[bytes]) -> None:
    # The whole stream, shift included: enabled, it opens episodes (see the baseline tests).
    pipeline = InProcessPipeline(_settings(sequential={"enabled": False}), profiles=profiles)
    for i in range(0, len(stream), 3000):
        pipeline.feed(stream[i : i + 3000])
    assert pipeline.rows["model_drift"] and not pipeline.rows.get("drift_alerts")
    assert not pipeline.rows.get("drift_episodes")


def test_episodes_do_not_depend_on_batching(
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


def test_crash_and_restore_reproduces_the_episodes(
    stream: list[RawRecord], profiles: list[bytes], baseline: InProcessPipeline, feed_with_crashes: Any
) -> None:
    batches = [stream[i : i + 1700] for i in range(0, len(stream), 1700)]
    crash_at = {len(batches) // 2 + 1, (3 * len(batches)) // 4}
    pipeline = InProcessPipeline(_settings(), profiles=profiles)
    deduped = feed_with_crashes(pipeline, batches, crash_at, every=5)
    assert _canonical(deduped)["drift_episodes"] == _canonical(baseline.rows)["drift_episodes"]
    assert _canonical(deduped)["drift_alerts"] == _canonical(baseline.rows)["drift_alerts"]
    assert _canonical(deduped) == _canonical(baseline.rows)
