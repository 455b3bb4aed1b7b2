"""Sequential drift detection: banks of CUSUMs calibrated to a false-alarm rate, per feature.

A detector watches one stream of values (a feature of a model, or a classifier's error stream)
one observation at a time and alarms when the stream has left its reference distribution. It is
configured by the one number an operator can reason about, the **average run length** ``arl``: the
mean number of no-drift observations between two false alarms. Thresholds are derived from
``arl`` and the reference; there is no magic threshold.

Method
------
**CUSUM.** For a designed alternative with log-likelihood ratio increments ``z_t`` (in nats), Page's
(1954) CUSUM ``S_t = max(0, S_{t-1} + z_t)`` alarms at ``S_t >= h``. Moustakides (1986) proved it
optimal for a known post-change law (Lorden's worst-case detection delay at a given ARL). The drift
is unknown, so each detector runs a *bank* of CUSUMs on a geometric grid of alternatives and alarms
when any of them crosses its threshold. Lorden (1971) showed the CUSUM and its version maximised
over an unknown post-change parameter asymptotically optimal as the ARL grows; the grid approximates
that maximum and loses at most a fixed share of the evidence rate between grid points. After an
alarm **all** CUSUMs of the detector restart from 0 (a renewal), so false alarms form a renewal
process and ``arl`` is the mean run between them: over ``N`` no-drift observations one expects
about ``N / arl`` false alarms, whatever ``N`` is (this is run-length control; there is no horizon
and nothing to spend over time).

**Numeric** values are first mapped through the reference's mid-distribution probability integral
transform to a normal score ``u = Phi^{-1}(F_mid(x))`` with ``F_mid = (L + R + 1) / (2 (n + 1))``
(``L``/``R``: reference values below / at-or-below ``x``, i.e. the mid-rank for ties, always inside
``[0.5/(n+1), 1 - 0.5/(n+1)]``), then standardised to mean 0 and variance 1 under the reference.
Whatever the feature's distribution, ``u`` is about N(0, 1) under no drift (exactly the same
detector for ``x`` and any increasing transform of it), so one grid of designs fits every feature:
mean shifts ``+-delta`` for ``delta`` in :data:`MEAN_SHIFTS` (``z = +-delta u - delta^2/2``) and
scale changes ``sigma1`` in :data:`SCALE_RATIOS` (``z = -ln sigma1 + u^2/2 (1 - 1/sigma1^2)``). The
reference is kept as at most :data:`MAX_CELLS` cells (contiguous runs of sorted reference values or
of sketch buckets, heavy atoms always alone), so a value is a *symbol* (inside cell ``j`` or in the
gap before it) and every design's increment is a table lookup.

The grid is geometric with ratio 2, ``delta`` = 0.05 ... 0.8. A finer grid matches more shifts
exactly but splits the ARL over more CUSUMs; measured on N(0, 1) streams (fresh detector, arl 1e6,
4 seeds, mean delay for shifts 0.05 / 0.1 / 0.2 / 0.3 / 0.5 / 1.0, a 0 -> 0.3 ramp over 50,000
samples, and throughput), the ratio-sqrt(2) grid 0.035 ... 1.13 (24 CUSUMs) gave 8887 / 2840 /
916 / 371 / 118 / 31, ramp 12,925, 5.8 M values/s; ratio 2 from 0.035 (14 CUSUMs) 8813 / 2816 /
840 / 361 / 110 / 28, ramp 12,900, 7.8 M/s; this grid (12 CUSUMs) 8866 / 2820 / 904 / 348 / 114 /
30, ramp 12,753, 8.5 M/s; ratio 2.5 (10 CUSUMs) was no better. A shift midway between two designs
(0.3, between 0.2 and 0.4) still accumulates 89 % of the optimal evidence per sample (0.040 against
0.045 nats), a smaller loss than what the finer grid's larger ``ln K`` costs.

**Categorical** values (compared as :func:`~driftline.operators.window_stats.category_key` strings;
values outside the reference categories are "other") get Bernoulli CUSUMs on ``1[x = k]`` per
category ``k``: more frequent (ratios :data:`CATEGORY_RATIOS`, ``p1 <= 0.95``) and, for categories
with ``p_k >= 0.05``, less frequent (:data:`CATEGORY_DECREASE`). **Binary** error streams (1 = error)
get Bernoulli CUSUMs for error-rate increases (:data:`ERROR_RATIOS`).

**Reference uncertainty.** A reference is a finite sample, and a stream drawn from the *same
population* looks shifted from it by about one standard error. A CUSUM sensitive to such a shift
eventually finds it, so every design is built against the edge of a ``KAPPA`` = 2 standard-error
confidence region of the reference ("guaranteed conditional performance", Gandy & Kvaloy 2013;
Jones, Champ & Rigdon 2004 on CUSUMs with estimated parameters): a mean design tests
``N(m + delta, 1)`` against ``N(m, 1)`` with ``m = +-KAPPA/sqrt(n_ref)`` towards the alternative, a
scale design uses the variance at the matching edge, and Bernoulli designs use the Wilson bound
of ``p_k`` (which also gives unseen categories a rate ``~ KAPPA^2 / n``, the role of additive
smoothing). The thresholds are calibrated at that edge, so the ARL holds, conservatively, for every
reference whose error lies inside the region (about 98 % of references per direction). Mean designs
a reference cannot resolve are dropped: ``delta`` must be at least ``2 KAPPA / sqrt(n_ref)`` and at
least ``h / (KAPPA sqrt(n_ref))``, which keeps the false-alarm rate averaged over reference draws
at or below target too (a 50,000-value reference keeps the whole grid; 1,000 values keep
``delta >= 0.2`` at ``arl`` 1e6).

Calibration
-----------
The detector's target ``arl`` is split over its ``K`` CUSUMs by the union bound (each CUSUM gets
ARL ``K * arl``; neighbouring designs are positively correlated, so the bank is conservative).
Every CUSUM's increment law under the (edge-of-region) null is known exactly from the reference
representation: a finite set of values with probabilities (cells, categories, Bernoulli). From it:
the mean ``mu < 0``, the standard deviation, and ``theta`` solving ``E exp(theta z) = 1`` (1 for an
exact likelihood ratio). Then, per CUSUM:

* increments close to normal (a continuous reference and a mean-shift design): Siegmund's (1985)
  corrected diffusion approximation ``ARL(h) = (e^x - x - 1) / (theta |mu|)`` with
  ``x = theta (h + 1.166 sd(z))``, solved for ``h``. Checked against direct simulation: within 3 %
  for normal increments at every grid ``delta``;
* everything else (scale designs, discrete references, Bernoulli designs): the same formula is off
  by up to 3.5x for coarse lattices (a two-valued feature) and 0.3x for rare categories, so
  ``ARL(h)`` is measured by Siegmund's (1976) importance sampling of one CUSUM cycle (from 0 back
  to 0): ``P(cycle reaches h)`` is simulated under the exponentially tilted law ``w e^(theta z)``
  with likelihood-ratio weights ``e^(-theta W)``, the mean cycle length comes from Wald's identity
  (``E[undershoot] / |mu|``), and ``ARL = E[min(L, tau)] / P(hit)``. Bernoulli walks jump between
  "hits" by geometrically distributed gaps, so a rare category costs as little as a common one.
  The smallest ``h`` on a ``0.25 / theta`` grid with ``ARL(h) >= K * arl`` is kept (at most ~30 %
  conservative, Monte-Carlo error ~5-10 %). Where a crossing takes more than :data:`_IS_MAX_STEPS`
  steps the walk is diffusive and the formula is accurate again, so it is used instead.

Measured accuracy, each CUSUM alone at its threshold against its share ``K * arl`` (direct
simulation, 50-2,500 alarms each, per-CUSUM ARL 4e3-6e5): 0.91-1.28 for normal, Poisson(1),
two-valued and sketch references, 0.83-1.39 for categorical and binary banks; the bank-rate
(harmonic) mean is 1.01-1.19. The bank as a whole is more conservative still: on no-drift streams
from the population of a 50,000-value reference it raises 0.25-0.5 of the ``N / arl`` expected
false alarms (union bound over correlated CUSUMs, and the guarantee region); an effective number
of CUSUMs below ``K`` would buy ~0.5-1 nat of threshold, but it grows with the threshold, so a
pilot measured at a low ARL would not be conservative, and it is not applied.

The simulation is seeded from a hash of its inputs, so the same reference always gives the same
thresholds, and results are cached per (reference content, ``arl``). Building a detector takes a
few milliseconds of CPU (a continuous numeric feature ~5-25 ms, a discrete one ~25 ms, a binary
stream ~10 ms, a 20-category feature ~50 ms), independent of ``arl``.

Exactness
---------
Increments and thresholds are quantised to int64 fixed point (``2**24`` per nat) and the CUSUMs
run in integer arithmetic, so results are bit-identical however a stream is chunked:
``update_many(a + b)`` equals ``update_many(a); update_many(b)`` equals ``update`` per element, in
alarms and in final state. ``update_many`` is vectorised with ``S_t = C_t - min(-S_0, min_{s<=t}
C_s)`` over the cumulative sums ``C`` and only loops over alarms (after one, the running minimum
restarts at its row). Detectors pickle (the increment table is rebuilt from a few small arrays on
load).

Multiple testing over features is handled by :func:`feature_arl`.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> det = NumericDetector.from_reference(rng.normal(size=20_000), arl=1e6)
>>> det.update_many(rng.normal(size=50_000))
[]
>>> alarms = det.update_many(rng.normal(0.5, 1.0, size=2_000))  # the mean shifts by 0.5 sd
>>> alarms[0].index - 50_000 < 400, alarms[0].component.startswith("mean+")
(True, True)
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from driftline.operators.sketch import QuantileSketch
from driftline.operators.window_stats import category_key

if TYPE_CHECKING:
    from driftline.operators.profile import FeatureProfile

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MEAN_SHIFTS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8)
"""Mean-shift designs, in reference standard deviations of the normal score (ratio 2; see above)."""
SCALE_RATIOS: tuple[float, ...] = (0.67, 1.5)
"""Scale-change designs: the normal score's standard deviation after the change."""
CATEGORY_RATIOS: tuple[float, ...] = (1.5, 2.0, 4.0)
"""A category's frequency multiplied by these (capped at :data:`P_CAP`)."""
CATEGORY_DECREASE = 0.5
"""A category's frequency halved (only for categories with reference frequency >= 0.05)."""
ERROR_RATIOS: tuple[float, ...] = (1.25, 1.5, 2.0, 3.0)
"""Error-rate increases of a binary (error) stream."""
P_CAP = 0.95
KAPPA = 2.0
"""Width, in standard errors, of the reference confidence region the thresholds are guaranteed on."""
MAX_CELLS = 512
"""Most cells a numeric reference is kept as (state size and increment table size)."""
FIXED_POINT_BITS = 24

