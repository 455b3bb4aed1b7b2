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

``c(s)`` stays right under covariate shift only if the score is sufficient (``P(y | s, x) =
P(y | s)``). Where the model's error also depends on a feature and the inputs move along it,
:class:`FeatureAwareCalibration` calibrates on the score and the features
(``PerformanceEstimator.fit(..., features=x, calibration="features" | "auto")``).

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
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from driftline.extras import require
from driftline.operators.multivariate import pack_array, unpack_array

FloatArray = npt.NDArray[np.float64]
Calibration = Literal["score", "features", "auto"]
"""How a binary (or confidence) score is calibrated: on the score alone (isotonic), on the score
and the event's features (:class:`FeatureAwareCalibration`), or whichever of the two has the lower
cross-validated Brier score on the reference (:func:`select_calibration`)."""


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


class FeatureAwareCalibration:
    """P(positive | score, features): shallow gradient-boosted trees, non-decreasing in the score.

    CBPE needs ``P(prediction correct | x)``. A map of the score alone equals it only if the score
    is sufficient; where the model's error also depends on a feature (it under-uses one), a shift
    along that feature moves ``P(y | score)`` although ``P(y | x)`` is kept, and every score-only
    calibration turns biased. This one is fitted on ``(score, features)`` by scikit-learn's
    ``HistGradientBoostingClassifier`` (seeded, no early stopping, a monotone-increasing
    constraint on the score so it stays a calibration of it); the fitted trees are kept as arrays
    and evaluated in numpy, row by row (the same bits whatever the batching, no scikit-learn
    needed to predict). Missing or non-finite feature values (NaN) go where the trees sent the
    reference's missing values.

    >>> rng = np.random.default_rng(3)
    >>> def events(shift, n):
    ...     x = rng.normal(size=(n, 2)) + [0.0, shift]
    ...     y = rng.random(n) < 1 / (1 + np.exp(-(2 * x[:, 0] + x[:, 1])))  # the concept: fixed
    ...     return 1 / (1 + np.exp(-2 * x[:, 0])), x, y                      # the model ignores x1
    >>> scores, x, y = events(0.0, 20_000)
    >>> by_features = FeatureAwareCalibration.fit(scores, x, y)
    >>> by_score = IsotonicCalibration.fit(scores, y)
    >>> scores, x, y = events(1.0, 20_000)                                   # x1 moves
    >>> bias = lambda p: round(float(np.mean(p - y)), 2)                     # mean P(y) - y
    >>> abs(bias(by_features.predict(scores, x))) <= 0.01, bias(by_score.predict(scores))
    (True, -0.13)
    """

    def __init__(self, baseline: float, feature: npt.NDArray[np.int64], threshold: FloatArray,
                 missing_left: npt.NDArray[np.bool_], left: npt.NDArray[np.int64],
                 right: npt.NDArray[np.int64], value: FloatArray, depth: int, columns: int) -> None:
        self.baseline = baseline
        """Log-odds every tree adds to."""
        self.feature = feature
        """(trees, nodes): the column a node splits on (0: the score, ``j + 1``: feature ``j``);
        -1 at a leaf (and on padding)."""
        self.threshold = threshold
        self.missing_left = missing_left
        self.left = left
        self.right = right
        self.value = value
        """(trees, nodes): a leaf's log-odds contribution."""
        self.depth = depth
        self.columns = columns
        """The score and the feature columns the trees were fitted on."""

    @classmethod
    def fit(cls, scores: Any, features: Any, labels: Any, *, seed: int = 0, max_iter: int = 50,
            max_depth: int = 2, learning_rate: float = 0.2,
            min_leaf_share: float = 0.05) -> FeatureAwareCalibration:
        """Fit on the reference: the model's scores, the events' features ``(n, d)`` and the labels
        (positive 1/True). Small by default (50 trees of depth 2, leaves of at least 5 % of the
        rows): a calibration should correct the score where a feature says it is off by a few
        points, not learn the concept again; the cost per event grows with trees x depth."""
        x = _design(scores, features)
        y = np.asarray(labels).astype(bool)
        if y.shape != (x.shape[0],) or x.shape[0] < 2 or np.all(y) or not np.any(y):
            raise ValueError("a feature-aware calibration needs one label per row and both classes")
        require("multivariate", "FeatureAwareCalibration.fit")
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits  # installed with scikit-learn

        model = HistGradientBoostingClassifier(
            max_iter=max_iter, max_depth=max_depth, learning_rate=learning_rate,
            min_samples_leaf=max(20, int(x.shape[0] * min_leaf_share)), l2_regularization=1.0,
            monotonic_cst=[1] + [0] * (x.shape[1] - 1), early_stopping=False, random_state=seed)
        # One thread: a few thousand rows, where OpenMP's threads cost more than they save.
        with threadpool_limits(limits=1):
            model.fit(x, y)
        trees = [predictors[0].nodes for predictors in model._predictors]
        width = max(t.size for t in trees)

        def padded(field: str, fill: float, dtype: Any) -> Any:
            out = np.full((len(trees), width), fill, dtype=dtype)
            for i, nodes in enumerate(trees):
                out[i, :nodes.size] = nodes[field]
            return out

        feature = padded("feature_idx", -1, np.int64)
        feature[padded("is_leaf", 1, np.bool_)] = -1
        return cls(float(np.asarray(model._baseline_prediction).ravel()[0]), feature,
                   padded("num_threshold", 0.0, np.float64), padded("missing_go_to_left", 0, np.bool_),
                   padded("left", 0, np.int64), padded("right", 0, np.int64),
                   padded("value", 0.0, np.float64), int(max(int(t["depth"].max()) for t in trees)),
                   x.shape[1])

    def predict(self, scores: Any, features: Any) -> FloatArray:
        """Calibrated probabilities of the positive class."""
        x = _design(scores, features)
        if x.shape[1] != self.columns:
            raise ValueError(f"expected {self.columns - 1} feature columns, got {x.shape[1] - 1}")
        out = np.empty(x.shape[0])
        for start in range(0, x.shape[0], _CHUNK):  # (rows, trees) index arrays stay small
            out[start:start + _CHUNK] = self._log_odds(x[start:start + _CHUNK])
        return np.asarray(1.0 / (1.0 + np.exp(-out)), dtype=np.float64)

    def _log_odds(self, x: FloatArray) -> FloatArray:
        # (trees, rows) of flat node indices: one take per array and level, each tree's row contiguous
        trees, width = self.feature.shape
        rows, columns = x.shape
        flat_x = np.ascontiguousarray(x).ravel()
        node = np.repeat(np.arange(trees, dtype=np.int64) * width, rows).reshape(trees, rows)
        row_start = np.arange(rows, dtype=np.int64) * columns
        for _ in range(self.depth):
            column = self.feature.take(node)
            value = flat_x.take(row_start + np.maximum(column, 0))
            go_left = np.where(np.isnan(value), self.missing_left.take(node),
                               value <= self.threshold.take(node))
            child = np.where(go_left, self.left.take(node), self.right.take(node))
            node = np.where(column < 0, node, child + (node - node % width))
        leaves = self.value.take(node)
        raw = np.full(rows, self.baseline)
        for leaf in leaves:  # tree by tree, in order: a fixed sum per row
            raw += leaf
        return raw

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (the trees' arrays packed as base64).

        >>> rng = np.random.default_rng(1)
        >>> x = rng.normal(size=(600, 2))
        >>> cal = FeatureAwareCalibration.fit(x[:, 0], x, rng.random(600) < 0.5 + 0.3 * np.tanh(x[:, 1]))
        >>> again = FeatureAwareCalibration.from_state(cal.to_state())
        >>> bool(np.array_equal(again.predict(x[:, 0], x), cal.predict(x[:, 0], x)))
        True
        """
        return {"baseline": self.baseline, "depth": self.depth, "columns": self.columns,
                "feature": pack_array(self.feature, "<i4"), "threshold": pack_array(self.threshold),
                "missing_left": pack_array(self.missing_left, "<u1"), "left": pack_array(self.left, "<i4"),
                "right": pack_array(self.right, "<i4"), "value": pack_array(self.value)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> FeatureAwareCalibration:
        def ints(key: str) -> npt.NDArray[np.int64]:
            return unpack_array(state[key]).astype(np.int64)

        return cls(float(state["baseline"]), ints("feature"), unpack_array(state["threshold"]),
                   unpack_array(state["missing_left"]).astype(bool), ints("left"), ints("right"),
                   unpack_array(state["value"]), int(state["depth"]), int(state["columns"]))


_CHUNK = 4_096


def _design(scores: Any, features: Any) -> FloatArray:
    """``[score, features...]`` per row; non-finite feature values NaN (the trees' missing value)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1, 1)
    f = np.asarray(features, dtype=np.float64)
    f = f.reshape(s.shape[0], -1) if f.size or s.shape[0] == 0 else np.empty((s.shape[0], 0))
    x = np.hstack([s, f])
    x[:, 1:][~np.isfinite(x[:, 1:])] = np.nan
    return x


def brier_scores(scores: Any, labels: Any, features: Any, *, folds: int = 5,
                 seed: int = 0) -> dict[str, float]:
    """Cross-validated Brier score (mean squared error of the probability; lower is better) of
    the score-only and the feature-aware calibration on a labelled reference: each of ``folds``
    contiguous blocks of rows predicted by calibrations fitted on the others. A proper score that,
    unlike the log-loss, stays finite where an isotonic map says 0 or 1. Blocks, not shuffled
    rows: a reference is mostly in time order, and rows of one period share more than their
    features (shuffled folds would reward a calibration that learns the period).

    >>> rng = np.random.default_rng(2)
    >>> x = rng.normal(size=(3_000, 2))
    >>> y = rng.random(3_000) < 1 / (1 + np.exp(-(x[:, 0] + x[:, 1])))
    >>> b = brier_scores(1 / (1 + np.exp(-x[:, 0])), y, x)
    >>> b["features"] < b["score"]
    True
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    x = np.asarray(features, dtype=np.float64).reshape(s.size, -1)
    fold = np.arange(s.size) * folds // s.size
    by_score, by_features = np.empty(s.size), np.empty(s.size)
    for k in range(folds):
        test, train = fold == k, fold != k
        by_score[test] = IsotonicCalibration.fit(s[train], y[train]).predict(s[test])
        by_features[test] = FeatureAwareCalibration.fit(s[train], x[train], y[train], seed=seed).predict(
            s[test], x[test])
    return {"score": float(np.mean((by_score - y) ** 2)), "features": float(np.mean((by_features - y) ** 2))}


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

    def __init__(self, calibrations: list[IsotonicCalibration], threshold: float, z: float,
                 by_features: FeatureAwareCalibration | None = None,
                 selection: Mapping[str, Any] | None = None) -> None:
        self.calibrations = calibrations
        """One per class column (a single one for a binary classifier). With :attr:`by_features`
        still fitted: its segments order the ROC-AUC estimate's pairs."""
        self.threshold = threshold
        self.z = z
        self.by_features = by_features
        """The feature-aware calibration (binary or confidence scores), which then gives the
        probabilities: :meth:`calibrated` and :meth:`estimate` need the events' features."""
        self.selection = dict(selection) if selection is not None else None
        """How ``calibration="auto"`` chose: the cross-validated Brier scores (see
        :func:`brier_scores`) and the choice."""

    @property
    def calibration(self) -> Literal["score", "features"]:
        """What the probabilities are calibrated on."""
        return "features" if self.by_features is not None else "score"

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (the calibrations' knots and values).

        >>> est = PerformanceEstimator.fit([0.1, 0.4, 0.6, 0.9], [0, 0, 1, 1])
        >>> PerformanceEstimator.from_state(est.to_state()).estimate([0.2, 0.8]) == est.estimate([0.2, 0.8])
        True
        """
        state: dict[str, Any] = {"threshold": self.threshold, "z": self.z,
                                 "calibrations": [{"knots": c.knots.tolist(), "values": c.values.tolist()}
                                                  for c in self.calibrations]}
        # Only when used: a score-only state (and its profile's id) stays byte for byte as before.
        if self.by_features is not None:
            state["by_features"] = self.by_features.to_state()
        if self.selection is not None:
            state["selection"] = self.selection
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PerformanceEstimator:
        calibrations = [IsotonicCalibration(np.asarray(c["knots"], dtype=np.float64),
                                            np.asarray(c["values"], dtype=np.float64))
                        for c in state["calibrations"]]
        by_features = state.get("by_features")
        return cls(calibrations, float(state["threshold"]), float(state["z"]),
                   FeatureAwareCalibration.from_state(by_features) if by_features else None,
                   state.get("selection"))

    @property
    def classes(self) -> int:
        return max(2, len(self.calibrations))

    @classmethod
    def fit(cls, scores: Any, labels: Any, *, threshold: float = 0.5, z: float = 1.96,
            features: Any = None, calibration: Calibration = "score", seed: int = 0) -> PerformanceEstimator:
        """Calibrate on the reference: the model's scores and the true labels.

        ``calibration`` "features" (binary scores only) calibrates on the score and ``features``
        (``(n, d)``, the events' numeric features, NaN where missing) with a
        :class:`FeatureAwareCalibration`; "auto" takes it only if its cross-validated Brier score
        on the reference is lower than the score-only map's (recorded in :attr:`selection`).

        >>> rng = np.random.default_rng(6)
        >>> x = rng.normal(size=(4_000, 2))
        >>> y = rng.random(4_000) < 1 / (1 + np.exp(-(2 * x[:, 0] + x[:, 1])))
        >>> est = PerformanceEstimator.fit(1 / (1 + np.exp(-2 * x[:, 0])), y, features=x, calibration="auto")
        >>> est.calibration, est.selection["calibration"]
        ('features', 'features')
        """
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(labels)
        if s.ndim == 1:
            isotonic = [IsotonicCalibration.fit(s, y.astype(np.float64))]
            if calibration == "score":
                return cls(isotonic, threshold, z)
            if features is None:
                raise ValueError(f"calibration={calibration!r} needs the reference's features")
            selection: dict[str, Any] | None = None
            if calibration == "auto":
                selection = {"brier": brier_scores(s, y, features, seed=seed)}
                selection["calibration"] = min(("score", "features"), key=selection["brier"].__getitem__)
                if selection["calibration"] == "score":
                    return cls(isotonic, threshold, z, None, selection)
            return cls(isotonic, threshold, z, FeatureAwareCalibration.fit(s, features, y, seed=seed),
                       selection)
        if s.ndim != 2 or s.shape[1] < 2 or s.shape[0] != y.size:
            raise ValueError("multiclass scores must be (n, K >= 2) with one label per row")
        if calibration == "features":
            raise ValueError("a feature-aware calibration is for binary or confidence scores (1-D)")
        y = y.astype(np.int64)
        return cls([IsotonicCalibration.fit(s[:, k], (y == k).astype(np.float64))
                    for k in range(s.shape[1])], threshold, z)

    def calibrated(self, scores: Any, features: Any = None) -> FloatArray:
        """Calibrated class probabilities: ``(n,)`` of the positive class for a binary model,
        ``(n, K)`` rows summing to 1 for a multiclass one. ``features`` (``(n, d)``): what a
        feature-aware calibration needs (ignored otherwise)."""
        s = np.asarray(scores, dtype=np.float64)
        if self.by_features is not None:
            if features is None:
                raise ValueError("this estimator is calibrated on the features too: pass them")
            return self.by_features.predict(s, features)
        if len(self.calibrations) == 1:
            return self.calibrations[0].predict(s)
        c = np.column_stack([cal.predict(s[:, k]) for k, cal in enumerate(self.calibrations)])
        totals = c.sum(axis=1, keepdims=True)
        # A row every calibration maps to 0 (scores below all reference blocks) is uninformative.
        return np.where(totals > 0, c / np.where(totals > 0, totals, 1.0), 1.0 / c.shape[1])

    def estimate(self, scores: Any, features: Any = None) -> PerformanceEstimate:
        """Estimated performance of a window of scores (no labels; ``features`` for a
        feature-aware calibration); rows with a NaN score are skipped."""
        s = np.asarray(scores, dtype=np.float64)
        multiclass = len(self.calibrations) > 1
        if multiclass:
            s = s.reshape(-1, len(self.calibrations))
            s = s[~np.isnan(s).any(axis=1)]
        else:
            scored = ~np.isnan(s)
            s = s[scored]
            if features is not None:
                features = np.asarray(features, dtype=np.float64).reshape(scored.size, -1)[scored]
        n = int(s.shape[0])
        if n == 0:
            return PerformanceEstimate(0, *(math.nan,) * 6)
        c = self.calibrated(s, features)
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
