"""Outlier rate: each event's distance from the reference, and the share of outliers per window.

Method. Each numeric feature is mapped to its reference normal score (see
:class:`~driftline.operators.multivariate.NormalScores`). Inside the reference's range scores are
rank-based, so the scatter of the reference's scores is a robust (van der Waerden) estimate of the
features' dependence that no wild reference value can distort; beyond the range a score keeps
growing linearly, so a wild value in one feature is an outlier too. An event's distance is the
Mahalanobis distance ``sqrt((u - m)' S^-1 (u - m))`` of its normal scores ``u`` under the
reference scores' mean ``m`` and scatter ``S`` (ridge ``1e-6`` for collinear features). The
threshold is the reference's own ``quantile`` (default 99.9 %) of its distances, so 0.1 % of
reference-like events are outliers by construction. Per window, the share of outliers is tested
against that rate with an exact binomial test (one-sided: more outliers than expected).

``score(event)`` serves one request in a model server (a mapping of feature to value, tens of us;
``bench/bench_multivariate.py`` measures it); ``score_many(table)`` scores a batch.

>>> import numpy as np
>>> rng = np.random.default_rng(2)
>>> a = rng.normal(size=50_000)
>>> reference = {"a": a, "b": 0.9 * a + 0.3 * rng.normal(size=50_000)}
>>> scorer = OutlierScorer.from_reference(reference)
>>> scorer.is_outlier({"a": 1.0, "b": 0.9}), scorer.is_outlier({"a": 1.5, "b": -1.5})
(False, True)
>>> a = rng.normal(size=5_000)
>>> scorer.window({"a": a, "b": 0.9 * a + 0.3 * rng.normal(size=5_000)}).significant
False
>>> result = scorer.window({"a": a, "b": -a})          # the relation breaks
>>> result.share > 0.5, result.significant
(True, True)
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from driftline.operators.multivariate import (
    FloatArray,
    NormalScores,
    numeric_features,
    pack_array,
    rowwise_dot,
    rowwise_matmul,
    unpack_array,
)

RIDGE = 1e-6
"""Added to the scatter's diagonal, so collinear features still give a finite distance."""


@dataclass(frozen=True)
class OutlierWindow:
    """A window's outlier count against the reference's rate."""

    n: int
    """Events in the window."""
    outliers: int
    """Events whose distance exceeds the threshold."""
    share: float
    """``outliers / n``."""
    expected: float
    """The share expected without drift (``1 - quantile``)."""
    p_value: float
    """Exact one-sided binomial p-value of at least ``outliers`` outliers."""
    significant: bool
    """``p_value < alpha``."""


