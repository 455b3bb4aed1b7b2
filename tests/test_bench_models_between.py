"""bench_models' split of the timed CPU: the feeds in which no window or metrics interval closed, apart."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest


@pytest.fixture
def bench_models(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("bench_models")


def test_a_run_times_the_feeds_without_a_window_close_apart(bench_models: ModuleType) -> None:
    settings = bench_models.settings_for(4)
    specs = bench_models.model_specs(3)
    profiles = bench_models.profiles_of(specs, 300, settings)
    # 12,000 predictions at 40/s: 300 s of event time, so a grid line falls inside and most of the
    # ~60-second feeds close nothing
    records, warm = bench_models.traffic(specs, 12_000, settings, rate=40.0)
    result = bench_models.run(settings, profiles, records, warm)
    assert result["windows_closed"] > 0
    assert 0 < result["between_closes_predictions"] < result["predictions_timed"]
    assert result["between_closes_cpu_per_prediction_us"] > 0
    # feeds that closed a metrics interval and no window are neither between closes nor a window's
    apart = result["between_closes_predictions"] + result["interval_feeds_predictions"]
    assert apart < result["predictions_timed"]
    assert result["intervals_closed"] > 0 and result["interval_feeds_predictions"] > 0  # labels 300 s on
    # the rows written after the warm-up, by table: an outcome a labelled prediction, window rows
    assert result["timed_rows"]["outcomes"] > 0 and result["timed_rows"]["feature_windows"] > 0
    assert sum(result["timed_rows"].values()) <= result["rows_written"]
    # stage 1's messages to stage 2: a batch's per-model records of a partition and kind go as one
    assert 0 < result["model_events_per_prediction"] < 1


def test_the_cost_figure_says_the_ratio_between_closes(bench_models: ModuleType) -> None:
    many = {"between_closes_cpu_per_prediction_us": 90.0, "between_closes_predictions": 20_000}
    one = {"between_closes_cpu_per_prediction_us": 30.0, "between_closes_predictions": 25_000}
    text = bench_models._between(many, one)
    assert "90.0 vs 30.0" in text and "3.00x" in text and "20,000 and 25,000" in text
    assert "raise --n" in bench_models._between({**many, "between_closes_predictions": 0}, one)
    assert bench_models._between({}, one).endswith("-")


def test_the_steady_state_weighs_each_close_at_sustained_traffic_s_rate(bench_models: ModuleType) -> None:
    """Between closes 40 vs 20 CPU-us; the timed 100,000 predictions' closes cost 20 more a
    prediction (1,000 closes: 2 ms each) against none: at 5,000/s 1,000 models' 300 and 3,600 s
    windows close once per 1,385 predictions, adding ~1.44."""
    many = {"between_closes_cpu_per_prediction_us": 40.0, "cpu_per_prediction_us": 60.0,
            "predictions_timed": 100_000, "windows_closed": 1_000}
    one = {"between_closes_cpu_per_prediction_us": 20.0, "cpu_per_prediction_us": 20.0,
           "predictions_timed": 100_000, "windows_closed": 1}
    text = bench_models._steady(many, one, 1_000, 5_000.0, [300, 3600], 300)
    assert "one window close per 1,385 vs 1,384,615 predictions" in text
    assert "~41.4 vs ~20.0" in text and "(2.07x)" in text, text
    assert bench_models._steady({**many, "windows_closed": 0}, one, 1_000, 5_000.0, [300], 300).endswith("-")


def test_the_steady_state_weighs_a_metrics_intervals_close_at_its_own_rate(bench_models: ModuleType) -> None:
    """Of the 20 CPU-us a prediction over the between-closes rate, feeds that closed 10 metrics
    intervals only hold 0.1 s (5,000 predictions at 60 us): 10 ms an interval, once per 300 s of each
    of 1,000 models at 5,000/s adds ~6.67; the windows' closes the rest (1.9 ms each) ~1.37."""
    many = {"between_closes_cpu_per_prediction_us": 40.0, "cpu_per_prediction_us": 60.0,
            "predictions_timed": 100_000, "windows_closed": 1_000, "interval_feeds_cpu_s": 0.3,
            "interval_feeds_predictions": 5_000, "intervals_closed": 10}
    one = {"between_closes_cpu_per_prediction_us": 20.0, "cpu_per_prediction_us": 20.0,
           "predictions_timed": 100_000, "windows_closed": 1}
    text = bench_models._steady(many, one, 1_000, 5_000.0, [300, 3600], 300)
    assert "~48.0 vs ~20.0" in text and "(2.40x)" in text, text