_ONE = 1 << FIXED_POINT_BITS
_RHO = 1.166  # Siegmund's overshoot correction for normal increments, in sd(z) units
_IS_MAX_STEPS = 600  # beyond this expected crossing time the walk is diffusive: use the formula
_IS_PATHS = 1024  # importance-sampling paths per CUSUM (fewer per CUSUM in big banks) ...
_IS_MIN_PATHS = 256
_IS_TOTAL_PATHS = 4096  # ... sharing this budget: the bank's total false-alarm rate averages the errors
_GRID = np.arange(-4, 7) * 0.25  # threshold grid around the formula's h, in units of 1/theta
_WINDOW = 2048  # rows per vectorised step of update_many (bounded memory, cache-friendly)
_CACHE: OrderedDict[tuple[str, float], FloatArray] = OrderedDict()
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Alarm:
    """One alarm of a detector."""

    index: int
    """0-based position of the alarming observation among those the detector counted."""
    component: str
    """Which CUSUM fired, e.g. ``"mean+0.4"``, ``"scale*1.5"``, ``"category 'red' x2"``."""
    statistic: float
    """That CUSUM's statistic at the alarm, in nats (log-likelihood ratio)."""
    threshold: float
    """Its threshold, in nats."""


def feature_arl(model_arl: float, n_features: int, n_streams: int = 1) -> float:
    """The per-detector ARL that gives a model ``model_arl`` between false alarms (Bonferroni).

    A model watched by ``n_features`` detectors raises false alarms at up to ``n_features`` times
    the rate of one, so each gets ``model_arl * n_features`` (the union bound; exact for
    independent features, conservative otherwise). ARL is run-length control: a detector with
    ARL ``a`` expects ``N / a`` false alarms over any ``N`` no-drift observations, so no further
    correction over time is needed. ``n_streams`` multiplies in the same way when ``model_arl``
    is counted in the observations of *one* of ``n_streams`` shards that each watch a disjoint
    part of the traffic; when it is counted in all of the model's events, each event reaches one
    shard only and ``n_streams=1`` is right.

    >>> feature_arl(1e6, 25)
    25000000.0
    >>> feature_arl(1e6, 25, n_streams=4)
    100000000.0
    """
    if model_arl <= 1.0 or n_features < 1 or n_streams < 1:
        raise ValueError("model_arl must exceed 1 and n_features, n_streams be positive")
    return float(model_arl) * n_features * n_streams


