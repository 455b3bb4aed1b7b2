"""An under-filled window (fewer events than ``drift.min_count``) is written with its counts and
verdicts but no distribution statistics; a window that fills, even across shards, is scored."""

from __future__ import annotations

from collections import Counter

import numpy as np
import orjson

from driftline.config import Settings
from driftline.operators.scorer import DriftScorer
from driftline.operators.validate import RawRecord
from driftline.operators.window_stats import FeatureStats
from driftline.pipeline.local import InProcessPipeline

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
