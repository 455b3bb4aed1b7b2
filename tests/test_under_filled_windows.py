"""An under-filled window (fewer events than ``drift.min_count``) is written with its counts and
verdicts but no distribution statistics; a window that fills, even across shards, is scored."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import numpy as np
import orjson
import pytest

from driftline.config import Settings
from driftline.operators.scorer import DriftScorer
from driftline.operators.validate import RawRecord
from driftline.operators.window_stats import FeatureStats, SketchValues, WindowAccumulator, WindowBuffer
from driftline.pipeline import shard as shard_module
from driftline.pipeline.local import InProcessPipeline
from driftline.pipeline.stage import OutboundMessage

START = 1_767_225_600_000  # on an hour boundary
WINDOW_MS = 300_000
EVENTS = [120, 120, 40]  # per 5-minute window: the reference, a filled one (60 + 60), an under-filled one


def _records(settings: Settings) -> list[RawRecord]:
    """One model, events spread over each window, alternating between the two partitions (so a
    window of 120 events is 60 on each shard: neither shard alone holds min_count)."""
    out = []
    offsets: Counter[int] = Counter()
    i = 0
    for w, n in enumerate(EVENTS):
        for j in range(n):
            ts = START + w * WINDOW_MS + j * (WINDOW_MS // n)
            value = orjson.dumps({
                "prediction_id": f"p{i}", "model_id": "m", "timestamp": ts,
                "features": {"x": float((j * 7) % 23) + (3.0 if w == 1 else 0.0), "c": "abc"[j % 3]},
                "prediction": {"label": "a"}})
            partition = i % 2
            out.append(RawRecord(settings.topics.predictions, partition, offsets[partition], ts, None, value))
            offsets[partition] += 1
            i += 1
    return out


def _run() -> InProcessPipeline:
    settings = Settings(
        topics={"partitions": 2, "model_events_partitions": 1},
        windows={"sizes_s": [300], "allowed_lateness_s": 5, "metrics_interval_s": 300},
        drift={"min_count": 100},
        sequential={"enabled": False},  # not what is tested here, and its calibration is slow
    )
    pipeline = InProcessPipeline(settings)
    pipeline.feed(_records(settings))
    pipeline.finish(START + len(EVENTS) * WINDOW_MS)
    return pipeline


def test_under_filled_window_has_counts_and_null_statistics_and_a_filled_one_is_scored() -> None:
    pipeline = _run()
    model_drift = {r["window_start"]: r for r in pipeline.rows["model_drift"]}
    filled, small = START + WINDOW_MS, START + 2 * WINDOW_MS
    # the first window is the model's reference (not scored); 60 + 60 over two shards fills the second
    assert model_drift[filled]["n_events"] == 120 and model_drift[filled]["score_status"] == "scored"
    assert model_drift[small]["n_events"] == 40 and model_drift[small]["score_status"] == "under_filled"
    assert model_drift[small]["drifted"] == 0 and model_drift[small]["n_features"] == 2

    scores = {(r["window_start"], r["feature"]): r for r in pipeline.rows["drift_scores"]}
    x, c = scores[(filled, "x")], scores[(filled, "c")]
    assert None not in (x["psi"], x["ks_stat"], x["ks_pvalue"], x["js_distance"], x["wasserstein"])
    assert None not in (c["psi"], c["chi2_stat"], c["chi2_pvalue"], c["js_distance"])
    assert x["ks_pvalue_adj"] is not None and c["chi2_pvalue_adj"] is not None  # tested: 120 values
    for feature in ("x", "c"):
        row = scores[(small, feature)]
        assert row["count"] == 40 and row["drifted"] == 0
        assert [row[k] for k in ("psi", "ks_stat", "ks_pvalue", "js_distance", "wasserstein", "chi2_stat",
                                 "chi2_pvalue", "ks_pvalue_adj", "chi2_pvalue_adj")] == [None] * 9

    windows = {(r["window_start"], r["feature"]): r for r in pipeline.rows["feature_windows"]}
    assert windows[(small, "x")]["count"] == 40 and windows[(small, "x")]["mean"] is not None
    assert windows[(small, "x")]["histogram"] == [] and windows[(filled, "x")]["histogram"] != []
    # the reference's bins and shares are still shown beside the window's counts
    assert windows[(small, "x")]["reference_histogram"] == windows[(filled, "x")]["reference_histogram"] != []
    assert windows[(small, "x")]["p50"] is None and windows[(filled, "x")]["p50"] is not None


def test_count_stats_gives_the_verdicts_of_score_stats_below_min_count() -> None:
    rng = np.random.default_rng(3)
    scorer = DriftScorer.from_reference({"x": rng.normal(size=1_000).tolist(), "c": ["a", "b"] * 500})
    x, c = FeatureStats(), FeatureStats()
    x.add_array(rng.normal(5.0, 1.0, size=60))  # far off the reference, but only 60 values
    c.add(["a"] * 59 + [None])
    full = scorer.score_stats({"x": x, "c": c}, n_rows=60)
    cheap = scorer.count_stats({"x": x, "c": c}, n_rows=60)
    assert full["x"].psi is not None and cheap["x"].psi is None and cheap["x"].ks is None
    assert cheap["c"].chi2 is None and cheap["c"].js is None
    for name in ("x", "c"):
        same = ("n", "missing", "p_adj", "drifted", "reason")
        assert [getattr(full[name], f) for f in same] == [getattr(cheap[name], f) for f in same]
    assert (full.drifted, full.drifted_features) == (cheap.drifted, cheap.drifted_features)


def _many_models_records(settings: Settings) -> list[RawRecord]:
    """Three models over four minutes, skewed traffic: 10 s windows of a few events per shard,
    60 s ones of a few hundred, and windows one shard holds many of and the other few. Numeric
    features with negatives, zeros, nulls, a feature some events lack, and a categorical one."""
    rng = np.random.default_rng(19)
    out = []
    offsets: Counter[int] = Counter()
    n = 1_600
    times = np.sort(rng.integers(0, 240_000, size=n))
    models = rng.choice(3, size=n, p=[0.7, 0.25, 0.05])
    for i in range(n):
        ts = START + int(times[i])
        features: dict[str, object] = {
            "x": float(rng.normal(2.0, 1.0)), "z": float(np.round(rng.normal(), 1)),  # -0.0 and 0.0
            "c": str(rng.choice(["a", "b", "c"])), "y": None if i % 11 == 0 else float(rng.lognormal())}
        if i % 5:
            features["w"] = int(rng.integers(-3, 4))
        if i % 37 == 0:
            features["x"] = -2e100 if i % 2 else 1e300  # beyond MAX_ABS_VALUE: invalid
        # numbers, labels and nulls in one column
        features["m"] = [None, True, "q", 1.5, -3, float(rng.normal(0.0, 1e-300))][i % 6]
        value = orjson.dumps({
            "prediction_id": f"p{i}", "model_id": f"m{models[i]}", "timestamp": ts, "features": features,
            "prediction": {"label": str(i % 2), "score": float(rng.random())}, "latency_ms": 3.0 + i % 7})
        # m0: one shard holds all its events; m1's 60 s windows (~100 events) fill over both shards
        # from one's ~65 (a sketch) and the other's ~35 (values) or from two shares of values
        partition = 0 if models[i] == 0 else int(rng.random() < (0.35 if models[i] == 1 else 0.5))
        out.append(RawRecord(settings.topics.predictions, partition, offsets[partition], ts, None, value))
        offsets[partition] += 1
    return out


def _per_column_values(parts: list) -> dict:
    """The partial of few events as shards sent it before the values form: a SketchValues per
    column (counts, moments, values); stage 2 still reads it."""
    class PerColumnValues(WindowAccumulator):
        __slots__ = ()
        stats_type = SketchValues

    buffered, accumulator = WindowBuffer(), PerColumnValues()
    for part in parts:
        buffered.append(part)
    buffered.drain(accumulator, shard_module.ACCUMULATE_CHUNK, final=True)
    return accumulator.to_partial()


def _many_models_rows(values_below: int | None, monkeypatch: pytest.MonkeyPatch | None = None,
                      form: Callable[[list], dict] | None = None) -> tuple[bytes, int]:
    """Every table's rows of the run (``values_below``: the shards' threshold, None for today's
    default; ``form``: what a partial of few events is made with, today's values form if None)
    and how many partials carried values in place of sketches."""
    if form is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(shard_module, "values_partial", form)
    settings = Settings(
        topics={"partitions": 2, "model_events_partitions": 1},
        windows={"sizes_s": [10, 60], "allowed_lateness_s": 5, "metrics_interval_s": 10},
        drift={"min_count": 60},
        sequential={"enabled": False},
    )
    pipeline = InProcessPipeline(settings)
    for shard in pipeline.shards:
        shard.values_below = settings.drift.min_count if values_below is None else values_below
    records = _many_models_records(settings)
    sent = []
    original = pipeline._route

    def route(messages: list[OutboundMessage]) -> None:
        sent.extend(m.value for m in messages if m.value is not None and b'"values":' in m.value
                    and b'"type":"partial"' in m.value)
        original(messages)

    pipeline._route = route  # type: ignore[method-assign]
    pipeline.feed(records)
    pipeline.finish(START + 300_000)
    tables = {name: rows for name, rows in sorted(pipeline.rows.items())}
    return orjson.dumps(tables, option=orjson.OPT_SORT_KEYS), len(sent)


def test_values_in_place_of_sketches_leave_every_row_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shard's partial of few events carries their counts and values; stage 2 computes the same
    moments and builds the same sketches from them: every table's rows equal a run whose shards
    always send sketches, and one whose shards send the moments beside the values (the form
    before)."""
    sketches, none = _many_models_rows(values_below=0)
    values, sent = _many_models_rows(values_below=None)
    assert none == 0 and sent > 20
    assert values == sketches
    for table in (b'"p50":', b'"ks_stat":', b'"mean":', b'"invalid":'):
        assert table in values  # filled windows' quantiles and scores are among the rows compared
    per_column, sent_before = _many_models_rows(None, monkeypatch, _per_column_values)
    assert sent_before == sent and per_column == values


