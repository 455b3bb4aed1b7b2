"""bench_models' split of the timed CPU: the feeds in which no window or metrics interval closed, apart."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

from driftline.operators.window_stats import FeatureStats


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


def test_one_models_figure_is_the_mean_of_a_run_before_and_after_the_many(bench_models: ModuleType) -> None:
    import doctest

    before = {"cpu_per_prediction_us": 20.0, "between_closes_cpu_per_prediction_us": 18.0,
              "gc_cpu_per_prediction_us": 1.0, "rss_bytes": 5}
    after = {"cpu_per_prediction_us": 26.0, "between_closes_cpu_per_prediction_us": 22.0,
             "gc_cpu_per_prediction_us": 3.0, "rss_bytes": 6}
    one = bench_models.bracketed(before, after)
    assert one["cpu_per_prediction_us"] == 23.0 and one["between_closes_cpu_per_prediction_us"] == 20.0
    assert one["gc_cpu_per_prediction_us"] == 1.0 and one["rss_bytes"] == 5  # the first run's
    assert "20.0 and 26.0" in bench_models._one_runs(one) and bench_models._one_runs(before) == ""
    result = doctest.testmod(bench_models)
    assert result.failed == 0 and result.attempted > 0


def test_the_cost_figure_is_the_steady_states_ratio(bench_models: ModuleType) -> None:
    """The timed run weighs every model's close ~14x more than sustained traffic: its own ratio
    (3.0x here) is in the detail, the steady state's (2.07x) is the figure and its verdict."""
    run = {"rss_bytes": 2e9, "input_rss_bytes": 0, "pipeline_rss_bytes": 1e9, "monitors": 1,
           "warmup_cpu_s": 1.0, "windows_under_filled": 0}
    many = {**run, "between_closes_cpu_per_prediction_us": 40.0, "cpu_per_prediction_us": 60.0,
            "predictions_timed": 100_000, "windows_closed": 1_000, "between_closes_predictions": 90_000}
    one = {**run, "between_closes_cpu_per_prediction_us": 20.0, "cpu_per_prediction_us": 20.0,
           "predictions_timed": 100_000, "windows_closed": 1, "between_closes_predictions": 90_000}
    cost = bench_models.figures_for(1_000, 100_000, one, many, rate=5_000.0)[1]
    assert "at a steady state" in cost.label and round(cost.value, 2) == 2.07, (cost.label, cost.value)
    assert "(3.00x" in cost.detail and cost.met is False
    cheap = {**many, "between_closes_cpu_per_prediction_us": 21.0}  # ~1.12x at a steady state: met
    assert bench_models.figures_for(1_000, 100_000, one, cheap, rate=5_000.0)[1].met is True
    no_close = bench_models.figures_for(1_000, 100_000, {**one, "windows_closed": 0}, many, rate=5_000.0)[1]
    assert "steady" not in no_close.label and no_close.value == 3.0


def test_closes_a_steady_state_fills_are_priced_as_scored(bench_models: ModuleType) -> None:
    """The run's closes are the warm-up's under-filled windows; at 5,000/s every one of 1,000 Zipf
    models' 300 s windows holds >= 100 events (the last ~134), so each close costs what scoring
    adds (here 4 ms): 3.61 closes a second, +2.89 CPU-us a prediction over the under-filled price."""
    many = {"between_closes_cpu_per_prediction_us": 40.0, "cpu_per_prediction_us": 60.0,
            "predictions_timed": 100_000, "windows_closed": 1_000, "windows_under_filled": 1_000}
    one = {"between_closes_cpu_per_prediction_us": 20.0, "cpu_per_prediction_us": 20.0,
           "predictions_timed": 100_000, "windows_closed": 1, "windows_under_filled": 1}
    assert bench_models.filled_closes_per_second(bench_models._shares(1_000), 5_000.0, [300, 3600], 100) \
        == pytest.approx(1_000 / 300 + 1_000 / 3600)
    lower = bench_models.steady_costs(many, one, 1_000, 5_000.0, [300, 3600], 300, 100)
    priced = bench_models.steady_costs({**many, "scored_close_extra_us": 4_000.0}, one, 1_000, 5_000.0,
                                       [300, 3600], 300, 100)
    assert lower == pytest.approx((41.444, 20.0), abs=1e-3)
    assert priced[0] - lower[0] == pytest.approx(4_000 * (1_000 / 300 + 1_000 / 3600) / 5_000)
    assert priced[1] - lower[1] == pytest.approx(4_000 * (1 / 300 + 1 / 3600) / 5_000)
    half = bench_models.steady_costs({**many, "scored_close_extra_us": 4_000.0, "windows_under_filled": 500},
                                     one, 1_000, 5_000.0, [300, 3600], 300, 100)
    assert half[0] - lower[0] == pytest.approx((priced[0] - lower[0]) / 2)  # half the run's closes scored
    text = bench_models._steady({**many, "scored_close_extra_us": 4_000.0}, one, 1_000, 5_000.0, [300, 3600],
                                300, 100)
    assert "100 % of its closes that hold >= 100 events priced as scored, +4.00 ms" in text, text
    assert "a lower bound" in bench_models._steady(many, one, 1_000, 5_000.0, [300, 3600], 300, 100)