class OutlierScorer:
    """Robust Mahalanobis distance of an event from the reference; build with :meth:`from_reference`."""

    def __init__(self, scores: NormalScores, centre: FloatArray, precision: FloatArray,
                 threshold: float, quantile: float) -> None:
        self._scores = scores
        self._centre = centre
        self._precision = precision
        self._abs_precision = np.abs(precision)  # the products' error bound (outliers_of_scores)
        self._refs = [s.tolist() for s in scores.sorted_reference]
        self._n1 = np.array([2.0 * (len(r) + 1) for r in self._refs])
        self.threshold = threshold
        """Distance above which an event is an outlier (the reference's ``quantile``)."""
        self.quantile = quantile

    @classmethod
    def from_reference(cls, table: Any, *, features: Sequence[str] | None = None,
                       quantile: float = 0.999, scores: NormalScores | None = None) -> OutlierScorer:
        """Fit on a reference table (``features``: its numeric columns unless given; ``scores``:
        a normal-score transform already fitted on it, shared with other operators)."""
        if not 0.0 < quantile < 1.0:
            raise ValueError("quantile must be in (0, 1)")
        names = list(features) if features is not None else numeric_features(table)
        if not names:
            raise ValueError("the outlier scorer needs at least one numeric feature")
        if scores is None:
            scores = NormalScores.fit(table, names)
        names = scores.features
        z = scores.transform(table)
        # Ties (discrete features) move the scores' mean off 0: centre on the reference's.
        centre = z.mean(axis=0)
        scatter = np.atleast_2d(np.cov(z, rowvar=False)) + RIDGE * np.eye(len(names))
        precision = np.asarray(np.linalg.inv(scatter), dtype=np.float64)
        distances = _mahalanobis(z - centre, precision)
        threshold = float(np.quantile(distances, quantile, method="higher"))
        return cls(scores, centre, precision, threshold, quantile)

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state without the normal scores (pass them to :meth:`from_state`).

        >>> import orjson
        >>> rng = np.random.default_rng(6)
        >>> ref = {"a": rng.normal(size=2_000), "b": rng.normal(size=2_000)}
        >>> scorer = OutlierScorer.from_reference(ref)
        >>> copy = OutlierScorer.from_state(orjson.loads(orjson.dumps(scorer.to_state())), scorer.scores)
        >>> bool(np.array_equal(copy.score_many(ref), scorer.score_many(ref)))
        True
        """
        return {"centre": pack_array(self._centre), "precision": pack_array(self._precision),
                "threshold": self.threshold, "quantile": self.quantile}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], scores: NormalScores) -> OutlierScorer:
        return cls(scores, unpack_array(state["centre"]), unpack_array(state["precision"]),
                   float(state["threshold"]), float(state["quantile"]))

    @property
    def scores(self) -> NormalScores:
        """The normal-score transform of the reference."""
        return self._scores

    def distances_of_scores(self, z: FloatArray) -> FloatArray:
        """Distances of normal scores already computed (``scores.transform``)."""
        return _mahalanobis(z - self._centre, self._precision)

    def outliers_of_scores(self, z: FloatArray) -> npt.NDArray[np.bool_]:
        """Whether each row's distance exceeds :attr:`threshold`: exactly
        ``distances_of_scores(z) > threshold``, at a fraction of its cost.

        The squared distances come from matrix products (BLAS: any summation order), whose
        error is at most ``gamma_d * |u - m|' |S^-1| |u - m|`` (``gamma_d ~ d * 2^-53``) per row,
        as is that of the column-by-column distances; a row whose squared distance is further
        than twice that (with room for rounding the threshold and the square root) from the
        threshold's square is decided by the products, and the few closer ones by the
        column-by-column distance itself, so every flag is the exact one on any machine.

        >>> rng = np.random.default_rng(4)
        >>> a = rng.normal(size=5_000)
        >>> scorer = OutlierScorer.from_reference({"a": a, "b": a + rng.normal(size=5_000)})
        >>> z = scorer.scores.transform({"a": rng.normal(size=2_000), "b": rng.normal(size=2_000)})
        >>> exact = scorer.distances_of_scores(z) > scorer.threshold
        >>> bool(np.array_equal(scorer.outliers_of_scores(z), exact)), int(exact.sum()) > 0
        (True, True)
        """
        centred = np.ascontiguousarray(z - self._centre)
        magnitude = np.abs(centred)
        squared = np.empty(centred.shape[0])
        bound = np.empty(centred.shape[0])
        # Blocks small enough that BLAS runs them on the calling thread: OpenBLAS threads a
        # product of m x n x k >= 2^18 and its idle threads then spin, CPU the caller pays.
        rows = max(1, 200_000 // max(1, centred.shape[1] ** 2))
        for start in range(0, centred.shape[0], rows):
            block, size = centred[start : start + rows], magnitude[start : start + rows]
            squared[start : start + rows] = np.einsum("ij,ij->i", block @ self._precision, block)
            bound[start : start + rows] = np.einsum("ij,ij->i", size @ self._abs_precision, size)
        limit = self.threshold * self.threshold
        eps = float(np.finfo(np.float64).eps)
        margin = 8.0 * (centred.shape[1] + 2) * eps * bound + 8.0 * eps * limit
        flags = squared > limit
        close = np.flatnonzero(np.abs(squared - limit) <= margin)
        if close.size:
            flags[close] = _mahalanobis(centred[close], self._precision) > self.threshold
        return flags

    @property
    def features(self) -> list[str]:
        return self._scores.features

    def score(self, event: Mapping[str, Any]) -> float:
        """One event's distance (a missing or None feature scores as the reference median), the
        same as :meth:`score_many`'s for that row."""
        # Ranks by bisect on plain lists (cheaper than numpy per scalar), then one vectorised
        # ndtri and one matrix-vector product for the whole event.
        ranks = []
        beyond: list[tuple[int, float]] = []  # outside the reference's range: extrapolated scores
        for j, (name, ref, tails) in enumerate(zip(self._scores.features, self._refs, self._scores.tails,
                                                   strict=True)):
            x = event.get(name)
            if x is None or x != x:  # missing: the median's rank (score 0 before centring)
                ranks.append(len(ref))
                continue
            ranks.append(bisect_left(ref, x) + bisect_right(ref, x))
            low, high, u_low, u_high, slope_low, slope_high = tails
            if x > high:
                beyond.append((j, u_high + (x - high) * slope_high))
            elif x < low:
                beyond.append((j, u_low - (low - x) * slope_low))
        u = ndtri((np.array(ranks, dtype=np.float64) + 1.0) / self._n1)
        for j, value in beyond:
            u[j] = value
        u -= self._centre
        return math.sqrt(max(float(u @ self._precision @ u), 0.0))

    def is_outlier(self, event: Mapping[str, Any]) -> bool:
        """Whether one event's distance exceeds :attr:`threshold`."""
        return self.score(event) > self.threshold

    def score_many(self, table: Any) -> FloatArray:
        """Every event's distance, for a table."""
        return _mahalanobis(self._scores.transform(table) - self._centre, self._precision)

    def window(self, table: Any, *, alpha: float = 0.001) -> OutlierWindow:
        """A window's outlier share with an exact binomial test against ``1 - quantile``."""
        flags = self.outliers_of_scores(self._scores.transform(table))  # the distances' flags
        return outlier_window(int(flags.size), int(np.count_nonzero(flags)), 1.0 - self.quantile,
                              alpha=alpha)


