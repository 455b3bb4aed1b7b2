"""Drift statistics of a window against a reference profile, and the per-model verdict.

The array functions match scipy on the same inputs (the tests check it); the sketch-based KS and
Wasserstein work on bucket counts so stage 2 never needs raw values.

A feature drifts when its test (KS for numeric, chi-square for categorical) stays significant after
Benjamini-Hochberg across the model's features at ``fdr_q`` *and* the shift is practically large
(PSI or JS distance at or above its threshold): in windows of 10^5 events a tiny, harmless shift is
significant, so significance alone would flag almost every window.

>>> import numpy as np
>>> round(psi(np.array([0.5, 0.5]), np.array([0.9, 0.1])), 4)
0.8789
>>> round(js_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])), 4)
1.0
>>> benjamini_hochberg(np.array([0.01, 0.04, 0.03])).round(3).tolist()
[0.03, 0.04, 0.04]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import stats as sps
from scipy.special import rel_entr

from driftline.config import DriftSettings
from driftline.operators.profile import FeatureProfile
from driftline.operators.sketch import FloatArray, IntArray, QuantileSketch
from driftline.operators.window_stats import FeatureStats

PSI_EPS = 1e-4
"""Floor of a bin's share in PSI, so an empty bin on one side contributes a finite term."""

CHI2_EPS = 1e-6
"""Floor of a bin's expected share in chi-square when the bin holds observations (see chi_square)."""


