"""CBPE: accuracy, F1 and ROC-AUC estimated from calibrated scores alone under covariate shift.

The concept ``P(y | x)`` is fixed (logistic in ``x``); the model is over-confident (its score is
a steeper logistic), so raw scores would overstate accuracy and calibration matters. The inputs'
mean moves window by window; the estimate must stay within 0.03 of the realized accuracy in every
window, with the realized value inside the band.
"""

from __future__ import annotations

import numpy as np
import pytest

from driftline.operators.cbpe import IsotonicCalibration, PerformanceEstimator, expected_auc
from driftline.operators.multivariate import auc_score


def _events(rng: np.random.Generator, mean: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(mean, 1.0, n)
    labels = rng.random(n) < 1 / (1 + np.exp(-(1.5 * x - 0.5)))
    scores = 1 / (1 + np.exp(-(4 * x - 1)))
    return scores, labels


def test_estimates_track_realized_performance_under_covariate_shift() -> None:
    rng = np.random.default_rng(31)
    estimator = PerformanceEstimator.fit(*_events(rng, 0.0, 20_000))
    inside = 0
    for mean in (-1.0, -0.5, 0.0, 0.3, 0.6, 1.0, 1.5):
        scores, labels = _events(rng, mean, 5_000)
        estimate = estimator.estimate(scores)
        predicted = scores >= 0.5
        accuracy = float(np.mean(predicted == labels))
        tp = float(np.sum(predicted & labels))
        f1 = 2 * tp / (2 * tp + np.sum(predicted & ~labels) + np.sum(~predicted & labels))
        assert abs(estimate.accuracy - accuracy) < 0.03, mean
        assert abs(estimate.f1 - f1) < 0.04, mean
        assert abs(estimate.roc_auc - auc_score(labels, scores)) < 0.03, mean
        inside += estimate.low <= accuracy <= estimate.high
    assert inside >= 6  # a 95 % band


def test_raw_scores_would_mislead() -> None:
    rng = np.random.default_rng(32)
    scores, labels = _events(rng, 0.0, 20_000)
    raw = float(np.mean(np.where(scores >= 0.5, scores, 1 - scores)))
    calibrated = PerformanceEstimator.fit(scores, labels).estimate(scores).accuracy
    realized = float(np.mean((scores >= 0.5) == labels))
    assert raw - realized > 0.05 and abs(calibrated - realized) < 0.01


def test_isotonic_is_monotone_deterministic_and_handles_ties() -> None:
    rng = np.random.default_rng(33)
    s = np.round(rng.random(2_000), 2)
    y = rng.random(2_000) < s
    first, second = IsotonicCalibration.fit(s, y), IsotonicCalibration.fit(s[::-1], y[::-1])
    grid = np.linspace(-0.5, 1.5, 401)
    assert np.array_equal(first.predict(grid), second.predict(grid))
    assert np.all(np.diff(first.predict(grid)) >= 0)
    assert first.predict([-1.0])[0] == first.values[0]
    # Pool-adjacent-violators minimises squared error among monotone fits: at the knots the
    # fitted block means average to the overall rate.
    assert float(np.mean(first.predict(s))) == pytest.approx(float(np.mean(y)), abs=0.02)
    with pytest.raises(ValueError):
        IsotonicCalibration.fit([0.5], [1])


def test_expected_auc_edge_cases_and_empty_window() -> None:
    assert expected_auc(np.array([0.3, 0.3]), np.array([1.0, 0.0])) == 0.5
    assert np.isnan(expected_auc(np.array([0.1, 0.2]), np.array([1.0, 1.0])))
    estimator = PerformanceEstimator.fit([0.1, 0.9, 0.2, 0.8], [0, 1, 0, 1])
    empty = estimator.estimate([])
    assert empty.n == 0 and np.isnan(empty.accuracy)


def _multiclass(rng: np.random.Generator, mean: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    weights = np.array([[1.5, -1.0, 0.0], [0.0, 1.0, -1.5]])
    logits = rng.normal(mean, 1.0, (n, 2)) @ weights
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    sharp = np.exp(2.5 * logits)
    return sharp / sharp.sum(axis=1, keepdims=True), labels


def test_multiclass_accuracy_and_macro_f1_under_covariate_shift() -> None:
    rng = np.random.default_rng(34)
    estimator = PerformanceEstimator.fit(*_multiclass(rng, 0.0, 30_000))
    assert estimator.classes == 3
    for mean in (-0.8, 0.0, 0.8):
        scores, labels = _multiclass(rng, mean, 5_000)
        estimate = estimator.estimate(scores)
        predicted = scores.argmax(axis=1)
        assert abs(estimate.accuracy - float(np.mean(predicted == labels))) < 0.03, mean
        f1s = []
        for k in range(3):
            tp = np.sum((predicted == k) & (labels == k))
            f1s.append(2 * tp / (np.sum(predicted == k) + np.sum(labels == k)))
        assert abs(estimate.f1 - float(np.mean(f1s))) < 0.04, mean
    rows = estimator.calibrated(scores)
    assert rows.shape == (5_000, 3) and np.allclose(rows.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="multiclass"):
        PerformanceEstimator.fit(np.zeros((4, 3)), [0, 1])