def _three_forms() -> tuple[list[dict], list[dict], list[dict]]:
    """Four shards' partials of one window with sketches, per-column values (the form before) and
    in the values form (what shards send now), as stage 2 receives them."""
    from driftline.operators.window_stats import EventColumns, values_partial
    from driftline.schemas.events import Prediction
    rng = np.random.default_rng(5)
    sketches, per_column, values_form = [], [], []
    for k in (3, 17, 1, 9):
        rows = [{"x": float(v), "c": "ab"[int(v > 0)]} for v in rng.normal(size=k)]
        if k == 17:
            rows[2]["x"] = float("inf")
        parts = [EventColumns.of(rows, [Prediction(label="1", score=float(rng.random()))] * k, [None] * k)]
        acc = WindowAccumulator()
        acc.add_chunk(parts)
        for partial, into in ((acc.to_partial(), sketches), (_per_column_values(parts), per_column),
                              (values_partial(parts), values_form)):
            into.append(orjson.loads(orjson.dumps(partial)))
    return sketches, per_column, values_form


def test_partials_of_every_form_merge_alike() -> None:
    """Partials with sketches and with per-column values are still read, alone or beside ones in
    the values form, in any mix; every column's counts, moments, categories and sketch agree."""
    from driftline.operators.window_stats import merge_partials
    sketches, per_column, values_form = _three_forms()
    assert all("values" in p["features"]["x"] and "sketch" not in p["features"]["x"] for p in per_column)
    assert all(p["form"] == "values" and "mean" not in p["features"]["x"] for p in values_form)
    expected = merge_partials(sketches)
    for mix in ([values_form[0], sketches[1], per_column[2], values_form[3]], per_column, values_form):
        merged = merge_partials(mix)
        for name in ("x", "c"):
            assert repr(merged.features[name].to_dict()) == repr(expected.features[name].to_dict())
        assert repr(merged.prediction_value.to_dict()) == repr(expected.prediction_value.to_dict())
        assert merged.features["x"].sketch.count == expected.features["x"].sketch.count > 0
    # parsed into one another too (a SketchValues as the target): the shared unbuilt sketch stays empty
    from driftline.operators.window_stats import _UNBUILT, WindowAccumulator
    target = WindowAccumulator.from_partial(values_form[0])
    for partial in (sketches[1], per_column[2], values_form[3]):
        target.merge(WindowAccumulator.from_partial(partial))
    assert _UNBUILT.count == 0 and target.features["x"].sketch.count == expected.features["x"].sketch.count


