"""An under-filled window's rows made from its profile's templates (pipeline/under_filled.py) are
the rows of the scorer's count_stats report, value for value and key for key."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from driftline.config import Settings
from driftline.operators.scorer import DriftScorer
from driftline.operators.triggers import RetrainPolicy
from driftline.operators.window_stats import (
    EventColumns,
    FeatureStats,
    WindowAccumulator,
    merge_accumulators,
    values_partial,
)
from driftline.pipeline.records import Partial, WindowKey
from driftline.pipeline.references import ProfileBook
from driftline.pipeline.to_rows import drift_score_row, feature_kind, feature_window_row, window_columns
from driftline.pipeline.windows import PREDICTION_FEATURE, WindowClock
from driftline.schemas.events import Prediction

START = 1_767_225_600_000
SIZE_S = 300


def _settings() -> Settings:
    return Settings(windows={"sizes_s": [SIZE_S]}, drift={"min_count": 100}, sequential={"enabled": False})


def _scorer(settings: Settings) -> DriftScorer:
    rng = np.random.default_rng(3)
    n = 400
    reference = {"x": rng.normal(size=n).tolist(), "c": ["a", "b", "c", "d"] * (n // 4),
                 "z": rng.uniform(size=n).tolist(), "pred": ["0", "1"] * (n // 2)}
    return DriftScorer.from_reference(reference, prediction_column="pred", drift=settings.drift)


def _partials(w: int, sizes: list[int], seed: int) -> list[dict[str, Any]]:
    """Shards' values-form partials of window ``w``: ``z`` (a profile feature) never arrives, ``extra``
    (not in the profile) does, and some ``x`` and ``c`` are missing or odd."""
    rng = np.random.default_rng(seed)
    out = []
    for k in sizes:
        rows: list[dict[str, Any]] = [{"x": float(v), "c": "abe"[int(v > 0) + int(v > 1)], "extra": 1.0}
                                      for v in rng.normal(size=k) * (1 + w)]
        for i in range(0, k, 3):
            rows[i]["x" if i % 2 else "c"] = None
        predictions = [Prediction(label=str(int(rng.random() > 0.3))) for _ in range(k)]
        columns = [EventColumns.of(rows, predictions, [2.0] * k)]
        out.append(orjson.loads(orjson.dumps(values_partial(columns))))
    return out


def _expected(clock: WindowClock, scorer: DriftScorer, key: WindowKey,
              parts: list[dict[str, Any]]) -> list[Any]:
    """The window's feature_windows and drift_scores rows as the count_stats report makes them."""
    # merged as the clock merges an under-filled window's partials: without sketches
    merged = merge_accumulators([WindowAccumulator.from_partial(p) for p in parts], sketches=False,
                                consume=True)
    profile = scorer.profile
    observed = {n: s for n, s in merged.features.items() if n in profile.features}
    report = scorer.count_stats(observed, n_rows=merged.n_events, prediction=merged.prediction_label)
    assert report.prediction is not None and not report.drifted
    window = window_columns(clock.run_id, key)
    pid, config_hash = profile.profile_id, clock.config_hash
    features = dict(merged.features)
    for name in profile.features:
        if name not in features:
            features[name] = FeatureStats()
            features[name].add_missing(merged.n_events)
    windows = [feature_window_row(window, n, feature_kind(features[n], profile.features.get(n)), features[n],
                                  report[n].score if n in profile.features else None, pid)
               for n in sorted(features)]
    windows.append(feature_window_row(window, PREDICTION_FEATURE, "prediction", merged.prediction_label,
                                      report.prediction.score, pid))
    windows.append(feature_window_row(window, "__latency_ms__", "latency", merged.latency, None, pid))
    scores = [drift_score_row(window, r.feature, r.score, r.drifted, r.drifted_by, r.p_adj, pid, config_hash)
              for r in sorted(report, key=lambda r: r.feature)]
    scores.append(drift_score_row(window, PREDICTION_FEATURE, report.prediction.score, False, [],
                                  report.prediction.score.pvalue, pid, config_hash))
    return [[list(r.items()) for r in windows], [list(r.items()) for r in scores]]


def test_under_filled_rows_from_templates_are_those_of_the_count_stats_report() -> None:
    settings = _settings()
    scorer = _scorer(settings)
    book = ProfileBook()
    book.add(scorer.profile)
    policy = RetrainPolicy(settings.triggers, settings.config_hash(), "run")
    clock = WindowClock(2, settings, "run", book, policy)
    model, version = scorer.profile.model_id, scorer.profile.model_version
    for w, sizes in enumerate(([3, 5], [11, 0], [40, 38])):  # later windows reuse the model's templates
        start = START + w * SIZE_S * 1000
        parts = _partials(w, [k for k in sizes if k], seed=w)
        for shard, partial in enumerate(parts):
            end = start + SIZE_S * 1000
            clock.add_partial(Partial(shard, model, version, "", SIZE_S, start, end, partial))
        for shard in range(2):
            clock.advance(shard, start + SIZE_S * 1000)
        rows, triggers = clock.close()
        key = WindowKey(SIZE_S * 1000, start, model, version, "")
        got = [[list(r.items()) for r in rows[t]] for t in ("feature_windows", "drift_scores")]
        assert got == _expected(clock, scorer, key, parts)
        assert [r["score_status"] for r in rows["model_drift"]] == ["under_filled"]
        assert not triggers and clock.last_drifted[(model, version)] == 0
        counts = {dict(r)["feature"]: dict(r)["count"] for r in got[1]}
        assert counts["z"] == 0 and counts["x"] > 0 and counts[PREDICTION_FEATURE] > 0
    assert len(clock.under_filled) == 1