def detector_for_profile(profile: FeatureProfile, *, arl: float,
                         min_effect: float = 0.0) -> NumericDetector | CategoricalDetector:
    """The detector for one feature of a reference profile (sketch for numeric, counts otherwise).

    ``min_effect`` is in reference sd; a categorical feature gets ``min_psi = min_effect**2``, the
    PSI of a normal mean shift of ``min_effect`` sd (PSI is a symmetrised KL: ``delta**2`` there).
    """
    if profile.kind == "numeric":
        return NumericDetector.from_sketch(profile.reference_sketch(), profile.n, arl=arl,
                                           min_effect=min_effect)
    return CategoricalDetector.from_counts(profile.categories, profile.ref_counts, arl=arl,
                                           min_psi=min_effect**2)


# -- the CUSUM bank ------------------------------------------------------------------------------


class _Bank:
    """A bank of integer CUSUMs on a table of quantised increments indexed by symbol."""

    kind: str = ""
    arl: float
    n: int
    alarms_total: int
    _labels: list[str]
    _h: IntArray
    _S: IntArray
    _table: IntArray

    def _setup(self, arl: float, labels: list[str], thresholds: FloatArray) -> None:
        self.arl = float(arl)
        self.n = 0
        self.alarms_total = 0
        self._labels = labels
        self._h = np.ceil(np.asarray(thresholds) * _ONE).astype(np.int64)
        self._S = np.zeros(len(labels), dtype=np.int64)
        self._table = self._build_table()

    # subclasses: symbols of a batch (skipped values dropped), of one value (None = skipped), table
    def _symbols(self, xs: Any) -> IntArray:
        raise NotImplementedError

    def _symbol(self, x: Any) -> int | None:
        raise NotImplementedError

    def _build_table(self) -> IntArray:
        raise NotImplementedError

    @property
    def components(self) -> list[str]:
        """The CUSUMs of the bank, by label."""
        return list(self._labels)

    @property
    def thresholds(self) -> dict[str, float]:
        """Each CUSUM's threshold in nats."""
        return {label: int(h) / _ONE for label, h in zip(self._labels, self._h, strict=True)}

    @property
    def statistic(self) -> float:
        """``max_j S_j / h_j`` now: 0 is no evidence of drift, 1 the alarm level."""
        return float(np.max(self._S / self._h))

    def reset(self) -> None:
        """Every CUSUM back to 0 (thresholds, ``n`` and ``alarms_total`` are kept)."""
        self._S[:] = 0

    def serial_dependence(self, syms: IntArray, batches: int = 20) -> FloatArray:
        """Each CUSUM's variance inflation on a no-drift sample of symbols, in their order.

        The batch-means estimate ``b var(batch means) / var(z)`` of ``1 + 2 sum_k rho_k`` for the
        CUSUM's increments ``z``, at batch lengths ``b = len / batches`` and its halvings down to 8,
        the largest kept: 1 for independent values, about ``b`` for values constant over runs of
        ``b`` or more, and a cycle shows at the batch length of about half its period (whole
        periods cancel, but a CUSUM run lasts less). A CUSUM whose increments' variance over its
        run is inflated ``phi`` times needs a ``phi`` times higher threshold for the same ARL (the
        diffusion approximation ``ARL ~ exp(2 |mu| h / (phi var z))``).
        """
        b = syms.size // batches
        if b < 8:
            raise ValueError("too few symbols for a batch-means estimate")
        z = self._table[syms].astype(np.float64) / _ONE
        var = z.var(axis=0, ddof=1)
        ok = var > 0
        phi = np.ones(z.shape[1])
        while b >= 8:
            k = syms.size // b
            means = z[: k * b].reshape(k, b, -1).mean(axis=1)
            phi = np.maximum(phi, np.where(ok, b * means.var(axis=0, ddof=1) / np.where(ok, var, 1.0), 1.0))
            b //= 2
        return phi

    def scale_thresholds(self, base: IntArray, factors: FloatArray) -> None:
        """Thresholds ``base`` (this bank's own, fixed point) times ``factors`` (at least 1)."""
        self._h = np.ceil(base * np.maximum(factors, 1.0)).astype(np.int64)

    @property
    def thresholds_fixed(self) -> IntArray:
        """The thresholds in fixed point (``2**24`` per nat), a copy."""
        return self._h.copy()

    def update(self, x: Any) -> Alarm | None:
        """Count one observation (None/NaN are skipped); the alarm it raises, if any."""
        sym = self._symbol(x)
        if sym is None:
            return None
        return self.update_symbol(sym)

    def update_symbol(self, sym: int) -> Alarm | None:
        """Count one already-mapped symbol; the alarm it raises, if any."""
        s = self._S + self._table[sym]
        np.maximum(s, 0, out=s)
        index = self.n
        self.n += 1
        if not (s >= self._h).any():
            self._S = s
            return None
        self._S = np.zeros_like(s)
        return self._alarm(index, s)

    def update_many(self, xs: Any) -> list[Alarm]:
        """Count a batch of observations in order; its alarms (indices global), usually none."""
        return self.run_symbols(self._symbols(xs))[0]

    def run_symbols(self, syms: IntArray, first_only: bool = False) -> tuple[list[Alarm], int]:
        """Count already-mapped symbols in order: (alarms, symbols counted).

        With ``first_only`` counting stops right after the first alarm (its renewal included),
        so a caller can hand the rest of the batch to something else; bit-identical to counting
        those symbols one by one.
        """
        total = syms.size
        alarms: list[Alarm] = []
        s0 = self._S
        for pos in range(0, total, _WINDOW):
            end = min(total, pos + _WINDOW)
            # Row 0 is a zero and row 1 carries S_0, so after the cumulative sum row t holds
            # S_0 + C_t (row t is observation pos + t - 1); S_t is C_t minus its running minimum.
            buf = np.empty((end - pos + 1, s0.size), dtype=np.int64)
            buf[0] = 0
            np.take(self._table, syms[pos:end], axis=0, out=buf[1:])
            buf[1] += s0
            np.cumsum(buf, axis=0, out=buf)
            base = 0  # every CUSUM is 0 at row `base` (the start, or the last alarm)
            while True:
                seg = buf[base:]
                path = np.minimum.accumulate(seg, axis=0)
                np.subtract(seg, path, out=path)
                over = path >= self._h
                if not over.any():
                    s0 = path[-1].copy()
                    break
                t = int(over.any(axis=1).argmax())
                alarms.append(self._alarm(self.n + pos + base + t - 1, path[t]))
                base += t  # reset: S = 0 there, so later rows count from C at that row
                if first_only:
                    self._S = np.zeros_like(s0)
                    self.n += pos + base
                    return alarms, pos + base
                if base == end - pos:
                    s0 = np.zeros_like(s0)
                    break
        self._S = s0
        self.n += total
        return alarms, total

    def _alarm(self, index: int, s: IntArray) -> Alarm:
        self.alarms_total += 1
        ratio = s / self._h
        j = int(ratio.argmax())
        return Alarm(index, self._labels[j], int(s[j]) / _ONE, int(self._h[j]) / _ONE)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_table", None)  # derived: rebuilt bit-identically from the small arrays
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._table = self._build_table()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(arl={self.arl:g}, cusums={len(self._labels)}, n={self.n}, "
                f"alarms_total={self.alarms_total}, statistic={self.statistic:.3f})")


