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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy._core.multiarray import correlate  # np.convolve's kernel, without its checks
from scipy import special
from scipy.special import rel_entr

from driftline.config import DriftSettings
from driftline.operators import ks_native
from driftline.operators.profile import FeatureProfile
from driftline.operators.sketch import FloatArray, IntArray, QuantileSketch
from driftline.operators.window_stats import FeatureStats

# Pomeranz's scaling, scipy.stats._ksstats' constants (tests/test_op_drift.py checks they are its
# bits): importing that module imports all of scipy.stats, ~1 CPU-s of every process's start-up,
# while only _kstwo_sf's rare fallback needs it (kolmogn, imported there).
_E128 = 128
_EP128 = np.ldexp(np.longdouble(1), _E128)
_EM128 = np.ldexp(np.longdouble(1), -_E128)

PSI_EPS = 1e-4
"""Floor of a bin's share in PSI, so an empty bin on one side contributes a finite term."""

CHI2_EPS = 1e-6
"""Floor of a bin's expected share in chi-square when the bin holds observations (see chi_square)."""


def psi(ref_props: npt.ArrayLike, cur_props: npt.ArrayLike, eps: float = PSI_EPS) -> float:
    """Population stability index ``sum((q - p) * ln(q / p))`` over shares floored at ``eps``.

    Inputs are normalised to sum 1 first (counts work too); NaN when either side is empty.
    """
    return float(psi_rows(np.asarray(ref_props, dtype=np.float64)[None, :],
                          np.asarray(cur_props, dtype=np.float64)[None, :], eps)[0])