def psi(ref_props: npt.ArrayLike, cur_props: npt.ArrayLike, eps: float = PSI_EPS) -> float:
    """Population stability index ``sum((q - p) * ln(q / p))`` over shares floored at ``eps``.

    Inputs are normalised to sum 1 first (counts work too); NaN when either side is empty.
    """
    p = np.asarray(ref_props, dtype=np.float64)
    q = np.asarray(cur_props, dtype=np.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    p = np.maximum(p / p.sum(), eps)
    q = np.maximum(q / q.sum(), eps)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """Jensen-Shannon distance, base 2 (0..1); same arithmetic as scipy's ``jensenshannon``."""
    a = np.asarray(p, dtype=np.float64)
    b = np.asarray(q, dtype=np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        return math.nan
    a = a / np.sum(a)
    b = b / np.sum(b)
    m = (a + b) / 2.0
    js = np.sum(rel_entr(a, m)) + np.sum(rel_entr(b, m))
    js /= np.log(2.0)
    return float(np.sqrt(js / 2.0))


def _aligned(ref: QuantileSketch, cur: QuantileSketch) -> tuple[FloatArray, IntArray, IntArray]:
    """Both sketches' counts on the union of their buckets: (representatives, ref counts, cur counts)."""
    if ref.relative_accuracy != cur.relative_accuracy:
        raise ValueError("sketches must share relative_accuracy to be compared bucket by bucket")
    o1, r1, c1 = ref.buckets()
    o2, r2, c2 = cur.buckets()
    ords, first = np.unique(np.concatenate((o1, o2)), return_index=True)
    reps = np.concatenate((r1, r2))[first]
    a = np.zeros(ords.size, dtype=np.int64)
    b = np.zeros(ords.size, dtype=np.int64)
    a[np.searchsorted(ords, o1)] = c1
    b[np.searchsorted(ords, o2)] = c2
    return reps, a, b


def ks_from_sketches(ref: QuantileSketch, cur: QuantileSketch) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value from two sketches.

    The statistic is ``sup |F1 - F2|`` over bucket boundaries, where both CDFs are exact: it never
    exceeds the exact statistic, and equals it when no bucket holds two distinct values. The p-value
    is ``kstwo.sf(D, round(n*m/(n+m)))``, scipy's ``ks_2samp(..., method='asymp')``.
    """
    n, m = ref.count, cur.count
    if not n or not m:
        return math.nan, math.nan
    _, a, b = _aligned(ref, cur)
    d = float(np.max(np.abs(np.cumsum(a) / n - np.cumsum(b) / m)))
    big, small = sorted([float(n), float(m)], reverse=True)
    en = big * small / (big + small)
    return d, float(np.clip(sps.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def wasserstein_from_sketches(ref: QuantileSketch, cur: QuantileSketch) -> float:
    """1-Wasserstein distance between the sketches' bucket-representative distributions.

    Each value moves by at most ``a * |value|`` to its representative, so the result is within
    ``a * (mean|x| + mean|y|)`` of the exact distance (exact when values are representatives).
    """
    n, m = ref.count, cur.count
    if not n or not m:
        return math.nan
    reps, a, b = _aligned(ref, cur)
    gap = np.abs(np.cumsum(a)[:-1] / n - np.cumsum(b)[:-1] / m)
    return float(np.sum(gap * np.diff(reps)))


def chi_square(
    observed_counts: npt.ArrayLike, expected_props: npt.ArrayLike, eps: float = CHI2_EPS
) -> tuple[float, float]:
    """Pearson chi-square goodness of fit of window counts to reference shares.

    Matches ``scipy.stats.chisquare(observed, expected_props * observed.sum())``. Zero-expected
    bins: a bin empty on both sides carries no information and is dropped (one degree of freedom
    less); one with observations gets the expected share ``eps`` (then shares are renormalised),
    so a category the reference never saw yields a large, finite statistic rather than infinity.
    NaN p-value with fewer than two bins.
    """
    obs = np.asarray(observed_counts, dtype=np.float64)
    props = np.asarray(expected_props, dtype=np.float64)
    keep = (obs > 0) | (props > 0)
    obs, props = obs[keep], props[keep]
    total = obs.sum()
    if total <= 0 or props.sum() <= 0:
        return math.nan, math.nan
    props = props / props.sum()
    if np.any(props == 0):
        props = np.maximum(props, eps)
        props = props / props.sum()
    expected = props * total
    stat = float(np.sum((obs - expected) ** 2 / expected))
    if obs.size < 2:
        return stat, math.nan
    return stat, float(sps.chi2.sf(stat, obs.size - 1))


def benjamini_hochberg(pvalues: npt.ArrayLike) -> FloatArray:
    """Benjamini-Hochberg adjusted p-values, as ``scipy.stats.false_discovery_control(method='bh')``.

    NaN entries are not hypotheses: they stay NaN and do not count towards the family size.
    """
    ps = np.asarray(pvalues, dtype=np.float64)
    out = np.full(ps.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(ps))
    m = tested.size
    if m == 0:
        return out
    order = np.argsort(ps[tested])
    adj = ps[tested][order] * (m / np.arange(1, m + 1, dtype=np.float64))
    adj = np.minimum.accumulate(adj[::-1])[::-1]
    out[tested[order]] = np.clip(adj, 0.0, 1.0)
    return out


@dataclass
class FeatureScore:
    """Drift statistics of one feature in one window (``None`` where a test does not apply).

    ``count`` is the number of values compared: finite numbers for a numeric profile, category
    values for a categorical one. Histograms are shares per reference bin.
    """

    kind: str
    count: int
    psi: float | None = None
    ks_stat: float | None = None
    ks_pvalue: float | None = None
    js_distance: float | None = None
    wasserstein: float | None = None
    chi2_stat: float | None = None
    chi2_pvalue: float | None = None
    out_of_range: int = 0
    histogram: list[float] = field(default_factory=list)
    reference_histogram: list[float] = field(default_factory=list)
    bin_edges: list[float] = field(default_factory=list)
    bin_labels: list[str] = field(default_factory=list)

    @property
    def pvalue(self) -> float | None:
        """The p-value of the feature's significance test (KS numeric, chi-square categorical)."""
        return self.ks_pvalue if self.kind == "numeric" else self.chi2_pvalue


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def score_feature(profile: FeatureProfile, stats: FeatureStats, cfg: DriftSettings) -> FeatureScore:
    """Score one feature's window statistics against its reference profile.

    Scores do not depend on ``cfg`` (thresholds apply in :func:`verdicts`); it is taken so callers
    need not change when a setting starts shaping scores.

    >>> from driftline.operators.profile import build_profile
    >>> ref = build_profile("m", "1", {"c": ["a", "b"] * 50}, label_column=None,
    ...                     prediction_column=None, bins=10, top_k=5, created_at_ms=0)
    >>> win = FeatureStats()
    >>> win.add(["a"] * 90 + ["b"] * 10)
    >>> s = score_feature(ref.features["c"], win, DriftSettings())
    >>> s.count, s.histogram, round(s.chi2_stat, 1), round(s.psi, 3)
    (100, [0.9, 0.1, 0.0], 64.0, 0.879)
    """
    ref_counts = np.asarray(profile.ref_counts, dtype=np.float64)
    ref_hist = ref_counts / ref_counts.sum()
    score = FeatureScore(
        kind=profile.kind,
        count=0,
        reference_histogram=ref_hist.tolist(),
        bin_edges=list(profile.edges),
        bin_labels=profile.bin_labels,
    )
    if profile.kind == "numeric":
        counts = stats.sketch.histogram(np.asarray(profile.edges, dtype=np.float64))
        score.count = stats.n
    else:
        kept = [stats.categories.get(c, 0) for c in profile.categories]
        counts = np.array([*kept, stats.n_categorical - sum(kept)], dtype=np.int64)
        score.count = stats.n_categorical
    if not score.count:
        score.histogram = [0.0] * ref_hist.size
        return score
    cur_hist = counts / score.count
    score.histogram = cur_hist.tolist()
    score.psi = _finite(psi(ref_hist, cur_hist))
    score.js_distance = _finite(js_distance(ref_hist, cur_hist))
    if profile.kind == "categorical":
        stat, p = chi_square(counts, ref_hist)
        score.chi2_stat, score.chi2_pvalue = _finite(stat), _finite(p)
        return score
    ref = profile.reference_sketch()
    stat, p = ks_from_sketches(ref, stats.sketch)
    score.ks_stat, score.ks_pvalue = _finite(stat), _finite(p)
    score.wasserstein = _finite(wasserstein_from_sketches(ref, stats.sketch))
    # Out of range = in a bucket below the reference's lowest or above its highest bucket: a value
    # in the same bucket as the reference min/max (within 2a) is not out of range.
    ref_ords = ref.buckets()[0]
    ords, _, in_bucket = stats.sketch.buckets()
    score.out_of_range = int(in_bucket[(ords < ref_ords[0]) | (ords > ref_ords[-1])].sum())
    return score


@dataclass
class FeatureVerdict:
    drifted: bool
    drifted_by: list[str]
    p_adj: float | None


@dataclass
class ModelVerdict:
    features: dict[str, FeatureVerdict]
    n_features: int
    n_drifted: int
    drifted: bool
    drifted_features: list[str]


def verdicts(scores: Mapping[str, FeatureScore], cfg: DriftSettings) -> ModelVerdict:
    """Benjamini-Hochberg across the features' p-values, then significance AND magnitude per feature.

    Features with ``count < cfg.min_count`` or no p-value are not hypotheses: they keep
    ``p_adj=None`` and never drift. ``drifted_by`` names the test and the magnitude measures that
    crossed their thresholds, e.g. ``["ks", "psi"]``.
    """
    names = [n for n, s in scores.items() if s.count >= cfg.min_count and s.pvalue is not None]
    adjusted = benjamini_hochberg(np.array([scores[n].pvalue for n in names], dtype=np.float64))
    p_adj = dict(zip(names, adjusted.tolist(), strict=True))
    features: dict[str, FeatureVerdict] = {}
    for name, s in scores.items():
        p = p_adj.get(name)
        magnitudes = (("psi", s.psi, cfg.psi_threshold), ("js", s.js_distance, cfg.js_threshold))
        large = [measure for measure, value, limit in magnitudes if value is not None and value >= limit]
        drifted = p is not None and p < cfg.fdr_q and bool(large)
        test = "ks" if s.kind == "numeric" else "chi2"
        features[name] = FeatureVerdict(drifted, [test, *large] if drifted else [], p)
    drifted_features = sorted(n for n, v in features.items() if v.drifted)
    return ModelVerdict(
        features=features,
        n_features=len(scores),
        n_drifted=len(drifted_features),
        drifted=len(drifted_features) >= cfg.min_drifted_features,
        drifted_features=drifted_features,
    )