def _quantise(z: FloatArray) -> IntArray:
    return np.rint(z * _ONE).astype(np.int64)


# -- numeric -------------------------------------------------------------------------------------


class NumericDetector(_Bank):
    """Mean and scale CUSUMs on the normal scores of a numeric feature.

    Values are anything ``float()`` accepts; None and NaN are skipped (not counted), +-inf count as
    the most extreme scores.

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> det = NumericDetector.from_reference(rng.lognormal(size=10_000), arl=1e5)
    >>> det.kind, det.components[:3]
    ('numeric', ['mean+0.05', 'mean-0.05', 'mean+0.1'])
    >>> det.update_many([1.0, None, float("nan"), 2.0]), det.n
    ([], 2)
    >>> alarm = next(a for x in rng.lognormal(1.0, 1.0, 500) if (a := det.update(x)))
    >>> alarm.component, alarm.statistic >= alarm.threshold
    ('mean+0.8', True)
    """

    kind = "numeric"
    _lo: FloatArray
    _hi: FloatArray
    _u: FloatArray
    _coef: FloatArray

    @classmethod
    def from_reference(cls, values: Iterable[Any], *, arl: float = 1_000_000.0,
                       min_effect: float = 0.0) -> NumericDetector:
        """From a reference sample (None/NaN skipped; ties get their mid-rank).

        ``min_effect`` (reference sd of the normal score) is the indifference zone: shifts of
        the mean up to it, and of the sd by a factor up to ``1 +- min_effect``, keep the ARL.
        """
        x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
        x = x[~np.isnan(x)].ravel()
        if x.size < 2:
            raise ValueError("a numeric reference needs at least 2 values")
        uniq, counts = np.unique(x, return_counts=True)
        return cls._build(uniq, uniq, counts.astype(np.int64), int(x.size), arl, min_effect)

    @classmethod
    def from_sketch(cls, sketch: QuantileSketch, n_reference: int, *,
                    arl: float = 1_000_000.0, min_effect: float = 0.0) -> NumericDetector:
        """From the reference's quantile sketch; ``n_reference`` sizes the reference uncertainty.

        A value is placed by the sketch's own buckets, so the reference distribution of the
        normal score is known exactly (no interpolation error between reference and stream).
        """
        if sketch.count < 2 or n_reference < 2:
            raise ValueError("a numeric reference needs at least 2 values")
        ords, _, counts = sketch.buckets()
        lower, upper = sketch._bounds(ords)  # the sketch's own (lower, upper] bucket bounds
        lower = np.where(ords == 0, 0.0, lower)  # the zero bucket holds exactly 0.0
        return cls._build(lower, upper, counts.astype(np.int64), int(n_reference), arl, min_effect)

    @classmethod
    def _build(cls, lo: FloatArray, hi: FloatArray, counts: IntArray, n_ref: int,
               arl: float, min_effect: float = 0.0) -> NumericDetector:
        _check_arl(arl)
        _check_min_effect(min_effect)
        lo, hi, counts = _group_cells(lo, hi, counts, MAX_CELLS)
        n = int(counts.sum())
        below = np.concatenate(([0], np.cumsum(counts)))  # reference values below cell j / gap j
        f = np.empty(2 * counts.size + 1)
        f[0::2] = (2 * below + 1) / (2 * (n + 1))  # gap before cell j (and after the last)
        f[1::2] = (below[:-1] + below[1:] + 1) / (2 * (n + 1))  # inside cell j: mid-rank
        raw = ndtri(f)
        w = counts / n
        mean = float(w @ raw[1::2])
        sd = math.sqrt(float(w @ (raw[1::2] - mean) ** 2))
        constant = sd < 1e-9
        if constant:  # any other value is as far out as it gets; a scale cannot shrink
            mean, sd = 0.0, 1.0
        u = (raw - mean) / sd
        uc = u[1::2]
        se = 1.0 / math.sqrt(n_ref)
        kurt = max(float(w @ uc**4), 1.0 + 1e-9)
        se_var = math.sqrt((kurt - 1.0) / n_ref)
        edge = max(KAPPA * se, min_effect)  # the null a mean design is built against

        labels: list[str] = []
        coef: list[tuple[float, float, float]] = []  # detector increment a u^2 + b u + c
        cal: list[FloatArray] = []  # calibration increments (the edge-of-region null)
        k_full = 2 * len(MEAN_SHIFTS) + len(SCALE_RATIOS)
        for d in MEAN_SHIFTS:
            h_guess = max(1.0, math.log(k_full * arl * d * d / 2))
            if d < 2 * KAPPA * se or d < h_guess * se / KAPPA:
                continue  # the reference cannot resolve a shift this small
            for sign, name in ((1.0, "+"), (-1.0, "-")):
                labels.append(f"mean{name}{d:g}")
                coef.append((0.0, sign * d, -d * edge - d * d / 2))
                cal.append(sign * d * uc - d * d / 2)
        for s1 in SCALE_RATIOS:
            # the variance at the edge: the region's, or an sd factor 1 +- min_effect if wider
            zone = (1.0 + min_effect) ** 2 - 1.0 if s1 > 1 else 1.0 - (1.0 - min_effect) ** 2
            v = 1.0 + math.copysign(max(KAPPA * se_var, zone), s1 - 1.0)
            if v < 0.5 or constant:
                continue
            labels.append(f"scale*{s1:g}")
            coef.append(((1.0 - 1.0 / s1**2) / (2 * v), 0.0, -math.log(s1)))
            cal.append(-math.log(s1) + uc**2 / 2 * (1.0 - 1.0 / s1**2))
        if not labels:
            raise ValueError("the reference is too small to resolve any designed change")
        continuous = float(w.max()) <= 0.01
        nulls = [
            _Null(z, w, near_normal=continuous and label.startswith("mean"))
            for z, label in zip(cal, labels, strict=True)
        ]
        det = cls.__new__(cls)
        det._lo, det._hi, det._u = lo, hi, u
        det._coef = np.array(coef, dtype=np.float64)
        det._setup(arl, labels, _calibrate(nulls, arl))
        return det

    def _build_table(self) -> IntArray:
        a, b, c = self._coef[:, 0], self._coef[:, 1], self._coef[:, 2]
        u = self._u[:, None]
        return _quantise(((a * u) * u + b * u) + c)

    def _symbols(self, xs: Any) -> IntArray:
        x = np.asarray(xs, dtype=np.float64).ravel()
        x = x[~np.isnan(x)]
        j = np.searchsorted(self._hi, x, side="left")
        inside = (j < self._hi.size) & (x >= self._lo[np.minimum(j, self._hi.size - 1)])
        return (2 * j + inside).astype(np.int64)

    def _symbol(self, x: Any) -> int | None:
        if x is None:
            return None
        v = float(x)
        if v != v:
            return None
        j = int(np.searchsorted(self._hi, v, side="left"))
        return 2 * j + int(j < self._hi.size and v >= self._lo[j])