def test_a_partial_whose_values_are_not_its_numbers_is_refused() -> None:
    """Values that could not be the window's valid numbers make the partial malformed (dead-lettered
    on arrival), not a sketch built from garbage when the window fills."""
    from driftline.operators.window_stats import EventColumns, values_partial
    from driftline.pipeline.windows import check_partial
    from driftline.schemas.events import Prediction
    parts = [EventColumns.of([{"x": 1.5}, {"x": -2.0}], [Prediction(label="1")] * 2, [None, None])]
    for partial in (_per_column_values(parts), values_partial(parts)):
        assert check_partial(partial).features["x"].n == 2
        for bad in ([1.5, "a"], [1.5, 1e101], [1.5, math.nan], [-math.inf, 1.5], [1.5, None], "1.5,-2.0",
                    [1.5, 2]):
            with pytest.raises(ValueError, match="valid numbers"):
                check_partial({**partial, "features": {"x": {**partial["features"]["x"], "values": bad}}})
        with pytest.raises(ValueError, match=r"valid numbers|2 events"):
            check_partial({**partial, "features": {"x": {**partial["features"]["x"], "values": [1.5]}}})


def test_a_values_form_partial_whose_counts_are_not_its_events_is_refused() -> None:
    from driftline.operators.window_stats import EventColumns, values_partial
    from driftline.pipeline.windows import check_partial
    from driftline.schemas.events import Prediction
    partial = values_partial([EventColumns.of([{"x": 1.5, "c": "a"}, {"x": None, "c": "b"}],
                                              [Prediction(label="1")] * 2, [None, 3.0])])
    assert check_partial(partial).features["c"].categories == {"a": 1, "b": 1}
    x, c = partial["features"]["x"], partial["features"]["c"]
    for column in ({"x": {**x, "missing": 0}}, {"x": {**x, "invalid": -1, "missing": 2}},
                   {"c": {**c, "categories": {"a": 1, "b": 2}}},
                   {"c": {**c, "categories": {"a": 3, "b": -1}}}):
        with pytest.raises(ValueError, match="not the window's 2 events"):
            check_partial({**partial, "features": {**partial["features"], **column}})
    with pytest.raises(ValueError, match="unknown form"):
        check_partial({**partial, "form": "columns"})


def test_a_values_form_partial_whose_counts_are_past_int64_is_refused() -> None:
    """A values-form column's counts are checked as it is parsed (adding up to n_events), and
    n_events is bounded: counts that add up but that an int64 sum could not hold are refused."""
    from driftline.operators.window_stats import EventColumns, values_partial
    from driftline.pipeline.windows import check_partial
    from driftline.schemas.events import Prediction
    partial = values_partial([EventColumns.of([{"x": 1.5}], [Prediction(label="1")], [None])])
    assert check_partial(partial).features["x"].n == 1
    huge = 2**62
    columns = {name: {**column, "missing": column["missing"] + huge}
               for name, column in partial["features"].items()}
    extra = {name: {**partial[name], "missing": partial[name]["missing"] + huge}
             for name in ("prediction_label", "prediction_value", "latency")}
    with pytest.raises(ValueError, match="n_events is not a count"):
        check_partial({**partial, **extra, "n_events": partial["n_events"] + huge, "features": columns})
