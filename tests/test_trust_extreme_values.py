"""A huge but finite number (1e308, or anything whose square overflows, ~1e155) is a valid JSON
feature value. Beyond ``MAX_ABS_VALUE`` it is *invalid*, as NaN and inf are: counted in the
``invalid`` column, kept out of every distribution and moment, and the event still counts. Before,
one such value overflowed stage 1's window M2 to inf, the partial carried it as null, and stage 2
raised TypeError on it at every restart (a poison pill)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np
import orjson
import pytest

from driftline.config import Settings
from driftline.demo.training import training_profiles
from driftline.operators.cbpe import PerformanceEstimator
from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.performance import IntervalMetrics, OnlinePerformance
from driftline.operators.profile import build_profile
from driftline.operators.scorer import DriftScorer
from driftline.operators.sequential import NumericDetector
from driftline.operators.validate import RawRecord
from driftline.operators.window_stats import (
    MAX_ABS_VALUE,
    ColumnBlock,
    EventColumns,
    FeatureStats,
    WindowAccumulator,
    merge_partials,
)
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.pipeline.model import ModelProcessor
from driftline.pipeline.records import Outcomes, Partial, Progress, encode_model_event
from driftline.pipeline.to_rows import RowMapper
from driftline.schemas.events import Prediction
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import LabelDelay, ModelSpec

START = 1_767_225_600_000
EXTREMES = [1e308, -1e308, 1e200, -1e156, 1e101]
"""Numbers beyond the bound: the first four overflow a square, 1e101 only just passes the bound."""


def _wire(partial: dict[str, Any]) -> dict[str, Any]:
    """The partial as stage 2 receives it (JSON through the broker: inf/NaN would become null)."""
    return dict(orjson.loads(orjson.dumps(partial)))


def test_every_feature_stats_path_counts_extreme_numbers_as_invalid() -> None:
    values: list[Any] = [1.0, 2.0, *EXTREMES, 3.0, None, 10**400]
    rows, column, array = FeatureStats(), FeatureStats(), FeatureStats()
    rows.add(values)
    column.add_column(ColumnBlock.of(values).reduce())
    array.add_array(np.array([math.nan if v is None else float(min(v, 1e308)) for v in values]))
    for stats in (rows, column, array):
        assert (stats.count, stats.missing, stats.invalid, stats.n) == (10, 1, 6, 3)
        assert (stats.mean, stats.variance, stats.min, stats.max) == (2.0, 1.0, 1.0, 3.0)
        assert stats.sketch.count == 3 and abs(stats.sketch.quantile(1.0) - 3.0) < 0.02
    assert rows.to_dict() == column.to_dict()


def test_numbers_at_the_bound_keep_finite_moments_through_merges() -> None:
    stats = FeatureStats()
    stats.add_array(np.tile([MAX_ABS_VALUE, -MAX_ABS_VALUE], 50_000))
    assert stats.invalid == 0 and stats.n == 100_000
    merged = merge_partials([_wire(_partial_of(stats))] * 64)
    x = merged.features["x"]
    assert x.n == 6_400_000 and math.isfinite(x.m2) and x.variance is not None and math.isfinite(x.variance)


def _partial_of(stats: FeatureStats) -> dict[str, Any]:
    acc = WindowAccumulator()
    acc.features["x"] = stats
    acc.n_events = stats.count
    return acc.to_partial()


def test_extreme_predictions_and_latencies_are_invalid_not_infinite() -> None:
    acc = WindowAccumulator()
    acc.add([{"x": 1e308}, {"x": 1.0}, {"x": 2.0}],
            [Prediction(value=1e308), Prediction(value=1.0), Prediction(score=-1e300)],
            [1e308, 5.0, 7.0])
    chunked = WindowAccumulator()
    chunked.add_chunk([EventColumns.of([{"x": 1e308}, {"x": 1.0}, {"x": 2.0}],
                                       [Prediction(value=1e308), Prediction(value=1.0),
                                        Prediction(score=-1e300)],
                                       [1e308, 5.0, 7.0])])
    assert acc.to_partial() == chunked.to_partial()
    merged = merge_partials([_wire(acc.to_partial()), _wire(chunked.to_partial())])
    assert merged.n_events == 6
    assert (merged.features["x"].invalid, merged.features["x"].mean) == (2, 1.5)
    assert (merged.prediction_value.invalid, merged.prediction_value.mean) == (4, 1.0)
    assert (merged.latency.invalid, merged.latency.mean) == (2, 6.0)


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("m2", None, "m2 is None, not a finite number"),
    ("mean", "1.0", "mean is '1.0', not a finite number"),
    ("max", 1e300, "max is 1e+300, beyond what valid numbers give"),
    ("m2", -1.0, "m2 is negative (-1.0)"),
])
def test_a_malformed_partial_is_a_value_error_naming_the_field(field: str, value: Any, reason: str) -> None:
    acc = WindowAccumulator()
    acc.add([{"x": 1.0}, {"x": 2.0}], [Prediction(value=1.0)] * 2, [1.0, 2.0])
    partial = _wire(acc.to_partial())
    partial["features"]["x"][field] = value
    with pytest.raises(ValueError, match="malformed window partial: feature 'x'") as err:
        WindowAccumulator.from_partial(partial)
    assert reason in str(err.value)


def test_stage_two_dead_letters_a_malformed_partial_and_closes_the_window() -> None:
    settings = Settings(topics={"partitions": 1, "model_events_partitions": 1}, windows={"sizes_s": [60]})
    model = ModelProcessor(0, settings)
    topic = settings.topics.model_events
    acc = WindowAccumulator()
    acc.add([{"x": 1.0}, {"x": 3.0}], [Prediction(value=1.0)] * 2, [1.0, 2.0])
    good = acc.to_partial()
    bad = _wire(good)
    bad["features"]["x"]["m2"] = None  # what an overflowed M2 looked like on the wire
    values = [
        encode_model_event(Partial(0, "m", "1", "", 60, 0, 60_000, bad)),
        encode_model_event(Partial(0, "m", "1", "", 60, 60_000, 120_000, good)),
        encode_model_event(Progress(0, 120_000, 120_000, 120_000)),
    ]
    out = model.process([RawRecord(topic, 0, i, 5, None, v) for i, v in enumerate(values)])
    dead = [orjson.loads(m.value) for m in out if m.topic == settings.topics.dead_letters]
    assert len(dead) == 1 and dead[0]["source_offset"] == 0 and dead[0]["error_kind"] == "validation_error"
    assert "feature 'x'" in dead[0]["error_message"] and "m2 is None" in dead[0]["error_message"]
    sink = [RowMapper._sink(m.value) for m in out if m.topic == settings.topics.sink]
    windows = [r for table, rows in sink if table == "feature_windows" for r in rows]
    assert {(r["feature"], r["window_start"]) for r in windows if r["feature"] == "x"} == {("x", 60_000)}
    assert model.totals["bad_internal_records"] == 1


def _scenario_records(settings: Settings) -> tuple[list[RawRecord], list[bytes], Scenario]:
    scenario = Scenario(seed=11, start=START, duration_s=900, rate=10,
                        models=[ModelSpec(model_id="m", n_numeric=4, n_categorical=1, accuracy=0.9)],
                        label_delay=LabelDelay(median_s=20, max_s=60))
    profiles = [p.model_dump_json().encode()
                for p in training_profiles(scenario, settings.drift.bins, settings.drift.top_k,
                                           effective_from_ms=0)]
    return logged_records(generate(scenario), settings), profiles, scenario


def _run(settings: Settings, records: list[RawRecord], profiles: list[bytes]) -> InProcessPipeline:
    pipeline = InProcessPipeline(settings, profiles=profiles)
    for i in range(0, len(records), 500):
        pipeline.feed(records[i : i + 500])
    pipeline.finish(START + 3_600_000)
    return pipeline


def _rows(pipeline: InProcessPipeline, table: str, skip: str) -> list[dict[str, Any]]:
    return sorted((r for r in pipeline.rows[table] if r["feature"] != skip),
                  key=lambda r: (r["feature"], r["segment"], r["window_start"]))


def test_extreme_values_in_one_feature_leave_every_other_feature_as_without_them() -> None:
    settings = Settings(windows={"sizes_s": [300], "allowed_lateness_s": 30, "metrics_interval_s": 300},
                        join={"label_horizon_s": 600})
    records, profiles, _ = _scenario_records(settings)
    predictions = [i for i, r in enumerate(records) if r.topic == settings.topics.predictions]
    first = orjson.loads(records[predictions[0]].value or b"")
    numeric = next(k for k, v in first["features"].items() if isinstance(v, float))
    # a few extreme values spread over the windows, as a buggy upstream transform would emit them
    spoiled = list(records)
    picked = predictions[7::len(predictions) // 12][: 12]
    for n, at in enumerate(picked):
        event = orjson.loads(records[at].value or b"")
        event["features"][numeric] = EXTREMES[n % len(EXTREMES)]
        spoiled[at] = dataclasses.replace(records[at], value=orjson.dumps(event))
    clean, dirty = _run(settings, records, profiles), _run(settings, spoiled, profiles)
    assert not dirty.rows.get("dead_letters"), "a valid event was dead-lettered"
    for table in ("feature_windows", "drift_scores"):
        assert _rows(dirty, table, numeric) == _rows(clean, table, numeric), table
    mine = [r for r in dirty.rows["feature_windows"] if r["feature"] == numeric and r["segment"] == ""]
    assert sum(int(r["invalid"]) for r in mine) == len(picked)
    assert sum(int(r["count"]) for r in mine) == len(predictions)  # the events still count
    assert all(r["max"] is None or abs(r["max"]) < 1e3 for r in mine), "an extreme entered the moments"
    scores = [r for r in dirty.rows["drift_scores"] if r["feature"] == numeric]
    assert scores and all(r["psi"] is None or math.isfinite(r["psi"]) for r in scores)


def _feature_watch() -> FeatureWatch:
    rng = np.random.default_rng(3)
    profile = build_profile("m", "1", {"x": rng.normal(size=5000), "y": rng.normal(size=5000)},
                            label_column=None, prediction_column=None, bins=10, top_k=5, created_at_ms=0)
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)
    watch.add_profile(profile)
    return watch


def test_the_sequential_detectors_skip_extreme_values_as_they_skip_inf() -> None:
    rng = np.random.default_rng(4)
    n = 4000
    x = rng.normal(size=n).tolist()
    extreme = [EXTREMES[i % 4] if i % 5 == 0 else v for i, v in enumerate(x)]  # every fifth: wild
    as_inf = [math.inf if i % 5 == 0 else v for i, v in enumerate(x)]
    y = rng.normal(size=n).tolist()
    times, ids = list(range(n)), [f"p{i}" for i in range(n)]
    reports = [_feature_watch().observe("m", "1", times, ids,
                                        [{"x": a, "y": b} for a, b in zip(col, y, strict=True)])
               for col in (extreme, as_inf)]
    assert reports[0] == reports[1]
    assert not [r for r in reports[0] if r["kind"] == "opened"]


def test_a_numeric_detector_fed_extreme_values_directly_stays_finite() -> None:
    detector = NumericDetector.from_reference(np.random.default_rng(1).normal(size=1000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow anywhere would raise here
        alarms = detector.update_many(np.array(EXTREMES * 20))
    assert alarms and all(math.isfinite(a.statistic) for a in alarms)  # they are far off: alarms


def _metrics(abs_errors: list[float | None]) -> dict[str, Any]:
    settings = Settings(topics={"partitions": 1, "model_events_partitions": 1},
                        windows={"metrics_interval_s": 60})
    model = ModelProcessor(0, settings)
    n = len(abs_errors)
    outcomes = Outcomes(0, "m", "1", [f"p{i}" for i in range(n)], [""] * n, [1_000 + i for i in range(n)],
                        [5] * n, [None] * n, abs_errors, [0] * n)
    values = [encode_model_event(outcomes), encode_model_event(Progress(0, 120_000, 120_000, 120_000))]
    out = model.process([RawRecord(settings.topics.model_events, 0, i, 0, None, v)
                         for i, v in enumerate(values)])
    rows = [r for m in out if m.topic == settings.topics.sink
            for table, msg_rows in [RowMapper._sink(m.value)] if table == "model_metrics" for r in msg_rows]
    (row,) = [r for r in rows if r["row_kind"] == "interval" and r["segment"] == ""]
    return dict(row)


def test_a_regression_error_beyond_the_bound_counts_the_outcome_but_no_error() -> None:
    clean = _metrics([1.0, 2.0, 4.0])
    wild = _metrics([1.0, 1e300, 2.0, 1e200, 4.0])  # |1e300 - 0|: a wild prediction or label
    assert (clean["n_outcomes"], wild["n_outcomes"]) == (3, 5)
    for metric in ("mae", "rmse", "mae_ew", "rmse_ew"):
        assert wild[metric] == pytest.approx(clean[metric]), metric
    performance, interval = OnlinePerformance("regression"), IntervalMetrics()
    for error in (1.0, 1e300, 3.0):
        performance.update(None, error)
        interval.update(None, error)
    assert performance.get()["rmse_ew"] == pytest.approx(math.sqrt(5.0), rel=0.01)
    assert interval.get() == {"n": 3, "accuracy": None, "mae": 2.0, "rmse": math.sqrt(5.0)}


def test_batch_scoring_and_profiles_read_extreme_values_as_invalid() -> None:
    rng = np.random.default_rng(8)
    reference, window = rng.normal(size=5000), rng.normal(0.3, 1.0, 2000)
    wild_reference, wild_window = reference.copy(), window.copy()
    wild_reference[::50], wild_window[::40] = 1e308, -1e200
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tame = DriftScorer.from_reference({"x": reference[wild_reference == reference]}).score(
            {"x": window[wild_window == window]})
        wild = DriftScorer.from_reference({"x": wild_reference}).score({"x": wild_window})
    for field in ("n", "ks", "psi", "js", "effect", "drifted"):
        assert getattr(wild["x"], field) == getattr(tame["x"], field), field
    profile = build_profile("m", "1", {"x": wild_reference.tolist(), "y": [1e300, *[1.0] * 99],
                                       "p": [1e300, *[2.0] * 99]},
                            label_column="y", prediction_column="p", bins=10, top_k=5, created_at_ms=0)
    assert profile.baseline == {"mae": 1.0, "rmse": 1.0}  # the wild pair measures no error
    assert profile.features["x"].max is not None and profile.features["x"].max < 10


@dataclasses.dataclass(frozen=True)
class _Logged:
    kind: str
    key: bytes
    value: bytes
    timestamp_ms: int


def _regression_run(values: list[float], labels: list[float]) -> InProcessPipeline:
    settings = Settings(windows={"sizes_s": [300], "allowed_lateness_s": 30, "metrics_interval_s": 300},
                        join={"label_horizon_s": 600})
    events = []
    for i, (value, label) in enumerate(zip(values, labels, strict=True)):
        t = START + 1_000 * i
        events.append(_Logged("predictions", f"p{i}".encode(), orjson.dumps(
            {"prediction_id": f"p{i}", "model_id": "r", "timestamp": t, "features": {"x": float(i)},
             "prediction": {"value": value}}), t))
        events.append(_Logged("labels", f"p{i}".encode(), orjson.dumps(
            {"prediction_id": f"p{i}", "label": label, "timestamp": t + 500}), t + 500))
    pipeline = InProcessPipeline(settings)
    pipeline.feed(logged_records(events, settings))
    pipeline.finish(START + 3_600_000)
    return pipeline


def test_a_regression_outcome_with_an_extreme_value_counts_without_an_error() -> None:
    rng = np.random.default_rng(2)
    values, labels = rng.normal(size=40).tolist(), rng.normal(size=40).tolist()
    wild_values, wild_labels = list(values), list(labels)
    wild_values[0], wild_labels[0] = 1e300, 1e300  # the very first outcome: equal, yet no error of 0
    wild_values[9], wild_labels[17] = -1e308, 1e200
    clean, wild = _regression_run(values, labels), _regression_run(wild_values, wild_labels)
    assert not wild.rows.get("dead_letters")
    errors = {r["prediction_id"]: r["abs_error"] for r in wild.rows["outcomes"]}
    assert len(errors) == 40 and [errors[f"p{i}"] for i in (0, 9, 17)] == [None, None, None]
    keep = [i for i in range(40) if i not in (0, 9, 17)]
    (row,) = [r for r in wild.rows["model_metrics"] if r["row_kind"] == "interval" and r["n_outcomes"]]
    assert row["n_outcomes"] == 40
    assert row["mae"] == pytest.approx(float(np.mean([abs(values[i] - labels[i]) for i in keep])))
    assert row["mae_ew"] is not None and math.isfinite(row["mae_ew"])
    (clean_row,) = [r for r in clean.rows["model_metrics"] if r["row_kind"] == "interval" and r["n_outcomes"]]
    assert clean_row["mae_ew"] is not None


def test_a_malformed_multivariate_section_is_dead_lettered_on_arrival() -> None:
    settings = Settings(topics={"partitions": 1, "model_events_partitions": 1}, windows={"sizes_s": [60]})
    model = ModelProcessor(0, settings)
    acc = WindowAccumulator()
    acc.add([{"x": 1.0}], [Prediction(value=1.0)], [1.0])
    partial = {**acc.to_partial(), "multivariate": {"reference_id": "r", "n": 1}}
    value = encode_model_event(Partial(0, "m", "1", "", 60, 0, 60_000, partial))
    out = model.process([RawRecord(settings.topics.model_events, 0, 3, 0, None, value),
                         RawRecord(settings.topics.model_events, 0, 4, 0, None,
                                   encode_model_event(Progress(0, 60_000, 60_000, 60_000)))])
    dead = [orjson.loads(m.value) for m in out if m.topic == settings.topics.dead_letters]
    assert [d["source_offset"] for d in dead] == [3] and "KeyError" in dead[0]["error_message"]


def test_a_restored_checkpoint_holding_a_malformed_partial_drops_it_instead_of_raising() -> None:
    settings = Settings(topics={"partitions": 2, "model_events_partitions": 1}, windows={"sizes_s": [60]})
    model = ModelProcessor(0, settings)
    acc = WindowAccumulator()
    acc.add([{"x": 1.0}, {"x": 3.0}], [Prediction(value=1.0)] * 2, [1.0, 2.0])
    bad = _wire(acc.to_partial())
    bad["features"]["x"]["m2"] = None
    # what a version before the arrival check kept: shard 0's partial overflowed, shard 1's did not
    model.windows.partials[Partial(0, "m", "1", "", 60, 0, 60_000, bad).key] = {0: bad, 1: acc.to_partial()}
    restored = ModelProcessor.restore(model.snapshot(), settings)
    assert restored.windows.totals["malformed_partials"] == 1
    out = restored.process([RawRecord(settings.topics.model_events, 0, i, 0, None,
                                      encode_model_event(Progress(shard, 60_000, 60_000, 60_000)))
                            for i, shard in enumerate((0, 1))])
    windows = [r for m in out if m.topic == settings.topics.sink for table, rows in [RowMapper._sink(m.value)]
               if table == "feature_windows" for r in rows if r["feature"] == "x"]
    assert [(r["count"], r["mean"]) for r in windows] == [(2, 2.0)]  # shard 1's events
    # ... and the dropped partial is a dead-letter row saying which shard and window, and why
    (dead,) = [orjson.loads(m.value) for m in out if m.topic == settings.topics.dead_letters]
    assert dead["source_topic"] == settings.topics.model_events
    assert dead["source_offset"] < 0  # no position: a digest of shard and window, one row each
    assert "stage-1 shard 0" in dead["error_message"] and "m2 is None" in dead["error_message"]
    assert dead["source_timestamp"] == 60_000
    later = restored.process([RawRecord(settings.topics.model_events, 0, 2, 0, None,
                                        encode_model_event(Progress(0, 120_000, 120_000, 120_000)))])
    assert not [m for m in later if m.topic == settings.topics.dead_letters]  # once


def test_numbers_at_the_bound_score_without_overflow() -> None:
    rng = np.random.default_rng(0)
    reference, window = rng.normal(size=5000), rng.normal(size=2000)
    reference[::100], reference[1::100] = MAX_ABS_VALUE, -MAX_ABS_VALUE
    window[::50], window[3::50] = MAX_ABS_VALUE, -0.9 * MAX_ABS_VALUE
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow anywhere would raise here
        report = DriftScorer.from_reference({"x": reference, "y": rng.normal(size=5000) * 1e99}).score(
            {"x": window, "y": rng.normal(size=2000) * 1e99})
    for name in ("x", "y"):
        score = report[name]
        assert score.n == 2000
        assert all(math.isfinite(v) for v in (score.ks, score.psi, score.js, score.effect))


def test_performance_estimated_from_extreme_scores_stays_finite() -> None:
    rng = np.random.default_rng(6)
    scores = rng.uniform(size=4000)
    estimator = PerformanceEstimator.fit(scores, (rng.uniform(size=4000) < scores).astype(int))
    window = np.concatenate([rng.uniform(size=500), EXTREMES])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        estimate = estimator.estimate(window)
    assert estimate.n == 505
    assert all(math.isfinite(v) for v in (estimate.accuracy, estimate.accuracy_sd, estimate.roc_auc))