def test_the_batch_size_reaches_both_runs_settings(bench_models: ModuleType) -> None:
    assert bench_models.settings_for(4).worker.batch_max_records == bench_models.BATCH_RECORDS == 5_000
    assert bench_models.settings_for(4, 20_000).worker.batch_max_records == 20_000
    assert bench_models.parse_args(["--batch-records", "20000"]).batch_records == 20_000


def test_the_warm_up_closes_each_models_first_window(bench_models: ModuleType) -> None:
    """Stage 2 builds a profile's scorer and under-filled rows at its model's first window close:
    a one-off cost per model, in the warm-up like the monitors', not in the timed part."""
    from driftline.pipeline.local import InProcessPipeline

    settings = bench_models.settings_for(4)
    specs = bench_models.model_specs(3)
    profiles = bench_models.profiles_of(specs, 300, settings)
    records, warm = bench_models.traffic(specs, 600, settings)
    pipeline = InProcessPipeline(settings, profiles=[p.model_dump_json().encode() for p in profiles])
    pipeline.feed(records[:warm])
    built = {profile_id for model in pipeline.models for profile_id in model.windows.under_filled}
    assert built == {p.profile_id for p in profiles}
    assert bench_models._windows_closed(pipeline) >= len(specs)


def test_the_cost_figure_says_the_rows_written_a_prediction(bench_models: ModuleType) -> None:
    rows = {"outcomes": 1000, "feature_windows": 970, "drift_scores": 900, "model_drift": 30}
    many = {"predictions_timed": 1000, "timed_rows": rows}
    one = {"predictions_timed": 2000, "timed_rows": {"outcomes": 2000, "feature_windows": 4}}
    text = bench_models._rows_written(many, one)
    assert text.startswith("rows written a prediction 2.90 vs 1.00")
    assert "(outcomes 1.00, feature_windows 0.97, drift_scores 0.90)" in text
    assert bench_models._rows_written({}, one).endswith("-")


def test_sequential_detection_can_be_off_in_both_runs(bench_models: ModuleType) -> None:
    assert bench_models.settings_for(4).sequential.enabled
    assert not bench_models.settings_for(4, sequential=False).sequential.enabled
    assert bench_models.parse_args(["--no-sequential"]).sequential is False
    assert bench_models.parse_args([]).sequential is True


def test_the_cost_figure_says_the_model_events_messages_a_prediction(bench_models: ModuleType) -> None:
    text = bench_models._model_events({"model_events_per_prediction": 0.0312},
                                      {"model_events_per_prediction": 0.004})
    assert text == "model-events messages a prediction 0.031 vs 0.004"
    assert bench_models._model_events({}, {"model_events_per_prediction": 0.004}).endswith("-")


def test_two_revisions_shards_fed_in_turn_in_one_process(bench_models: ModuleType) -> None:
    """``--shard-baseline``: a pipeline on another revision's shard.py (here this one's, loaded apart)
    and this revision's, fed the same batches in turn: both timed, the same rows."""
    settings = bench_models.settings_for(4)
    specs = bench_models.model_specs(3)
    profiles = bench_models.profiles_of(specs, 300, settings)
    records, warm = bench_models.traffic(specs, 12_000, settings, rate=40.0)
    baseline = bench_models.module_at_revision("HEAD", "src/driftline/pipeline/shard.py", "baseline_shard")
    found = bench_models.interleaved(settings, profiles, records, warm, baseline)
    assert found["rows_equal"] and found["rows"]["outcomes"] > 0 and found["rows"]["feature_windows"] > 0
    assert 0 < found["between_predictions"] < 12_000
    assert all(us > 0 for us in found["between_us"].values())
    assert all(cpu > 0 for cpu in found["timed_cpu_s"].values())
    assert bench_models.shard_module.ShardProcessor is bench_models.local_module.ShardProcessor  # put back