def test_a_scored_close_is_timed_on_windows_a_steady_state_fills(bench_models: ModuleType) -> None:
    """The windows stage 2's scored close is priced on hold the events the models' windows do in
    sustained traffic (their 10th-90th percentiles), drawn as the profile was: nothing drifts
    against it, and every feature's test runs (a window drifted from its profile takes the
    p-value's cheap shortcut, one under drift.min_count none at all: either would price a steady
    state's close low)."""
    settings = bench_models.settings_for(4)
    spec = bench_models.model_specs(1)[0]
    profile = bench_models.profiles_of([spec], 300, settings)[0]
    sent = bench_models.filled_windows(spec, 300, 160, 2, settings.drift.min_count)
    windows = [[bench_models.check_partial(partial) for partial in window] for window in sent]
    # each shard's 40 events as stage 1 sends them below drift.min_count: their values
    assert all(partial["form"] == "values" for partial in sent[0])
    assert all(type(stats) is bench_models.SketchValues for shard in windows[0]
               for stats in shard.features.values())
    as_sketches = bench_models.filled_windows(spec, 300, 160, 1, 40)  # 40 events a shard: sketches
    assert all(type(stats) is FeatureStats and not stats.sketch.empty
               for partial in as_sketches[0]
               for name, stats in bench_models.check_partial(partial).features.items()
               if name.startswith("x"))
    scorer = bench_models.DriftScorer(profile, drift=settings.drift)
    for shards in windows:
        merged = bench_models.merge_accumulators(shards)
        assert merged.n_events == 160 and [s.n_events for s in shards] == [40] * 4
        report = scorer.score_stats({n: merged.features[n] for n in profile.features}, n_rows=160)
        assert report.drifted_features == []
        assert all(result.score.pvalue is not None for result in report)
    sizes = bench_models.steady_window_events(1_000, 5_000.0, 300, 100)
    assert len(sizes) == 5 and 100 <= sizes[0] < 160 < sizes[2] < sizes[-1], sizes  # Pomeranz's sizes too
    assert bench_models.steady_window_events(1_000, 5_000.0, 300, 10**9) == []
    many = {"between_closes_cpu_per_prediction_us": 40.0, "cpu_per_prediction_us": 60.0,
            "predictions_timed": 100_000, "windows_closed": 1_000, "windows_under_filled": 1_000,
            "scored_close_extra_us": 3_000.0, "scored_close_events": [151, 276]}
    one = {"between_closes_cpu_per_prediction_us": 20.0, "cpu_per_prediction_us": 20.0,
           "predictions_timed": 100_000, "windows_closed": 1, "windows_under_filled": 1}
    text = bench_models._steady(many, one, 1_000, 5_000.0, [300, 3600], 300, 100)
    assert "+3.00 ms each (the mean over windows of 151, 276 events, the models' 10/30/50/70/90th" \
        in text, text


def test_rounds_give_the_median_round_bracketed_by_its_own_one_model_runs(bench_models: ModuleType) -> None:
    """With several rounds (one, many, one, many, one) the figure is the round whose ratio is the
    median, its one-model side the two runs around it; every round's ratio is listed."""
    def one(us: float) -> dict:
        return {"between_closes_cpu_per_prediction_us": us, "cpu_per_prediction_us": us,
                "predictions_timed": 100_000, "windows_closed": 1, "windows_under_filled": 0}

    def many(us: float) -> dict:
        return {"between_closes_cpu_per_prediction_us": us, "cpu_per_prediction_us": us,
                "predictions_timed": 100_000, "windows_closed": 1_000, "windows_under_filled": 0}

    ones, manys = [one(20.0), one(22.0), one(18.0), one(20.0)], [many(42.0), many(30.0), many(36.0)]
    picked_one, picked_many = bench_models.median_round(ones, manys, 1_000, 5_000.0, 4)
    ratios = picked_many["round_ratios"]
    assert ratios == pytest.approx([42 / 21, 30 / 20, 36 / 19])
    assert picked_many["cpu_per_prediction_us"] == 36.0
    assert picked_one["runs_cpu_per_prediction_us"] == [18.0, 20.0]
    assert bench_models._rounds(picked_many).startswith("the median of 3 rounds (2.00x, 1.50x, 1.89x)")
    alone_one, alone_many = bench_models.median_round(ones[:2], manys[:1], 1_000, 5_000.0, 4)
    assert "round_ratios" not in alone_many and alone_one["cpu_per_prediction_us"] == 21.0