def _group_cells(lo: FloatArray, hi: FloatArray, counts: IntArray,
                 max_cells: int) -> tuple[FloatArray, FloatArray, IntArray]:
    """Merge sorted cells into about ``max_cells`` of equal mass; heavy atoms stay alone."""
    if counts.size <= max_cells:
        return lo.astype(np.float64), hi.astype(np.float64), counts
    n = int(counts.sum())
    start = np.cumsum(counts) - counts
    heavy = counts * max_cells >= n
    bucket = start * max_cells // n
    new = np.ones(counts.size, dtype=bool)
    new[1:] = (bucket[1:] != bucket[:-1]) | heavy[1:] | heavy[:-1]
    first = np.flatnonzero(new)
    last = np.concatenate((first[1:], [counts.size])) - 1
    return (lo[first].astype(np.float64), hi[last].astype(np.float64),
            np.add.reduceat(counts, first).astype(np.int64))


# -- Bernoulli banks ------------------------------------------------------------------------------


def _wilson(count: float, n: float, z: float = KAPPA) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    p = count / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(centre - half, 0.0), min(centre + half, 1.0)


def _bernoulli(p0: float, p1: float) -> tuple[float, float]:
    """LLR increments (on 1, on 0) of rate ``p1`` against ``p0``."""
    return math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))


class CategoricalDetector(_Bank):
    """Bernoulli CUSUMs on each category's indicator (rarer and more frequent), "other" included.

    >>> det = CategoricalDetector.from_counts(["red", "blue"], [600, 390, 10], arl=1e5)
    >>> det.components[:4]
    ["category 'red' x1.5", "category 'red' x0.5", "category 'blue' x1.5", "category 'blue' x0.5"]
    >>> det.update_many(["red", "blue"] * 500)
    []
    >>> alarm = next(a for _ in range(100) if (a := det.update("green")))
    >>> alarm.component
    "category '__other__' x4"
    """

    kind = "categorical"
    categories: list[str]
    reference_shares: FloatArray
    """Each category's share of the reference, "other" last."""
    _index: dict[str, int]
    _a: FloatArray
    _b: FloatArray
    _target: IntArray

    @classmethod
    def from_reference(cls, values: Iterable[Any], *, arl: float = 1_000_000.0,
                       max_categories: int = 50, min_psi: float = 0.0) -> CategoricalDetector:
        """From a reference sample; the ``max_categories`` most frequent are kept, the rest "other"."""
        counts: dict[str, int] = {}
        for v in values:
            if _missing(v):
                continue
            key = category_key(v)
            counts[key] = counts.get(key, 0) + 1
        if not counts:
            raise ValueError("a categorical reference needs at least one value")
        top = sorted(counts, key=lambda k: (-counts[k], k))[:max_categories]
        kept = [counts[k] for k in top]
        return cls.from_counts(top, [*kept, sum(counts.values()) - sum(kept)], arl=arl, min_psi=min_psi)

    @classmethod
    def from_counts(cls, categories: Sequence[str], counts: Sequence[int], *,
                    arl: float = 1_000_000.0, min_psi: float = 0.0) -> CategoricalDetector:
        """From reference counts per category, the last count being "other" (a profile's layout).

        ``min_psi`` is the indifference zone: a category's frequency may move, up or down, until
        its indicator's PSI against the reference reaches ``min_psi`` and the ARL still holds.
        """
        _check_arl(arl)
        _check_min_effect(min_psi)
        categories = [category_key(c) for c in categories]
        if len(counts) != len(categories) + 1:
            raise ValueError("counts needs one entry per category plus 'other' (last)")
        if len(set(categories)) != len(categories) or "__other__" in categories:
            raise ValueError("categories must be distinct and not '__other__'")
        c = np.asarray(counts, dtype=np.float64)
        n = float(c.sum())
        if n <= 0 or (c < 0).any():
            raise ValueError("counts must be non-negative with a positive total")
        names = [*categories, "__other__"]
        labels: list[str] = []
        a: list[float] = []
        b: list[float] = []
        target: list[int] = []
        nulls: list[_Null] = []
        for k, name in enumerate(names):
            lo, hi = _wilson(c[k], n)
            if min_psi > 0 and c[k] > 0:
                lo, hi = min(lo, _psi_edge(c[k] / n, min_psi, -1)), max(hi, _psi_edge(c[k] / n, min_psi, 1))
            designs = [(r, hi, min(r * hi, P_CAP)) for r in CATEGORY_RATIOS]
            if c[k] / n >= 0.05 and lo > 0:
                designs.insert(1, (CATEGORY_DECREASE, lo, CATEGORY_DECREASE * lo))
            seen: list[float] = []
            for r, p0, p1 in designs:
                if not 0.0 < p0 < 1.0 or (r > 1 and p1 <= p0) or _near(p1, seen):
                    continue
                seen.append(p1)
                on, off = _bernoulli(p0, p1)
                labels.append(f"category {name!r} x{r:g}")
                a.append(on)
                b.append(off)
                target.append(k)
                nulls.append(_Null(np.array([on, off]), np.array([p0, 1.0 - p0])))
        if not labels:
            raise ValueError("no category change can be designed from these counts")
        det = cls.__new__(cls)
        det.categories = categories
        det.reference_shares = c / n
        det._index = {name: k for k, name in enumerate(categories)}
        det._a, det._b = np.array(a), np.array(b)
        det._target = np.array(target, dtype=np.int64)
        det._setup(arl, labels, _calibrate(nulls, arl))
        return det

    def _build_table(self) -> IntArray:
        table = np.tile(_quantise(self._b), (len(self.categories) + 1, 1))
        table[self._target, np.arange(self._target.size)] = _quantise(self._a)
        return table

    def _symbols(self, xs: Any) -> IntArray:
        other = len(self.categories)
        get = self._index.get
        return np.fromiter(
            (get(category_key(v), other) for v in _iter(xs) if not _missing(v)), dtype=np.int64
        )

    def _symbol(self, x: Any) -> int | None:
        if _missing(x):
            return None
        return self._index.get(category_key(x), len(self.categories))


