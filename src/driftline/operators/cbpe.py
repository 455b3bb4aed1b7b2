"""Confidence-based performance estimation (CBPE): a classifier's accuracy before labels arrive.

Method. On a labelled reference (the training profile, or a held-out slice), the model's scores
are calibrated with isotonic regression (pool-adjacent-violators, numpy, deterministic): ``c(s)``
is the reference's rate of the positive class among events scored about ``s``. If the concept
``P(y | x)`` stays the same, only the inputs move (covariate shift), ``c(s)`` stays right, so on a
window of unlabelled events each prediction is correct with probability ``a_i = c(s_i)`` when it
predicts positive and ``1 - c(s_i)`` when negative. Then, from the scores alone:

- **accuracy**: ``mean(a_i)``; the realized accuracy is a Poisson-binomial sum of those
  ``a_i``, so its sd is ``sqrt(sum a_i (1 - a_i)) / n`` and the band is ``+- z`` of it
  (``z`` = 1.96 by default: realized accuracy inside about 95 % of the time if the
  calibration holds);
- **F1**: from expected counts, ``TP = sum_{pred 1} c_i``, ``FP = sum_{pred 1} (1 - c_i)``,
  ``FN = sum_{pred 0} c_i``: ``2 TP / (2 TP + FP + FN)``;
- **ROC-AUC**: the expected share of (positive, negative) pairs ordered by score, each event
  positive with probability ``c_i``: ``sum_{s_i > s_j} c_i (1 - c_j) / (sum c_i sum (1 - c_j))``
  minus the self-pairs, ties counting 1/2 (computed in O(n log n) by sorting).

A concept change (``P(y | x)`` moves) is exactly what CBPE cannot see; compare with the realized
figures once labels arrive.

>>> import numpy as np
>>> rng = np.random.default_rng(4)
>>> def events(mean, n):
...     x = rng.normal(mean, 1.0, n)
...     y = rng.random(n) < 1 / (1 + np.exp(-2 * x))          # the concept: fixed
...     return 1 / (1 + np.exp(-4 * x)), y                      # an over-confident model
>>> scores, labels = events(0.0, 20_000)
>>> estimator = PerformanceEstimator.fit(scores, labels)
>>> scores, labels = events(1.0, 5_000)                        # the inputs move
>>> estimate = estimator.estimate(scores)
>>> realized = float(np.mean((scores >= 0.5) == labels))
>>> abs(estimate.accuracy - realized) < 0.02, estimate.low < estimate.accuracy < estimate.high
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class IsotonicCalibration:
    """Non-decreasing map from score to probability, fitted by pool-adjacent-violators.

    Between the fitted blocks' mean scores the map is linear; beyond them, flat.

    >>> cal = IsotonicCalibration.fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    >>> [float(v) for v in cal.predict([0.1, 0.25, 0.4])]
    [0.0, 0.5, 1.0]
    """

    def __init__(self, knots: FloatArray, values: FloatArray) -> None:
        self.knots = knots
        self.values = values

    @classmethod
    def fit(cls, scores: Any, labels: Any) -> IsotonicCalibration:
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        if s.shape != y.shape or s.ndim != 1 or s.size < 2:
            raise ValueError("scores and labels must be 1-D of the same length (at least 2)")
        order = np.argsort(s, kind="stable")
        s, y = s[order], y[order]
        # Equal scores form one block from the start (ties must map to one value).
        uniq, start = np.unique(s, return_index=True)
        sums = np.add.reduceat(y, start)
        weights = np.diff(np.append(start, s.size)).astype(np.float64)
        score_sums = uniq * weights
        # Pool adjacent violators on a stack of blocks.
        blk_sum: list[float] = []
        blk_w: list[float] = []
        blk_s: list[float] = []
        for total, w, ss in zip(sums.tolist(), weights.tolist(), score_sums.tolist(), strict=True):
            blk_sum.append(total)
            blk_w.append(w)
            blk_s.append(ss)
            while len(blk_sum) > 1 and blk_sum[-2] / blk_w[-2] >= blk_sum[-1] / blk_w[-1]:
                total, w, ss = blk_sum.pop(), blk_w.pop(), blk_s.pop()
                blk_sum[-1] += total
                blk_w[-1] += w
                blk_s[-1] += ss
        w_arr = np.array(blk_w)
        return cls(np.array(blk_s) / w_arr, np.array(blk_sum) / w_arr)

    def predict(self, scores: Any) -> FloatArray:
        """Calibrated probabilities of the positive class."""
        return np.interp(np.asarray(scores, dtype=np.float64), self.knots, self.values)

    def segments(self, scores: Any) -> npt.NDArray[np.int64]:
        """Index of the piece of the map each score falls on: 0 below the first knot (flat),
        ``k`` on ``[knots[k-1], knots[k])`` (linear), ``len(knots)`` from the last knot on (flat).
        A higher segment means a higher score: what :func:`expected_auc_of_segments` needs.

        >>> cal = IsotonicCalibration.fit([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
        >>> cal.segments([0.0, 0.1, 0.3, 0.9]).tolist()
        [0, 1, 2, 3]
        """
        s = np.asarray(scores, dtype=np.float64)
        return np.searchsorted(self.knots, s, side="right").astype(np.int64)


@dataclass(frozen=True)
class PerformanceEstimate:
    """Estimated performance of one window, from scores alone."""

    n: int
    """Events in the window."""
    accuracy: float
    """Expected accuracy."""
    accuracy_sd: float
    """Poisson-binomial sd of the realized accuracy around :attr:`accuracy`."""
    low: float
    """Lower end of the band, ``accuracy - z * accuracy_sd``."""
    high: float
    """Upper end of the band."""
    f1: float
    """Expected F1 of the positive class (multiclass: macro average), from expected confusion
    counts."""
    roc_auc: float
    """Expected ROC-AUC (multiclass: macro one-vs-rest; NaN if the window cannot have both
    classes)."""


class PerformanceEstimator:
    """CBPE: fit on a labelled reference's scores, estimate windows from scores alone.

    **Binary**: ``scores`` is 1-D (the positive class's score), labels 0/1 or bool; the model
    predicts positive when its score is at least ``threshold``. **Multiclass**: ``scores`` is
    ``(n, K)`` (one column per class), labels are column indices; the model predicts the column
    with the highest score. Each class's column is calibrated one-vs-rest and the calibrated rows
    renormalised to sum to 1; F1 and ROC-AUC are then macro averages over the classes.

    >>> rng = np.random.default_rng(5)
    >>> def events(n):
    ...     logits = rng.normal(size=(n, 3)) * 2
    ...     p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    ...     labels = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    ...     return np.exp(2 * logits) / np.exp(2 * logits).sum(axis=1, keepdims=True), labels
    >>> estimator = PerformanceEstimator.fit(*events(30_000))
    >>> scores, labels = events(5_000)
    >>> estimate = estimator.estimate(scores)
    >>> abs(estimate.accuracy - float(np.mean(scores.argmax(axis=1) == labels))) < 0.03
    True
    """

    def __init__(self, calibrations: list[IsotonicCalibration], threshold: float, z: float) -> None:
        self.calibrations = calibrations
        """One per class column (a single one for a binary classifier)."""
        self.threshold = threshold
        self.z = z

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (the calibrations' knots and values).

        >>> est = PerformanceEstimator.fit([0.1, 0.4, 0.6, 0.9], [0, 0, 1, 1])
        >>> PerformanceEstimator.from_state(est.to_state()).estimate([0.2, 0.8]) == est.estimate([0.2, 0.8])
        True
        """
        return {"threshold": self.threshold, "z": self.z,
                "calibrations": [{"knots": c.knots.tolist(), "values": c.values.tolist()}
                                 for c in self.calibrations]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PerformanceEstimator:
        calibrations = [IsotonicCalibration(np.asarray(c["knots"], dtype=np.float64),
                                            np.asarray(c["values"], dtype=np.float64))
                        for c in state["calibrations"]]
        return cls(calibrations, float(state["threshold"]), float(state["z"]))

    @property
    def classes(self) -> int:
        return max(2, len(self.calibrations))

    @classmethod
    def fit(cls, scores: Any, labels: Any, *, threshold: float = 0.5,
            z: float = 1.96) -> PerformanceEstimator:
        """Calibrate on the reference: the model's scores and the true labels."""
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(labels)
        if s.ndim == 1:
            return cls([IsotonicCalibration.fit(s, y.astype(np.float64))], threshold, z)
        if s.ndim != 2 or s.shape[1] < 2 or s.shape[0] != y.size:
            raise ValueError("multiclass scores must be (n, K >= 2) with one label per row")
        y = y.astype(np.int64)
        return cls([IsotonicCalibration.fit(s[:, k], (y == k).astype(np.float64))
                    for k in range(s.shape[1])], threshold, z)

    def calibrated(self, scores: Any) -> FloatArray:
        """Calibrated class probabilities: ``(n,)`` of the positive class for a binary model,
        ``(n, K)`` rows summing to 1 for a multiclass one."""
        s = np.asarray(scores, dtype=np.float64)
        if len(self.calibrations) == 1:
            return self.calibrations[0].predict(s)
        c = np.column_stack([cal.predict(s[:, k]) for k, cal in enumerate(self.calibrations)])
        totals = c.sum(axis=1, keepdims=True)
        # A row every calibration maps to 0 (scores below all reference blocks) is uninformative.
        return np.where(totals > 0, c / np.where(totals > 0, totals, 1.0), 1.0 / c.shape[1])

    def estimate(self, scores: Any) -> PerformanceEstimate:
        """Estimated performance of a window of scores (no labels); rows with a NaN are skipped."""
        s = np.asarray(scores, dtype=np.float64)
        multiclass = len(self.calibrations) > 1
        if multiclass:
            s = s.reshape(-1, len(self.calibrations))
            s = s[~np.isnan(s).any(axis=1)]
        else:
            s = s[~np.isnan(s)]
        n = int(s.shape[0])
        if n == 0:
            return PerformanceEstimate(0, *(math.nan,) * 6)
        c = self.calibrated(s)
        if multiclass:
            predicted_class = s.argmax(axis=1)
            correct = c[np.arange(n), predicted_class]
            one_vs_rest = [(predicted_class == k, c[:, k], s[:, k]) for k in range(c.shape[1])]
        else:
            predicted = s >= self.threshold
            correct = np.where(predicted, c, 1.0 - c)
            one_vs_rest = [(predicted, c, s)]
        accuracy = float(correct.mean())
        sd = math.sqrt(float(np.sum(correct * (1.0 - correct)))) / n
        f1s = [_expected_f1(pred, prob) for pred, prob, _ in one_vs_rest]
        aucs = [expected_auc(score, prob) for _, prob, score in one_vs_rest]
        return PerformanceEstimate(
            n=n, accuracy=accuracy, accuracy_sd=sd, low=max(0.0, accuracy - self.z * sd),
            high=min(1.0, accuracy + self.z * sd), f1=_mean(f1s), roc_auc=_mean(aucs),
        )


def _expected_f1(predicted: npt.NDArray[np.bool_], probability: FloatArray) -> float:
    tp = float(probability[predicted].sum())
    fp = float((1.0 - probability[predicted]).sum())
    fn = float(probability[~predicted].sum())
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else math.nan


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def expected_auc(scores: FloatArray, probabilities: FloatArray) -> float:
    """Expected ROC-AUC when event ``i`` is positive with probability ``probabilities[i]``.

    >>> expected_auc(np.array([0.1, 0.9]), np.array([0.0, 1.0]))
    1.0
    """
    s = np.asarray(scores, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    q = 1.0 - p
    uniq, inverse = np.unique(s, return_inverse=True)
    p_by = np.bincount(inverse, weights=p, minlength=uniq.size)
    q_by = np.bincount(inverse, weights=q, minlength=uniq.size)
    q_below = np.cumsum(q_by) - q_by  # negatives' weight at strictly lower scores
    # Pairs (i positive, j negative), i != j: strictly ordered, plus ties at 1/2 minus self-pairs.
    ordered = float(np.sum(p_by * q_below))
    ties = float(np.sum(p_by * q_by) - np.sum(p * q))
    pairs = float(p.sum() * q.sum() - np.sum(p * q))
    if pairs <= 0:
        return math.nan
    return (ordered + 0.5 * ties) / pairs


def expected_auc_of_segments(p_sums: Any, pq_sums: Any, counts: Any) -> float:
    """:func:`expected_auc` from per-segment sums (segments in ascending score order, e.g.
    :meth:`IsotonicCalibration.segments`): each segment's event count, ``sum p`` and ``sum p (1-p)``.

    Sums add across shards, so a window's estimate is mergeable. Pairs in different segments are
    ordered by segment (exact); pairs inside one segment count as ties, half credit each way. That
    is exact where the calibration is flat (below the first knot, from the last knot on, or on
    equal scores); on a rising piece a pair's exact credit exceeds it by half the pair's
    difference in ``p``, at most half the piece's rise. Like :func:`expected_auc`, a ratio of
    expectations: E[correctly ordered (positive, negative) pairs] / E[positives * negatives].

    >>> s = np.array([0.1, 0.1, 0.9, 0.9, 0.9])
    >>> p = np.array([0.2, 0.2, 0.7, 0.7, 0.7])
    >>> by_score = expected_auc(s, p)
    >>> by_segment = expected_auc_of_segments([0.4, 2.1], [0.32, 0.63], [2, 3])
    >>> round(by_score, 12) == round(by_segment, 12)
    True
    """
    p_by = np.asarray(p_sums, dtype=np.float64)
    pq_by = np.asarray(pq_sums, dtype=np.float64)
    q_by = np.asarray(counts, dtype=np.float64) - p_by
    q_below = np.cumsum(q_by) - q_by
    ordered = float(np.sum(p_by * q_below))
    self_pairs = float(pq_by.sum())
    ties = float(np.sum(p_by * q_by)) - self_pairs
    pairs = float(p_by.sum() * q_by.sum()) - self_pairs
    if pairs <= 0:
        return math.nan
    return (ordered + 0.5 * ties) / pairs
