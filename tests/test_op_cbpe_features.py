"""CBPE's feature-aware calibration: unbiased where the model's error depends on a feature it
under-uses, deterministic, carried by the profile, and chosen by ``calibration="auto"`` only when
the reference says it calibrates better."""

from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.operators.cbpe import FeatureAwareCalibration, PerformanceEstimator
from driftline.operators.model_watch import (
    MultivariateReference,
    MultivariateWatch,
    merge_windows,
    multivariate_section,
)
from driftline.operators.profile import ReferenceProfile, build_profile

WINDOW_MS = 60_000


def _events(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed concept on features a, b; a model that scores on ``a`` alone (its error depends on
    ``b``); the inputs shift along ``b`` only. Scores, features (n, 2), labels."""
    x = np.column_stack([rng.normal(size=n), rng.normal(shift, 1.0, n)])
    labels = rng.random(n) < 1 / (1 + np.exp(-(2 * x[:, 0] + 1.5 * x[:, 1])))
    return 1 / (1 + np.exp(-2 * x[:, 0])), x, labels


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _events(np.random.default_rng(11), 10_000, 0.0)


def test_feature_aware_is_unbiased_where_score_only_is_not(reference: Any) -> None:
    scores, x, labels = reference
    by_score = PerformanceEstimator.fit(scores, labels)
    by_features = PerformanceEstimator.fit(scores, labels, features=x, calibration="features")
    assert by_score.calibration == "score" and by_features.calibration == "features"
    rng = np.random.default_rng(12)
    for shift in (-1.0, 0.0, 1.0):
        worst_score, worst_features = 0.0, 0.0
        for _ in range(3):
            s, w, y = _events(rng, 5_000, shift)
            realized = float(np.mean((s >= 0.5) == y))
            worst_score = max(worst_score, abs(by_score.estimate(s).accuracy - realized))
            estimate = by_features.estimate(s, w)
            worst_features = max(worst_features, abs(estimate.accuracy - realized))
            assert estimate.low <= realized <= estimate.high or abs(estimate.accuracy - realized) < 0.02
        assert worst_features <= 0.02, shift
        if shift:
            assert worst_score > 0.03, shift  # the score-only map is biased along b: misses +-0.03


def test_without_a_shift_feature_aware_is_no_worse(reference: Any) -> None:
    """The simulated covariate shift of test_op_cbpe (along the score's own feature): the
    feature-aware calibration keeps the score-only one's accuracy."""
    x = reference[1]
    score_only = 1 / (1 + np.exp(-3 * x[:, 0]))
    truth = np.random.default_rng(13).random(x.shape[0]) < 1 / (1 + np.exp(-2 * x[:, 0]))
    by_score = PerformanceEstimator.fit(score_only, truth)
    by_features = PerformanceEstimator.fit(score_only, truth, features=x, calibration="features")
    rng = np.random.default_rng(14)
    for shift in (-1.0, 0.0, 1.0):
        a = rng.normal(shift, 1.0, 5_000)
        w = np.column_stack([a, rng.normal(size=a.size)])
        s = 1 / (1 + np.exp(-3 * a))
        realized = float(np.mean((s >= 0.5) == (rng.random(a.size) < 1 / (1 + np.exp(-2 * a)))))
        assert abs(by_features.estimate(s, w).accuracy - realized) <= 0.02
        assert abs(by_features.estimate(s, w).accuracy - by_score.estimate(s).accuracy) <= 0.01


def test_auto_picks_by_cross_validated_brier_and_records_it(reference: Any) -> None:
    scores, x, labels = reference
    chosen = PerformanceEstimator.fit(scores, labels, features=x, calibration="auto")
    assert chosen.calibration == "features" and chosen.selection is not None
    assert chosen.selection["brier"]["features"] < chosen.selection["brier"]["score"]
    # features that say nothing beyond the score: the score-only map stays
    rng = np.random.default_rng(15)
    noise = rng.normal(size=x.shape)
    truth = rng.random(scores.size) < scores
    kept = PerformanceEstimator.fit(scores, truth, features=noise, calibration="auto")
    assert kept.calibration == "score" and kept.selection is not None
    assert kept.selection["calibration"] == "score"
    assert PerformanceEstimator.from_state(kept.to_state()).selection == kept.selection
    with pytest.raises(ValueError, match="features"):
        PerformanceEstimator.fit(scores, labels, calibration="features")
    with pytest.raises(ValueError, match="binary"):
        PerformanceEstimator.fit(np.column_stack([scores, 1 - scores]), labels.astype(int), features=x,
                                 calibration="features")


def test_deterministic_batch_invariant_and_survives_state_and_pickle(reference: Any) -> None:
    scores, x, labels = reference
    first = PerformanceEstimator.fit(scores, labels, features=x, calibration="features", seed=3)
    again = PerformanceEstimator.fit(scores, labels, features=x, calibration="features", seed=3)
    assert first.to_state() == again.to_state()
    probabilities = first.calibrated(scores, x)
    pieces = np.concatenate([first.calibrated(scores[i:i + 333], x[i:i + 333])
                             for i in range(0, scores.size, 333)])
    assert np.array_equal(pieces, probabilities)  # the same bits whatever the batching
    restored = PerformanceEstimator.from_state(first.to_state())
    assert np.array_equal(restored.calibrated(scores, x), probabilities)
    assert np.array_equal(pickle.loads(pickle.dumps(first)).calibrated(scores, x), probabilities)
    with pytest.raises(ValueError, match="features"):
        first.calibrated(scores)
    # missing and non-finite feature values go where the trees sent missing ones, never raise
    holes = x[:4].copy()
    holes[0, 1], holes[1, 0], holes[2, 1] = np.nan, np.inf, -np.inf
    assert np.all(np.isfinite(first.calibrated(scores[:4], holes)))
    # a score-only state is as before: no new keys (a profile's id does not move)
    assert set(PerformanceEstimator.fit(scores, labels).to_state()) == {"threshold", "z", "calibrations"}


def test_the_trees_evaluate_as_scikit_learn_does(reference: Any) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    scores, x, labels = reference
    holes = x.copy()
    holes[::17, 1] = np.nan  # missing values in the reference: the trees learn where they go
    cal = FeatureAwareCalibration.fit(scores, holes, labels, seed=0)
    design = np.column_stack([scores, holes])
    model = HistGradientBoostingClassifier(
        max_iter=50, max_depth=2, learning_rate=0.2, min_samples_leaf=500, l2_regularization=1.0,
        monotonic_cst=[1, 0, 0], early_stopping=False, random_state=0).fit(design, labels)
    assert np.allclose(cal.predict(scores, holes), model.predict_proba(design)[:, 1], rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def profile(reference: Any) -> ReferenceProfile:
    scores, x, labels = reference
    table = {"a": x[:, 0].tolist(), "b": x[:, 1].tolist()}
    section = multivariate_section(table, scores=scores.tolist(), labels=labels.tolist(), calibration="auto",
                                   sample_size=200)
    assert section is not None and section["performance"]["by_features"]
    made = build_profile("m", "1", table, label_column=None, prediction_column=None, bins=10, top_k=5,
                         created_at_ms=0, multivariate=section)
    return ReferenceProfile.model_validate_json(made.model_dump_json())  # as the topic carries it


def _window_estimates(profile: ReferenceProfile, batch: int, events: Any) -> dict[int, Any]:
    times, ids, features, scores = events
    watch = MultivariateWatch(1.0, status_grid_ms=10_000, min_effect_sd=0.0, learning=200, sample_size=200)
    assert watch.add_profile(profile)
    for lo in range(0, len(times), batch):
        watch.observe("m", "1", times[lo:lo + batch], ids[lo:lo + batch], features[lo:lo + batch],
                      scores[lo:lo + batch], [WINDOW_MS])
    watch = pickle.loads(pickle.dumps(watch))  # a checkpoint in between: the estimator decodes again
    out = {}
    for start in sorted({start for (_, start, _, _) in watch.windows}):
        part = watch.take(WINDOW_MS, start, "m", "1")
        assert part is not None
        out[start] = merge_windows([part], k=200).estimate()
    return out


def test_the_pipeline_estimates_windows_with_the_features(profile: ReferenceProfile) -> None:
    assert profile.multivariate is not None
    estimator = MultivariateReference.from_section(profile.multivariate).estimator
    assert estimator is not None and estimator.calibration == "features"
    scores, x, _ = _events(np.random.default_rng(16), 4_000, 1.0)
    times = list(range(0, 4_000 * 31, 31))
    features: list[dict[str, Any]] = [{"a": float(r[0]), "b": float(r[1])} for r in x]
    features[7]["b"] = None  # missing: NaN, as in the library
    score_list: list[float | None] = scores.tolist()
    score_list[9] = None  # no score: not estimated
    events = (times, [f"p{i}" for i in range(4_000)], features, score_list)
    whole = _window_estimates(profile, 4_000, events)
    assert _window_estimates(profile, 251, events) == whole
    x_missing = x.copy()
    x_missing[7, 1] = np.nan
    stamps = np.asarray(times)
    for start, estimate in whole.items():
        rows = np.flatnonzero((stamps - stamps % WINDOW_MS == start) & (np.arange(4_000) != 9))
        library = estimator.estimate(scores[rows], x_missing[rows])
        assert estimate is not None and estimate.n == library.n
        assert estimate.accuracy == pytest.approx(library.accuracy, abs=1e-8)


def test_profile_build_records_the_auto_choice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from driftline.cli.main import main

    scores, x, labels = _events(np.random.default_rng(17), 3_000, 0.0)
    data = tmp_path / "train.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["a", "b", "score", "label"])
        writer.writerows([float(r[0]), float(r[1]), float(s), "yes" if y else "no"]
                         for r, s, y in zip(x, scores, labels, strict=True))
    args = ["profile", "build", "--model", "m", "--version", "1", "--data", str(data), "--no-publish"]
    assert main([*args, "--cbpe-calibration", "auto"]) == 2  # nothing to calibrate without scores
    assert "--cbpe-calibration needs --score-column" in capsys.readouterr().err
    out = tmp_path / "profile.json"
    assert main([*args, "--label-column", "label", "--score-column", "score", "--cbpe-calibration", "auto",
                 "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # the caption wraps
    assert "CBPE calibration on the score and the features (auto: cross-validated Brier" in printed
    profile = ReferenceProfile.model_validate_json(out.read_bytes())
    assert profile.multivariate is not None
    performance = profile.multivariate["performance"]
    assert performance["selection"]["calibration"] == "features" and performance["by_features"]
    estimator = MultivariateReference.from_section(profile.multivariate).estimator
    assert estimator is not None and estimator.by_features is not None
    assert estimator.by_features.columns == 1 + len(profile.multivariate["features"])