class BinaryDetector(_Bank):
    """Bernoulli CUSUMs for increases of an error rate (a stream of 0/1, 1 = error).

    Any non-zero value (``True``, 1) is an error; None and NaN are skipped.

    >>> det = BinaryDetector.from_rate(0.1, arl=1e6)
    >>> det.components
    ['error rate x1.25', 'error rate x1.5', 'error rate x2', 'error rate x3']
    >>> import numpy as np
    >>> rng = np.random.default_rng(3)
    >>> det.update_many(rng.random(20_000) < 0.1)
    []
    >>> alarms = det.update_many(rng.random(5_000) < 0.3)
    >>> alarms[0].index < 20_300, alarms[0].component
    (True, 'error rate x3')
    """

    kind = "binary"
    p0: float
    _a: FloatArray
    _b: FloatArray

    @classmethod
    def from_reference(cls, values: Iterable[Any], *, arl: float = 1_000_000.0,
                       min_ratio: float = 1.0) -> BinaryDetector:
        """From a reference 0/1 sample (None/NaN skipped); designs start at its Wilson upper bound,
        or at ``min_ratio`` times its rate if higher (the indifference zone)."""
        x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
        x = x[~np.isnan(x)].ravel()
        if not x.size:
            raise ValueError("a binary reference needs at least one value")
        errors = float(np.count_nonzero(x))
        p0 = errors / x.size
        return cls._build(max(_wilson(errors, float(x.size))[1], min_ratio * p0), p0, arl)

    @classmethod
    def from_rate(cls, p0: float, *, arl: float = 1_000_000.0, n_reference: int | None = None,
                  min_ratio: float = 1.0) -> BinaryDetector:
        """From a reference error rate ``0 < p0 < 1``: exact, or estimated from ``n_reference``
        outcomes (then designs start at its Wilson upper bound, as :meth:`from_reference`'s do);
        with ``min_ratio > 1`` at least at ``min_ratio * p0``."""
        if not min_ratio >= 1.0:
            raise ValueError("min_ratio must be at least 1")
        if n_reference:
            return cls._build(max(_wilson(p0 * n_reference, float(n_reference))[1], min_ratio * p0), p0, arl)
        return cls._build(max(p0, min_ratio * p0), p0, arl)

    @classmethod
    def _build(cls, p_design: float, p0: float, arl: float) -> BinaryDetector:
        _check_arl(arl)
        if not 0.0 < p_design < 1.0:
            raise ValueError("the reference error rate must be strictly between 0 and 1")
        labels: list[str] = []
        a: list[float] = []
        b: list[float] = []
        nulls: list[_Null] = []
        seen: list[float] = []
        for r in ERROR_RATIOS:
            p1 = min(r * p_design, P_CAP)
            if p1 <= p_design or _near(p1, seen):
                continue
            seen.append(p1)
            on, off = _bernoulli(p_design, p1)
            labels.append(f"error rate x{r:g}")
            a.append(on)
            b.append(off)
            nulls.append(_Null(np.array([on, off]), np.array([p_design, 1.0 - p_design])))
        if not labels:
            raise ValueError("the reference error rate leaves no room for an increase")
        det = cls.__new__(cls)
        det.p0 = float(p0)
        det._a, det._b = np.array(a), np.array(b)
        det._setup(arl, labels, _calibrate(nulls, arl))
        return det

    def _build_table(self) -> IntArray:
        return np.stack([_quantise(self._b), _quantise(self._a)])

    def _symbols(self, xs: Any) -> IntArray:
        x = np.asarray(xs, dtype=np.float64).ravel()
        return (x[~np.isnan(x)] != 0).astype(np.int64)

    def _symbol(self, x: Any) -> int | None:
        if x is None:
            return None
        v = float(x)
        return None if v != v else int(v != 0)


def _near(p1: float, others: list[float]) -> bool:
    """Whether rate ``p1`` is within 20 % of one of ``others`` in both ``p`` and ``1 - p`` (a duplicate)."""
    return any(abs(math.log(p1 / q)) < math.log(1.2) and abs(math.log((1 - p1) / (1 - q))) < math.log(1.2)
               for q in others)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _iter(xs: Any) -> Iterable[Any]:
    return xs.tolist() if isinstance(xs, np.ndarray) else xs


def _check_arl(arl: float) -> None:
    if not arl > 1.0 or math.isinf(arl):
        raise ValueError("arl must be a finite number above 1")


def _check_min_effect(effect: float) -> None:
    if not 0.0 <= effect < 1.0:
        raise ValueError("a minimum effect must be in [0, 1)")


def psi_two(p: float, q: float) -> float:
    """PSI of an indicator whose rate moves from ``p`` to ``q`` (both strictly inside (0, 1))."""
    return (q - p) * math.log(q / p) + (p - q) * math.log((1.0 - q) / (1.0 - p))


def _psi_edge(p: float, psi: float, direction: int) -> float:
    """The rate ``q`` above (``direction`` 1) or below (-1) ``p`` with ``psi_two(p, q) = psi``.

    Bisection on a function increasing in ``|q - p|``; a rate that cannot move that far
    returns the bound (0 or 1), where no design can be built.
    """
    if not 0.0 < p < 1.0:
        return p
    lo, hi = (p, 1.0) if direction > 0 else (0.0, p)
    for _ in range(80):
        mid = (lo + hi) / 2
        far = psi_two(p, mid) >= psi if 0.0 < mid < 1.0 else True
        if far == (direction > 0):
            hi = mid
        else:
            lo = mid
    return hi if direction > 0 else lo


# -- calibration ---------------------------------------------------------------------------------


@dataclass
class _Null:
    """One CUSUM's increments under the (edge-of-region) no-drift law: values ``z``, probabilities ``w``."""

    z: FloatArray
    w: FloatArray
    near_normal: bool = False