def psi_rows(ref: FloatArray, cur: FloatArray, eps: float = PSI_EPS) -> FloatArray:
    """:func:`psi` of each row pair of two equally shaped 2-d arrays, in one pass (numpy sums a
    row of a C-ordered array as it sums the row alone, so each equals :func:`psi` of its row).

    >>> psi_rows(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([[0.9, 0.1], [0.0, 0.0]])).round(4).tolist()
    [0.8789, nan]
    """
    ref_sums, cur_sums = ref.sum(axis=1), cur.sum(axis=1)
    empty = (ref_sums <= 0) | (cur_sums <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.maximum(ref / ref_sums[:, None], eps)
        q = np.maximum(cur / cur_sums[:, None], eps)
        out: FloatArray = np.sum((q - p) * np.log(q / p), axis=1)
    out[empty] = math.nan
    return out


def js_distance(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """Jensen-Shannon distance, base 2 (0..1); same arithmetic as scipy's ``jensenshannon``."""
    return float(js_rows(np.asarray(p, dtype=np.float64)[None, :],
                         np.asarray(q, dtype=np.float64)[None, :])[0])


def js_rows(p: FloatArray, q: FloatArray) -> FloatArray:
    """:func:`js_distance` of each row pair of two equally shaped 2-d arrays, in one pass.

    >>> js_rows(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([[0.0, 1.0], [0.5, 0.5]])).tolist()
    [1.0, 0.0]
    """
    p_sums, q_sums = p.sum(axis=1), q.sum(axis=1)
    empty = (p_sums <= 0) | (q_sums <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = p / p_sums[:, None]
        b = q / q_sums[:, None]
        m = (a + b) / 2.0
        js = np.sum(rel_entr(a, m), axis=1) + np.sum(rel_entr(b, m), axis=1)
        js /= np.log(2.0)
        out: FloatArray = np.sqrt(js / 2.0)
    out[empty] = math.nan
    return out


Buckets = tuple[IntArray, FloatArray, IntArray]


def _aligned(ref: QuantileSketch, cur: QuantileSketch) -> tuple[FloatArray, IntArray, IntArray]:
    """Both sketches' counts on the union of their buckets: (representatives, ref counts, cur counts)."""
    if ref.relative_accuracy != cur.relative_accuracy:
        raise ValueError("sketches must share relative_accuracy to be compared bucket by bucket")
    return _aligned_buckets(ref.buckets(), cur.buckets())


def _aligned_buckets(ref: Buckets, cur: Buckets) -> tuple[FloatArray, IntArray, IntArray]:
    o1, r1, c1 = ref
    o2, r2, c2 = cur
    ords, first = np.unique(np.concatenate((o1, o2)), return_index=True)
    reps = np.concatenate((r1, r2))[first]
    a = np.zeros(ords.size, dtype=np.int64)
    b = np.zeros(ords.size, dtype=np.int64)
    a[np.searchsorted(ords, o1)] = c1
    b[np.searchsorted(ords, o2)] = c2
    return reps, a, b


KS_EXACT_BELOW = 1000
"""Below this effective sample size the KS p-value is scipy's exact ``kstwo.sf`` (cheap there)."""

_SMIRNOV_NX2 = 2.2  # n*d^2 from which the two-sided tail is twice the one-sided one (scipy's switch)


@lru_cache(maxsize=8)
def _log_binomials(n: int) -> FloatArray:
    j = np.arange(n + 1, dtype=np.float64)
    out: FloatArray = special.gammaln(n + 1.0) - special.gammaln(j + 1.0) - special.gammaln(n - j + 1.0)
    return out


def _smirnov_sf(n: int, d: float) -> float:
    """One-sided ``P(D+_n >= d)`` by the Birnbaum-Tingey sum, in logs, vectorised over its terms."""
    j = np.arange(math.ceil(n * (1.0 - d)), dtype=np.float64)  # terms with 1 - d - j/n > 0
    j = j[-d - j / n > -1.0]  # in floating point the last one can round to 0 (a zero term, log -inf)
    logs = _log_binomials(n)[: j.size] + (n - j) * np.log1p(-d - j / n) + (j - 1.0) * np.log(d + j / n)
    top = float(logs.max())
    return d * math.exp(top) * float(np.exp(logs - top).sum())


def kolmogorov_sf(d: float, n: int) -> float:
    """``P(D_n >= d)`` for the two-sided Kolmogorov-Smirnov statistic of ``n`` samples.

    Where a drift verdict can turn on it (``n * d**2 >= 2.2``, p below about 0.025) this is
    ``2 * smirnov(n, d)``, scipy's own formula for ``kstwo.sf`` there, to ~1e-10 relative, in
    0.1 ms instead of scipy's 5-15 ms at n = 10^4; below ``KS_EXACT_BELOW`` it is ``kstwo.sf``.
    Elsewhere (p above 0.025, never significant at the default ``fdr_q``) it is the Kolmogorov
    limit with Stephens' small-sample correction, within 1 % of ``kstwo.sf``.

    >>> from scipy import stats
    >>> p = kolmogorov_sf(0.02, 8333)
    >>> bool(abs(p / stats.kstwo.sf(0.02, 8333) - 1) < 1e-9)
    True
    >>> bool(abs(kolmogorov_sf(0.01, 8333) / stats.kstwo.sf(0.01, 8333) - 1) < 0.01)
    True
    """
    if n <= 0 or math.isnan(d):
        return math.nan
    if d <= 0.0:
        return 1.0
    if d >= 1.0:
        return 0.0
    if n < KS_EXACT_BELOW:
        return _kstwo_sf(d, n)
    nx2 = n * d * d
    if nx2 >= 370.0:  # below the smallest double
        return 0.0
    if nx2 >= _SMIRNOV_NX2:
        return min(1.0, 2.0 * _smirnov_sf(n, d))
    root = math.sqrt(n)
    return float(special.kolmogorov((root + 0.12 + 0.11 / root) * d))


@lru_cache(maxsize=65_536)
def _kstwo_sf(d: float, n: int) -> float:
    """``kstwo.sf(d, n)`` for ``0 < d < 1``, cached: many models' small windows repeat the few
    ``(d, n)`` pairs their counts allow, and one call costs 0.05-5 ms through scipy.

    scipy's ``_kolmogn`` picks a method by ``n`` and ``n d^2``; for the three a window's test
    meets below ``KS_EXACT_BELOW`` the C extension (``_ks.c``) runs the same steps at a few
    percent of the cost: Durbin's matrix (``n d^2 <= 0.754693`` at n <= 140, ``n d^1.5 <= 1.4``
    above; ~20 us, not ~250), Pomeranz's recursion (n <= 140, ``0.754693 < n d^2 <= 4``; ~30 us,
    not ~1 ms) and the Pelz-Good series (n > 140, ``n d^2 < 2.2``; ~1 us, not ~50-120). Their sums
    are added in index order where numpy hands them to BLAS, and libm's exp and pow stand for
    numpy's own: scipy's value within 1e-11 (the tests hold each). A window's 20 numeric features
    took ~3-15 ms of p-values this way, most of scoring it. Without the extension the recursion is
    :func:`_pomeranz_cdf` (scipy's arithmetic with less interpreter work per step, so its bits)
    and the others scipy's own."""
    t = n * d
    past_shortcuts = 1.0 < t < n - 1 and d < 0.5  # _kolmogn's Ruben-Gambino and 2 * smirnov cases
    pomeranz = n <= 140 and past_shortcuts and 0.754693 < t * d <= 4.0
    fast = ks_native.NATIVE
    if fast is not None and past_shortcuts:
        nx2 = t * d
        durbin = nx2 <= 0.754693 if n <= 140 else nx2 < 2.2 and n * d**1.5 <= 1.4
        found = None
        if durbin:
            found = fast.durbin_sf(n, d)
        elif pomeranz:
            found = fast.pomeranz_sf(n, d)
        elif n > 140 and nx2 < 2.2:
            found = fast.pelz_good_sf(n, d)
        if found is not None:
            return float(found)
    if pomeranz:
        # in scipy's precision: the scaling constants are long doubles, so may the cdf be
        cdf = np.clip(_pomeranz_cdf(n, d), 0.0, 1.0)
        return float(np.clip(1.0 - cdf, 0.0, 1.0))
    # kstwo.sf's own formula, without rv_continuous's checks
    from scipy.stats._ksstats import kolmogn

    return float(np.clip(kolmogn(n, d, cdf=False), 0.0, 1.0))


def clear_pvalue_cache() -> None:
    """Forget the KS p-values computed so far (benchmarks: a steady state's windows rarely repeat one)."""
    _kstwo_sf.cache_clear()


def _pomeranz_cdf(n: int, x: float) -> np.floating[Any]:
    """``P(D_n <= x)`` by Pomeranz's recursion, operation for operation as scipy's
    ``_kolmogn_Pomeranz`` (numpy's ``convolve`` is a ``correlate`` with the powers reversed: here
    reversed once, not per row), so bit-identical to it; the tests compare the two."""
    t = n * x
    ll = math.floor(t)
    f = 1.0 * (t - ll)
    g = min(f, 1.0 - f)
    ceilf, roundf = (1 if f > 0 else 0), (1 if f > 0.5 else 0)
    npwrs = 2 * (ll + 1)  # powers needed in the convolutions
    powers = np.empty((3, npwrs))  # (g/n)^m/m!, (2g/n)^m/m!, ((1-2g)/n)^m/m!
    powers[:, 0] = 1.0
    steps = (g / n, 2 * g / n, (1 - 2 * g) / n)
    for m in range(1, npwrs):
        for row, step in enumerate(steps):
            powers[row, m] = powers[row, m - 1] * step / m
    gpower, twogpower, onem2gpower = (powers[row, ::-1].copy() for row in range(3))
    expnt = 0
    v0, v1 = np.zeros(npwrs), np.zeros(npwrs)
    v1[0] = 1.0
    v0s = v1s = 0
    j1 = max(-ll - ceilf + 1, 0)  # row 0
    last = 2 * n + 1
    for i in range(1, last + 1):
        k1 = j1
        v0, v1 = v1, v0
        v0s, v1s = v1s, v0s
        v1.fill(0.0)
        half, odd = divmod(i + 1, 2)
        if odd:
            j1, j2 = half - ll, half + ll + roundf - 1
        elif half == n + 1:
            j1, j2 = n - ll - ceilf + 1, n + ll + ceilf - 1
        else:
            j1, j2 = half - ll - roundf, half + ll - 1 + ceilf - 1
        j1, j2 = max(j1, 0), min(j2, n)
        reversed_powers = gpower if i in (1, last) else (twogpower if i % 2 else onem2gpower)
        length = j2 - k1 + 1
        if length > 0:
            conv = correlate(v0[k1 - v0s : k1 - v0s + length], reversed_powers[npwrs - length :], "full")
            v1[: j2 - j1 + 1] = conv[j1 - k1 : j2 - k1 + 1]
            if 0 < v1.max() < _EM128:  # scale to avoid underflow
                v1 *= _EP128
                expnt -= _E128
            v1s = v0s + j1 - k1
    ans = v1[n - v1s]
    for m in range(1, n + 1):  # times n!
        if abs(ans) > _EP128:
            ans *= _EM128
            expnt += _E128
        ans *= m
    if expnt != 0:
        ans = np.ldexp(ans, expnt)
    return ans


def _ks_pvalue(d: float, n: int, m: int) -> float:
    big, small = sorted([float(n), float(m)], reverse=True)
    return kolmogorov_sf(d, round(big * small / (big + small)))


def ks_from_sketches(ref: QuantileSketch, cur: QuantileSketch) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value from two sketches.

    The statistic is ``sup |F1 - F2|`` over bucket boundaries, where both CDFs are exact: it never
    exceeds the exact statistic, and equals it when no bucket holds two distinct values. The p-value
    is :func:`kolmogorov_sf` at ``round(n*m/(n+m))``, as scipy's ``ks_2samp(..., method='asymp')``.
    """
    return ks_wasserstein_from_sketches(ref, cur)[:2]


def wasserstein_from_sketches(ref: QuantileSketch, cur: QuantileSketch) -> float:
    """1-Wasserstein distance between the sketches' bucket-representative distributions.

    Each value moves by at most ``a * |value|`` to its representative, so the result is within
    ``a * (mean|x| + mean|y|)`` of the exact distance (exact when values are representatives).
    """
    return ks_wasserstein_from_sketches(ref, cur)[2]


def ks_wasserstein_from_sketches(ref: QuantileSketch, cur: QuantileSketch) -> tuple[float, float, float]:
    """(KS statistic, KS p-value, Wasserstein distance) from one alignment of the two sketches."""
    if ref.relative_accuracy != cur.relative_accuracy:
        raise ValueError("sketches must share relative_accuracy to be compared bucket by bucket")
    return _ks_wasserstein(ref.buckets(), cur.buckets())


def _ks_wasserstein(ref: Buckets, cur: Buckets, pvalue: bool = True,
                    ref_size: int | None = None) -> tuple[float, float, float]:
    """(KS statistic, its p-value, Wasserstein distance); the p-value NaN unless ``pvalue`` (for a
    window too small to be tested it would be most of the cost: the exact small-n branch).
    ``ref_size``: what the reference is worth in the p-value when less than the values its sketch
    holds (a seasonal window reference: :func:`driftline.operators.seasonal.window_reference_size`)."""
    n, m = int(ref[2].sum()), int(cur[2].sum())
    if not n or not m:
        return math.nan, math.nan, math.nan
    reps, a, b = _aligned_buckets(ref, cur)
    gap = np.abs(np.cumsum(a) / n - np.cumsum(b) / m)
    d = float(gap.max())
    tested = n if ref_size is None else max(1, min(n, ref_size))
    return d, _ks_pvalue(d, tested, m) if pvalue else math.nan, float(np.dot(gap[:-1], np.diff(reps)))


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
    return stat, float(special.chdtrc(obs.size - 1, stat))  # chi2.sf without its argument checks


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
    values for a categorical one. Histograms are shares per reference bin. ``effect`` is the size
    of the shift in reference-sd units: the Wasserstein distance over the reference standard
    deviation (numeric; a mean shift of 0.1 sd gives 0.1), Cohen's ``w = sqrt(chi2 / n)``
    (categorical; for two categories, the change of a share in sd units of its indicator).
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
    effect: float | None = None
    out_of_range: int = 0
    histogram: list[float] = field(default_factory=list)
    reference_histogram: list[float] = field(default_factory=list)
    bin_edges: list[float] = field(default_factory=list)
    bin_labels: list[str] = field(default_factory=list)

    @property
    def pvalue(self) -> float | None:
        """The p-value of the feature's significance test (KS numeric, chi-square categorical)."""
        return self.ks_pvalue if self.kind == "numeric" else self.chi2_pvalue

    @property
    def test(self) -> str:
        """The name of the feature's significance test: ``"ks"`` or ``"chi2"``."""
        return "ks" if self.kind == "numeric" else "chi2"


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class PreparedReference:
    """What scoring a window needs of one feature's reference profile, derived once per profile:
    its bin shares, edges and labels and (numeric) its sketch's buckets and relative accuracy. Every
    window of a model is scored against the same profile; with many models of little traffic each
    window is cheap and these, made afresh per window, were a third of its scoring. The decoded
    sketch itself is not kept: its buckets are all scoring reads (it was ~110 KB of a 25-feature
    model's ~260 KB here; issue 19). The buckets are decoded on first use (:attr:`sketch_buckets`):
    only a filled window's numeric score reads them, and with many small models most models' windows
    are under-filled, so decoding every feature's sketch was ~70 % of building a model's scorer."""

    profile: FeatureProfile
    ref_hist: FloatArray
    reference_histogram: tuple[float, ...]
    edges: FloatArray
    bin_edges: tuple[float, ...]
    bin_labels: tuple[str, ...]
    sketch: QuantileSketch | None = field(default=None, repr=False, compare=False)
    """The decoded reference sketch when the caller had it (else decoded from the profile)."""

    @classmethod
    def of(cls, profile: FeatureProfile, sketch: QuantileSketch | None = None) -> PreparedReference:
        """``profile`` prepared; ``sketch``: its reference sketch when the caller has it decoded."""
        ref_counts = np.asarray(profile.ref_counts, dtype=np.float64)
        ref_hist = ref_counts / ref_counts.sum()
        return cls(profile, ref_hist, tuple(ref_hist.tolist()), np.asarray(profile.edges, dtype=np.float64),
                   tuple(profile.edges), tuple(profile.bin_labels),
                   sketch if profile.kind == "numeric" else None)

    @cached_property
    def sketch_buckets(self) -> tuple[float, Buckets]:
        """A numeric profile's reference sketch's relative accuracy and buckets (decoded once)."""
        sketch = self.sketch if self.sketch is not None else self.profile.reference_sketch()
        return sketch.relative_accuracy, sketch.buckets()


def compared_count(kind: str, stats: FeatureStats) -> int:
    """The values of a window's feature that a test of ``kind`` compares with the reference: its
    numbers (numeric) or its category values (categorical), not the missing or invalid ones.

    >>> win = FeatureStats()
    >>> win.add(["a", "b", None])
    >>> compared_count("categorical", win), compared_count("numeric", win)
    (2, 0)
    """
    return stats.n if kind == "numeric" else stats.n_categorical


Reference = QuantileSketch | PreparedReference | None
"""What a caller may keep of a feature's reference: prepared, its decoded sketch, or nothing."""
Scored = tuple[FeatureProfile, FeatureStats, Reference]
"""A feature to score: its reference profile, its window's statistics, what is kept of the reference."""


def _prepared(profile: FeatureProfile, reference: Reference) -> PreparedReference:
    if isinstance(reference, PreparedReference) and reference.profile is profile:
        return reference
    return PreparedReference.of(profile, reference if isinstance(reference, QuantileSketch) else None)


def score_feature(
    profile: FeatureProfile,
    stats: FeatureStats,
    cfg: DriftSettings,
    reference: Reference = None,
) -> FeatureScore:
    """Score one feature's window statistics against its reference profile.

    Scores depend on ``cfg`` only through ``min_count``: a feature with fewer values is not tested
    (:func:`verdicts` never judges it), so its test's p-value (``ks_pvalue``, ``chi2_pvalue``) is
    not computed and stays None; its statistics and magnitudes are. With many models of little
    traffic most windows are that small, and the KS p-value's exact small-sample branch was ~40 %
    of scoring one. Thresholds apply in :func:`verdicts`. ``reference`` is the profile prepared
    (:class:`PreparedReference`) or its sketch when the caller keeps them (otherwise they are
    derived from the profile on each call). :func:`score_features` scores many at once.

    >>> from driftline.operators.profile import build_profile
    >>> ref = build_profile("m", "1", {"c": ["a", "b"] * 50}, label_column=None,
    ...                     prediction_column=None, bins=10, top_k=5, created_at_ms=0)
    >>> win = FeatureStats()
    >>> win.add(["a"] * 90 + ["b"] * 10)
    >>> s = score_feature(ref.features["c"], win, DriftSettings())
    >>> s.count, s.histogram, round(s.chi2_stat, 1), round(s.psi, 3), round(s.effect, 2)
    (100, [0.9, 0.1, 0.0], 64.0, 0.879, 0.8)
    """
    return score_features([(profile, stats, reference)], cfg)[0]


def score_features(items: Sequence[Scored], cfg: DriftSettings) -> list[FeatureScore]:
    """:func:`score_feature` of each (profile, window statistics, reference), equal to it value
    for value, with the numpy work done once over all of them: every numeric feature's buckets
    binned, aligned with its reference's and walked for KS and Wasserstein in one pass, PSI and JS
    over the histograms of one length as rows. A window's ~25 features, or the windows that close
    together, took ~20 numpy calls each alone (~3.6 ms a 25-feature window; with 1,000 models
    every one closes on the same grid line).

    >>> from driftline.operators.profile import build_profile
    >>> ref = build_profile("m", "1", {"c": ["a", "b"] * 50, "x": [float(i % 20) for i in range(100)]},
    ...                     label_column=None, prediction_column=None, bins=4, top_k=5, created_at_ms=0)
    >>> c, x = FeatureStats(), FeatureStats()
    >>> c.add(["a"] * 60 + ["b"] * 40)
    >>> x.add_array(np.arange(100, dtype=np.float64) % 20 + 2.0)
    >>> pairs = [(ref.features["c"], c, None), (ref.features["x"], x, None)]
    >>> together = score_features(pairs, DriftSettings())
    >>> together == [score_feature(p, s, DriftSettings()) for p, s, _ in pairs]
    True
    >>> round(together[1].ks_stat, 2), round(together[1].wasserstein, 2), together[1].out_of_range
    (0.1, 2.0, 10)
    """
    prepared = [_prepared(profile, reference) for profile, _, reference in items]
    scores = [FeatureScore(kind=profile.kind, count=compared_count(profile.kind, stats),
                           reference_histogram=list(ready.reference_histogram),
                           bin_edges=list(ready.bin_edges), bin_labels=list(ready.bin_labels))
              for (profile, stats, _), ready in zip(items, prepared, strict=True)]
    numeric = [i for i, (profile, _, _) in enumerate(items) if profile.kind == "numeric" and scores[i].count]
    for i in numeric:
        if prepared[i].sketch_buckets[0] != items[i][1].sketch.relative_accuracy:
            raise ValueError("sketches must share relative_accuracy to be compared bucket by bucket")
    QuantileSketch.find_buckets([items[i][1].sketch for i in numeric])  # all at once; each keeps its own
    current = {i: items[i][1].sketch.buckets() for i in numeric}
    counts = _numeric_histograms(current, [prepared[i].edges for i in numeric],
                                 [items[i][1].sketch for i in numeric])
    for i, (profile, stats, _) in enumerate(items):
        if profile.kind == "categorical" and scores[i].count:
            kept = [stats.categories.get(c, 0) for c in profile.categories]
            counts[i] = np.array([*kept, stats.n_categorical - sum(kept)], dtype=np.int64)
    _shares_and_distances(scores, prepared, counts)
    for i, score in enumerate(scores):
        if not score.count:
            score.histogram = [0.0] * prepared[i].ref_hist.size
        elif score.kind == "categorical":
            stat, p = chi_square(counts[i], prepared[i].ref_hist)
            score.chi2_stat = _finite(stat)
            score.chi2_pvalue = _finite(p) if score.count >= cfg.min_count else None
            score.effect = _finite(math.sqrt(stat / score.count)) if math.isfinite(stat) else None
    _numeric_tests(scores, items, prepared, current, cfg)
    return scores


def _numeric_histograms(current: Mapping[int, Buckets], edges: Sequence[FloatArray],
                        sketches: Sequence[QuantileSketch]) -> dict[int, IntArray]:
    """Per item, its buckets' counts in its reference's bins (:meth:`QuantileSketch.histogram`:
    a bucket counts in the bin holding its upper bound), every item's bounds found at once."""
    if not current:
        return {}
    ords = np.concatenate([b[0] for b in current.values()])
    # a bucket's bounds depend on its sketch's accuracy only, which every item shares with its reference
    accuracies = {sketch.relative_accuracy for sketch in sketches}
    if len(accuracies) == 1:
        upper = sketches[0]._bounds(ords)[1]
    else:
        upper = np.concatenate([s._bounds(b[0])[1] for s, b in zip(sketches, current.values(), strict=True)])
    sizes = [b[0].size for b in current.values()]
    widths = [e.size + 1 for e in edges]
    starts = np.cumsum([0, *widths[:-1]]).tolist()
    bins = np.concatenate([np.searchsorted(e, part, side="right") + start for e, part, start in
                           zip(edges, np.split(upper, np.cumsum(sizes)[:-1]), starts, strict=True)])
    flat = np.zeros(sum(widths), dtype=np.int64)
    np.add.at(flat, bins, np.concatenate([b[2] for b in current.values()]))
    return {i: flat[start : start + width] for i, start, width in zip(current, starts, widths, strict=True)}


def _shares_and_distances(scores: list[FeatureScore], prepared: Sequence[PreparedReference],
                          counts: Mapping[int, IntArray]) -> None:
    """Each counted item's histogram (shares), PSI and JS distance, items with as many bins as
    one another stacked as rows (a row's sums are then the sums of the row alone)."""
    by_width: dict[int, list[int]] = {}
    for i in counts:
        by_width.setdefault(counts[i].size, []).append(i)
    for members in by_width.values():
        current = np.stack([counts[i] for i in members]) / np.array([[scores[i].count] for i in members])
        ref = np.stack([prepared[i].ref_hist for i in members])
        psis, jss = psi_rows(ref, current).tolist(), js_rows(ref, current).tolist()
        for i, row, p, j in zip(members, current.tolist(), psis, jss, strict=True):
            scores[i].histogram, scores[i].psi, scores[i].js_distance = row, _finite(p), _finite(j)


_SEGMENT_BITS = 42  # a bucket ordinal plus 2**41 stays below 2**42 (sketch._ORDINAL_OFFSET is 2**40)


def _numeric_tests(scores: list[FeatureScore], items: Sequence[Scored], prepared: Sequence[PreparedReference],
                   current: Mapping[int, Buckets], cfg: DriftSettings) -> None:
    """KS statistic (and p-value where tested), Wasserstein distance, effect and out-of-range
    count of each numeric item with values: every item's buckets and its reference's on one
    integer axis (an item's ordinals lifted to its own segment), aligned by one ``np.unique``,
    their CDFs one cumulative sum; per item only its p-value and its Wasserstein dot product."""
    refs = {i: prepared[i].sketch_buckets[1] for i in current}
    walked = [i for i in current if refs[i][2].size and current[i][2].size]
    for i in current:
        if i not in walked:  # an empty side: no distance, as _ks_wasserstein says
            scores[i].ks_stat = scores[i].ks_pvalue = scores[i].wasserstein = None
    if not walked:
        return
    lifts = [(k << _SEGMENT_BITS) + (1 << (_SEGMENT_BITS - 1)) for k in range(len(walked))]
    ref_keys = np.concatenate([refs[i][0] + lift for i, lift in zip(walked, lifts, strict=True)])
    cur_keys = np.concatenate([current[i][0] + lift for i, lift in zip(walked, lifts, strict=True)])
    keys, first = np.unique(np.concatenate((ref_keys, cur_keys)), return_index=True)
    reps = np.concatenate([*(refs[i][1] for i in walked), *(current[i][1] for i in walked)])[first]
    a = np.zeros(keys.size, dtype=np.int64)
    b = np.zeros(keys.size, dtype=np.int64)
    a[np.searchsorted(keys, ref_keys)] = np.concatenate([refs[i][2] for i in walked])
    b[np.searchsorted(keys, cur_keys)] = np.concatenate([current[i][2] for i in walked])
    starts = np.searchsorted(keys, [k << _SEGMENT_BITS for k in range(len(walked))])
    lengths = np.diff([*starts.tolist(), keys.size])
    cum_a, cum_b = np.cumsum(a), np.cumsum(b)
    # each segment's cumulative sums start afresh: less what the segments before it summed
    n = np.repeat(np.concatenate(([0], cum_a))[starts], lengths)
    m = np.repeat(np.concatenate(([0], cum_b))[starts], lengths)
    totals_a = np.add.reduceat(a, starts)
    totals_b = np.add.reduceat(b, starts)
    gap = np.abs((cum_a - n) / np.repeat(totals_a, lengths) - (cum_b - m) / np.repeat(totals_b, lengths))
    ds = np.maximum.reduceat(gap, starts).tolist()
    steps = np.diff(reps)
    for i, start, length, d, total_a, total_b in zip(walked, starts.tolist(), lengths.tolist(), ds,
                                                     totals_a.tolist(), totals_b.tolist(), strict=True):
        profile, score = items[i][0], scores[i]
        # profile.n is the sketch's count, except for a seasonal window reference: fewer, what the
        # fitted cycle it is drawn from is worth
        tested = total_a if profile.n is None else max(1, min(total_a, profile.n))
        p = _ks_pvalue(d, tested, total_b) if score.count >= cfg.min_count else math.nan
        w = float(np.dot(gap[start : start + length - 1], steps[start : start + length - 1]))
        score.ks_stat, score.ks_pvalue, score.wasserstein = _finite(d), _finite(p), _finite(w)
        if score.wasserstein is not None and profile.std:
            score.effect = score.wasserstein / profile.std
    # Out of range = in a bucket below the reference's lowest or above its highest bucket: a value
    # in the same bucket as the reference min/max (within 2a) is not out of range.
    sizes = [current[i][0].size for i in walked]
    ords = np.concatenate([current[i][0] for i in walked])
    low = np.repeat([refs[i][0][0] for i in walked], sizes)
    high = np.repeat([refs[i][0][-1] for i in walked], sizes)
    outside = np.where((ords < low) | (ords > high), np.concatenate([current[i][2] for i in walked]), 0)
    for i, count in zip(walked, np.add.reduceat(outside, np.cumsum([0, *sizes[:-1]])).tolist(), strict=True):
        scores[i].out_of_range = count


def count_feature(profile: FeatureProfile, stats: FeatureStats,
                  reference: PreparedReference | None = None) -> FeatureScore:
    """An under-filled window's feature: the values it would compare (``count``, as
    :func:`score_feature` counts them), the reference's bins and shares (what the window is shown
    beside) and no distribution statistic of the window (all None, its histogram empty).

    A window of fewer events than ``drift.min_count`` cannot test any feature (a feature's values
    are at most the window's events), so its PSI, JS, KS and Wasserstein would be numbers nobody
    should read; with many small models computing them was most of the pipeline's cost.
    :func:`verdicts` of these scores is what it is of the full ones: nothing tested, nothing drifted.

    >>> from driftline.operators.profile import build_profile
    >>> ref = build_profile("m", "1", {"c": ["a", "b"] * 50}, label_column=None,
    ...                     prediction_column=None, bins=10, top_k=5, created_at_ms=0)
    >>> win = FeatureStats()
    >>> win.add(["a"] * 9 + [None])
    >>> s = count_feature(ref.features["c"], win)
    >>> s.count, s.psi, s.histogram, s.reference_histogram
    (9, None, [], [0.5, 0.5, 0.0])
    """
    prepared = reference if reference is not None and reference.profile is profile \
        else PreparedReference.of(profile)
    return FeatureScore(kind=profile.kind, count=compared_count(profile.kind, stats),
                        reference_histogram=list(prepared.reference_histogram),
                        bin_edges=list(prepared.bin_edges), bin_labels=list(prepared.bin_labels))


@dataclass
class FeatureVerdict:
    """One feature's verdict; ``reason`` says which test and which floors decided it, in words."""

    drifted: bool
    drifted_by: list[str]
    p_adj: float | None
    reason: str = ""


@dataclass
class ModelVerdict:
    features: dict[str, FeatureVerdict]
    n_features: int
    n_drifted: int
    drifted: bool
    drifted_features: list[str]


def _num(x: float) -> str:
    return f"{x:.2g}" if abs(x) < 1e-3 else f"{x:.3g}"


def _floors(s: FeatureScore, cfg: DriftSettings) -> list[tuple[str, float | None, float]]:
    """(measure, value, floor) of the magnitude floors in force: effect (when set), PSI, JS."""
    floors: list[tuple[str, float | None, float]] = []
    if cfg.effect_threshold is not None:
        floors.append(("effect", s.effect, cfg.effect_threshold))
    floors += [("psi", s.psi, cfg.psi_threshold), ("js", s.js_distance, cfg.js_threshold)]
    return floors


def _reason(s: FeatureScore, cfg: DriftSettings, p: float | None, large: list[str]) -> str:
    if p is None:
        if s.count < cfg.min_count:
            return f"not tested: {s.count} values < min_count {cfg.min_count}"
        return f"not tested: no {s.test} p-value"
    unit = {"effect": " sd" if s.kind == "numeric" else " (w)", "psi": "", "js": ""}
    significance = f"{s.test} p_adj {_num(p)} {'<' if p < cfg.fdr_q else '>='} fdr_q {cfg.fdr_q:g}"
    if p >= cfg.fdr_q:
        return significance
    floors = _floors(s, cfg)
    if large:
        crossed = [f"{m} {_num(v)}{unit[m]} >= {f:g}" for m, v, f in floors if m in large and v is not None]
        return f"{significance} and {', '.join(crossed)}"
    under = [f"{m} {'-' if v is None else _num(v)}{unit[m]} < {f:g}" for m, v, f in floors]
    return f"{significance} but {', '.join(under)}"


def verdicts(scores: Mapping[str, FeatureScore], cfg: DriftSettings) -> ModelVerdict:
    """Benjamini-Hochberg across the features' p-values, then significance AND magnitude per feature.

    Features with ``count < cfg.min_count`` or no p-value are not hypotheses: they keep
    ``p_adj=None`` and never drift. A significant feature drifts when one magnitude reaches its
    floor: ``effect >= cfg.effect_threshold`` (when set), ``psi >= cfg.psi_threshold`` or
    ``js_distance >= cfg.js_threshold``. ``drifted_by`` names the test and the magnitudes that
    crossed, e.g. ``["ks", "effect", "psi"]``; ``reason`` says it in words, floors included.
    """
    names = [n for n, s in scores.items() if s.count >= cfg.min_count and s.pvalue is not None]
    p_adj: dict[str, float] = {}
    if names:  # none in an under-filled window
        adjusted = benjamini_hochberg(np.array([scores[n].pvalue for n in names], dtype=np.float64))
        p_adj = dict(zip(names, adjusted.tolist(), strict=True))
    features: dict[str, FeatureVerdict] = {}
    for name, s in scores.items():
        p = p_adj.get(name)
        # a feature not tested (every feature of an under-filled window) has no floors to weigh
        large = [] if p is None else [
            measure for measure, value, limit in _floors(s, cfg) if value is not None and value >= limit]
        drifted = p is not None and p < cfg.fdr_q and bool(large)
        features[name] = FeatureVerdict(
            drifted, [s.test, *large] if drifted else [], p, _reason(s, cfg, p, large if drifted else [])
        )
    drifted_features = sorted(n for n, v in features.items() if v.drifted)
    return ModelVerdict(
        features=features,
        n_features=len(scores),
        n_drifted=len(drifted_features),
        drifted=len(drifted_features) >= cfg.min_drifted_features,
        drifted_features=drifted_features,
    )