def outlier_window(n: int, outliers: int, expected: float, *, alpha: float = 0.001,
                   reference_size: int | None = None) -> OutlierWindow:
    """The binomial test of ``outliers`` among ``n`` events against the rate ``expected`` (e.g.
    from counts merged over shards). ``reference_size``: the rate is known only as well as from
    that many events (a seasonal profile's, whose threshold was met by values standardised with a
    fitted curve: :func:`driftline.operators.seasonal.outlier_reference_size`); the rate then has a gamma
    spread (shape ``expected * reference_size``, the outliers such a reference holds) and the
    count is negative binomial, of the same mean and more spread.

    >>> w = outlier_window(10_000, 30, 0.001)
    >>> w.share, w.significant
    (0.003, True)
    >>> outlier_window(10_000, 30, 0.001, reference_size=2_000).significant
    False
    """
    if not n or not outliers:
        p = 1.0
    else:
        # scipy.stats costs ~1 CPU-s to import: paid by the first window with outliers, not at start-up
        from scipy.stats import binomtest, nbinom

        if reference_size is None:
            p = float(binomtest(outliers, n, expected, alternative="greater").pvalue)
        else:
            shape = max(expected * reference_size, 1e-9)
            p = float(nbinom.sf(outliers - 1, shape, reference_size / (reference_size + n)))
    return OutlierWindow(n=n, outliers=outliers, share=outliers / n if n else math.nan,
                         expected=expected, p_value=p, significant=p < alpha)


def _mahalanobis(z: FloatArray, precision: FloatArray) -> FloatArray:
    # Column by column: each row's distance is the same however rows are batched (replay).
    return np.sqrt(np.maximum(rowwise_dot(z, rowwise_matmul(z, precision)), 0.0))