def _calibrate(nulls: list[_Null], arl: float) -> FloatArray:
    """Thresholds (nats) giving each CUSUM an ARL of ``len(nulls) * arl`` (cached, deterministic)."""
    digest = hashlib.blake2b(digest_size=16)
    for null in nulls:
        digest.update(np.ascontiguousarray(null.z).tobytes())
        digest.update(np.ascontiguousarray(null.w).tobytes())
        digest.update(b"N" if null.near_normal else b"-")
    key = (digest.hexdigest(), float(arl))
    cached = _CACHE.get(key)
    if cached is not None:
        _CACHE.move_to_end(key)
        return cached.copy()
    target = len(nulls) * float(arl)
    rng = np.random.default_rng(int.from_bytes(digest.digest()[:8], "little"))
    h = np.empty(len(nulls))
    sampled: list[tuple[int, _Walk]] = []
    for j, null in enumerate(nulls):
        walk = _Walk.of(null)
        h[j] = walk.siegmund_threshold(target)
        if walk.theta == math.inf or null.near_normal:
            continue
        if walk.crossing_cost(h[j]) <= _IS_MAX_STEPS:
            sampled.append((j, walk))
    if sampled:
        paths = max(_IS_MIN_PATHS, min(_IS_PATHS, _IS_TOTAL_PATHS // len(sampled)))
        grids = [np.maximum(h[j] + _GRID / walk.theta, 1e-6) for j, walk in sampled]
        arls = _sampled_arl([w for _, w in sampled], grids, paths, rng)
        for (j, walk), grid, arl_grid in zip(sampled, grids, arls, strict=True):
            h[j] = _pick_threshold(grid, arl_grid, target, walk.theta)
    h = np.maximum(h, 1.0 / _ONE)
    _CACHE[key] = h
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return h.copy()


def _pick_threshold(grid: FloatArray, arl_grid: FloatArray, target: float, theta: float) -> float:
    """The smallest grid threshold whose ARL reaches the target (extrapolated beyond the grid)."""
    ok = np.flatnonzero(arl_grid >= target)
    if not ok.size:
        return float(grid[-1] + math.log(target / max(arl_grid[-1], 1.0)) / theta)
    k = int(ok[0])
    if k == 0:
        return float(grid[0] - math.log(arl_grid[0] / target) / theta)
    return float(grid[k])


@dataclass
class _Walk:
    """The increment law of one CUSUM and its Cramer root."""

    z: FloatArray
    w: FloatArray
    mu: float
    sd: float
    theta: float
    mu_tilted: float
    two_point: bool

    @classmethod
    def of(cls, null: _Null) -> _Walk:
        keep = null.w > 0
        z, w = null.z[keep].astype(np.float64), null.w[keep] / null.w[keep].sum()
        mu = float(w @ z)
        sd = math.sqrt(float(w @ (z - mu) ** 2))
        if mu >= 0:
            raise ValueError("a design drifts upwards under no drift: it cannot be calibrated")
        theta = _cramer_root(z, w, mu, sd)
        mu_tilted = float(w @ (z * np.exp(theta * z))) if theta < math.inf else math.inf
        return cls(z, w, mu, sd, theta, mu_tilted, z.size == 2)

    def crossing_cost(self, h: float) -> float:
        """Simulation steps to cross ``h`` under the tilted law (jumps, for two-valued increments)."""
        steps = (h + _RHO * self.sd) / self.mu_tilted
        if self.two_point:  # simulated jump to jump, 2x as many per block
            steps *= float(self.w[self.z.argmax()] * math.exp(self.theta * self.z.max())) * 2
        return steps

    def siegmund_threshold(self, target: float) -> float:
        """Solve ``(e^x - x - 1) / (theta |mu|) = target`` for ``h = x / theta - 1.166 sd``."""
        if self.theta == math.inf:
            # No positive increment: the CUSUM never leaves 0 without drift. ln(target) is
            # Lorden's bound ARL >= e^h for an exact likelihood ratio, a sane scale for h.
            return math.log(target)
        rhs = target * self.theta * abs(self.mu)
        x = math.log(rhs + 1.0) + 1.0
        for _ in range(60):  # Newton on e^x - x - 1 - rhs, convex and increasing for x > 0
            step = (math.expm1(x) - x - rhs) / math.expm1(x)
            x -= step
            if abs(step) < 1e-12:
                break
        return max(x / self.theta - _RHO * self.sd, 1.0 / _ONE)


def _cramer_root(z: FloatArray, w: FloatArray, mu: float, sd: float) -> float:
    """The positive root of ``E exp(theta z) = 1`` (inf when no increment is positive)."""
    zmax = float(z.max())
    if zmax <= 0:
        return math.inf
    theta = max(2 * -mu / (sd * sd), 1e-9) if sd > 0 else 1.0
    limit = 700.0 / zmax
    while theta < limit and float(w @ np.exp(theta * z)) <= 1.0:
        theta *= 2
    theta = min(theta, limit)
    for _ in range(200):  # Newton from the right of the root of a convex function: monotone
        e = np.exp(theta * z)
        step = (float(w @ e) - 1.0) / float(w @ (z * e))
        theta -= step
        if abs(step) <= 1e-13 * theta:
            break
    return theta


def _sampled_arl(walks: list[_Walk], grids: list[FloatArray], paths: int,
                 rng: np.random.Generator) -> list[FloatArray]:
    """ARL at each grid threshold by importance sampling of a CUSUM cycle (Siegmund 1976).

    ``ARL(h) = E[min(L, tau_h)] / P(tau_h < L)`` for a cycle of length ``L`` started at 0; the cycle
    starts with its first positive increment (probability ``P(z > 0)``), ``P(hit)`` is estimated
    under the tilted law with weights ``exp(-theta (W_tau - z_1))``, ``E[L] = E[undershoot] / |mu|``
    (Wald) and ``E[L - tau | hit] = (E[W_tau | hit] + E[undershoot]) / |mu|``.
    """
    two = [k for k, walk in enumerate(walks) if walk.two_point]
    multi = [k for k, walk in enumerate(walks) if not walk.two_point]
    out: list[FloatArray] = [np.empty(0)] * len(walks)
    for group, sampler in ((two, _sample_two_point), (multi, _sample_general)):
        if not group:
            continue
        g_walks = [walks[k] for k in group]
        grid = np.array([grids[k] for k in group])
        p_first, lr, w_tau, undershoot = sampler(g_walks, grid, paths, rng)
        for i, k in enumerate(group):
            walk = g_walks[i]
            rows = slice(i * paths, (i + 1) * paths)
            mass = lr[rows].sum(axis=0)
            p_hit = p_first[i] * mass / paths
            e_w = np.where(mass > 0, (lr[rows] * w_tau[rows]).sum(axis=0) / np.maximum(mass, 1e-300), 0.0)
            eu = undershoot[i]
            with np.errstate(divide="ignore"):
                arl = (eu / p_hit - e_w - eu) / -walk.mu
            out[k] = np.where(p_hit > 0, arl, np.inf)
    return out


def _record(rows: IntArray, path: FloatArray, grid: FloatArray, start: FloatArray, theta: FloatArray,
            passed: IntArray, lr: FloatArray, w_tau: FloatArray) -> npt.NDArray[np.bool_]:
    """Record first passages of grid levels in the block ``path`` of rows ``rows``.

    ``passed[i]`` counts the levels path ``i`` has passed (levels increase, so they pass in
    order); a level counts when reached before the walk dies (<= 0). Returns the rows now done.
    """
    block, levels = path.shape[1], grid.shape[1]
    dead = path <= 0
    death = np.where(dead.any(axis=1), dead.argmax(axis=1), block)
    done = passed[rows]
    nxt = grid[np.arange(rows.size), np.minimum(done, levels - 1)]
    cand = np.flatnonzero((done < levels) & (path.max(axis=1) >= nxt))
    if cand.size:
        top = np.maximum.accumulate(path[cand], axis=1)
        reach = (top[:, :, None] < grid[cand][:, None, :]).sum(axis=1)  # first index at each level
        ok = reach < death[cand, None]
        new = ok & (np.arange(levels)[None, :] >= done[cand, None])
        r, k = np.nonzero(new)
        w_at = path[cand[r], reach[r, k]]
        lr[rows[cand[r]], k] = np.exp(-theta[cand[r]] * (w_at - start[cand[r]]))
        w_tau[rows[cand[r]], k] = w_at
        passed[rows[cand]] = np.maximum(done[cand], ok.sum(axis=1))
    return (death < block) | (passed[rows] >= levels)


def _first_step(pos: FloatArray, grid: FloatArray, lr: FloatArray, w_tau: FloatArray) -> IntArray:
    """Levels passed by the first (untilted) step; their weight is 1."""
    first = pos[:, None] >= grid
    lr[first] = 1.0
    w_tau[first] = np.broadcast_to(pos[:, None], first.shape)[first]
    return first.sum(axis=1).astype(np.int64)


def _sample_two_point(walks: list[_Walk], grid: FloatArray, paths: int,
                      rng: np.random.Generator) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Two-valued increments: simulate jump to jump with geometric gaps (cheap for rare jumps)."""
    up = np.array([float(walk.z.max()) for walk in walks])
    down = np.array([float(walk.z.min()) for walk in walks])
    p_up = np.array([float(walk.w[walk.z.argmax()]) for walk in walks])
    theta = np.array([walk.theta for walk in walks])
    p_tilt = np.minimum(p_up * np.exp(theta * up), 1.0)
    d = np.repeat(np.arange(len(walks)), paths)
    total = d.size
    lr = np.zeros((total, grid.shape[1]))
    w_tau = np.zeros((total, grid.shape[1]))
    pos = up[d].copy()
    # the first jump may already cross (then its weight is 1: the first step is not tilted)
    passed = _first_step(pos, grid[d], lr, w_tau)
    alive = passed < grid.shape[1]
    jumps = 16
    for _ in range(40 * _IS_MAX_STEPS // 32):
        rows = np.flatnonzero(alive)
        if not rows.size:
            break
        dr = d[rows]
        gaps = rng.geometric(p_tilt[dr][:, None], size=(rows.size, jumps)) - 1
        path = pos[rows, None] + np.cumsum(gaps * down[dr][:, None] + up[dr][:, None], axis=1)
        # a gap kills the cycle when the walk reaches 0 during it: before the next jump
        before = path - up[dr][:, None]
        death_path = np.where(before <= 0, -1.0, path)
        done = _record(rows, death_path, grid[dr], up[dr], theta[dr], passed, lr, w_tau)
        pos[rows] = path[:, -1]
        alive[rows[done]] = False
    # null cycles from the first jump, for the mean undershoot
    pos = up[d].copy()
    undershoot = np.zeros(total)
    alive = np.ones(total, dtype=bool)
    for _ in range(400 * _IS_MAX_STEPS // 32):
        rows = np.flatnonzero(alive)
        if not rows.size:
            break
        dr = d[rows]
        gaps = rng.geometric(p_up[dr][:, None], size=(rows.size, jumps)) - 1
        steps = gaps * down[dr][:, None] + up[dr][:, None]
        path = pos[rows, None] + np.cumsum(steps, axis=1)
        prev = path - steps
        dead = path - up[dr][:, None] <= 0
        has = dead.any(axis=1)
        i = dead.argmax(axis=1)
        hit_rows = np.flatnonzero(has)
        start = prev[hit_rows, i[hit_rows]]
        misses = np.ceil(start / -down[dr][hit_rows])
        undershoot[rows[hit_rows]] = misses * -down[dr][hit_rows] - start
        alive[rows[hit_rows]] = False
        pos[rows] = path[:, -1]
    eu = (1 - p_up) * -down + p_up * undershoot.reshape(len(walks), paths).mean(axis=1)
    return p_up, lr, w_tau, eu


def _sample_general(walks: list[_Walk], grid: FloatArray, paths: int,
                    rng: np.random.Generator) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Finitely many increment values: simulate step by step, blocks of steps at a time."""
    n_w = len(walks)
    sizes = np.array([walk.z.size for walk in walks])
    offset = np.concatenate(([0], np.cumsum(sizes)))
    z_all = np.concatenate([walk.z for walk in walks])
    theta = np.array([walk.theta for walk in walks])

    def table(weights: list[FloatArray]) -> FloatArray:
        # one CDF per walk, shifted by its index, so one searchsorted serves every walk
        return np.concatenate([np.cumsum(wt) / wt.sum() + k for k, wt in enumerate(weights)])

    tilted = table([walk.w * np.exp(walk.theta * (walk.z - walk.z.max())) for walk in walks])
    null = table([walk.w for walk in walks])
    positive = table([np.where(walk.z > 0, walk.w, 0.0) for walk in walks])
    p_pos = np.array([float(walk.w[walk.z > 0].sum()) for walk in walks])

    def draw(cdf: FloatArray, dr: IntArray, shape: tuple[int, ...]) -> FloatArray:
        u = rng.random(shape) + (dr if len(shape) == 1 else dr[:, None])
        idx = np.searchsorted(cdf, u, side="right")
        lo = offset[dr] if len(shape) == 1 else offset[dr][:, None]
        hi = offset[dr + 1] - 1 if len(shape) == 1 else (offset[dr + 1] - 1)[:, None]
        return z_all[np.clip(idx, lo, hi)]

    d = np.repeat(np.arange(n_w), paths)
    total = d.size
    lr = np.zeros((total, grid.shape[1]))
    w_tau = np.zeros((total, grid.shape[1]))
    z1 = draw(positive, d, (total,))
    pos = z1.copy()
    passed = _first_step(pos, grid[d], lr, w_tau)
    alive = passed < grid.shape[1]
    block = 32
    for _ in range(40 * _IS_MAX_STEPS // block):
        rows = np.flatnonzero(alive)
        if not rows.size:
            break
        dr = d[rows]
        path = pos[rows, None] + np.cumsum(draw(tilted, dr, (rows.size, block)), axis=1)
        done = _record(rows, path, grid[dr], z1[rows], theta[dr], passed, lr, w_tau)
        pos[rows] = path[:, -1]
        alive[rows[done]] = False
    # null cycles from a positive first step, for the mean undershoot
    pos = draw(positive, d, (total,))
    undershoot = np.zeros(total)
    alive = np.ones(total, dtype=bool)
    for _ in range(400 * _IS_MAX_STEPS // block):
        rows = np.flatnonzero(alive)
        if not rows.size:
            break
        dr = d[rows]
        path = pos[rows, None] + np.cumsum(draw(null, dr, (rows.size, block)), axis=1)
        dead = path <= 0
        has = np.flatnonzero(dead.any(axis=1))
        undershoot[rows[has]] = -path[has, dead[has].argmax(axis=1)]
        alive[rows[has]] = False
        pos[rows] = path[:, -1]
    eu_neg = np.array([float(walk.w[walk.z <= 0] @ -walk.z[walk.z <= 0]) for walk in walks])
    eu = eu_neg + p_pos * undershoot.reshape(n_w, paths).mean(axis=1)
    return p_pos, lr, w_tau, eu
