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
Thresholds come from :mod:`driftline.operators.calibration`: the target ``arl`` is split over
the ``K`` CUSUMs of a bank (union bound) and each CUSUM's threshold is solved from its exact
increment law under the edge-of-region null (Siegmund's corrected diffusion approximation, or
importance sampling of a CUSUM cycle where that formula is off). docs/detectors.md has the whole
method, its measured accuracy and references.

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
import itertools
import math
import sys
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import repeat
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy.special import ndtri

from driftline.operators import watch_native
from driftline.operators.calibration import IncrementLaw, calibrate_thresholds
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
CAP_KAPPA = KAPPA + 1.0
"""Width, in standard errors, of the reference region a tightened design rate stays in."""
BLOCK_AGREEMENT = 3.0
"""Standard errors by which a block of stream values may differ from the pooled reference rate and
still join it (:class:`BinaryDetector`'s ``tighten``; 0.3 % of quiet blocks are turned away)."""

_ONE = 1 << FIXED_POINT_BITS
_NEVER = 2**62  # a refinement point no stream reaches
_MAX_PENDING = 4096  # most values the per-value path defers
_TIGHTEN_STEP = 1.005  # grid ratio of tightened design rates
_LANES = 4  # groups of CUSUMs the per-value path bounds apart (see SequentialDetector._lanes)
_NO_RISE = (0,) * _LANES  # each group's rise after a settle
_LANES_DEFER_AT_MOST = 32  # longest batch defer_symbols tries with the bounds per group (see there)
_FEW = 8  # values a numeric bank finds the cells of one by one (np.searchsorted each)
_WINDOW = 2048  # rows per vectorised step of update_many (bounded memory, cache-friendly)
_BLOCK = 16
"""Values per block of :func:`count_quiet`'s bound (see there)."""


@dataclass
class _Tables:
    """What a detector derives from its reference, held once per process for every detector on
    the same reference (shards, banks and replays watching one profile share it)."""

    table: npt.NDArray[np.int32] | IntArray
    """Increments per symbol and CUSUM, fixed point (read-only; int32 when they fit, half the
    bytes of int64: the CUSUMs still sum in int64). Held in F order: each CUSUM's increments are
    contiguous, so the batch step gathers and sums along rows of ``table.T`` (see
    :meth:`SequentialDetector._advance`)."""
    reference: dict[str, Any]
    """The detector's reference attributes (arrays read-only), by name: one copy per reference."""
    per_value: tuple[Sequence[int], _Lanes | None] | None = None
    """The per-value path's largest increment per symbol (a memoryview over the array, which
    indexes to Python ints about as fast as a list) and its bounds per group of CUSUMs (None: the
    bank is one group), built on the first per-value step."""
    bounds: tuple[list[float], list[float]] | None = None
    """Numeric cell bounds (lo, hi) as lists for bisect, built on the first update() of a value."""
    edges: FloatArray | None = None
    """Numeric symbol edges: a value's symbol is the number of edges below it (one searchsorted
    per batch; see :meth:`NumericDetector._symbol_edges`). None when the reference has none."""
    edge_view: Sequence[float] | None = None
    """The edges as a sequence of Python floats (a memoryview: no copy), for bisect on a few values."""
    columns: npt.NDArray[np.int32] | IntArray = field(init=False)
    """``table.T``: one view for every detector on the reference (a view each is ~110 bytes)."""
    labels: dict[tuple[str, ...], list[str]] = field(default_factory=dict)
    """The detectors' CUSUM labels, one list per distinct set (never changed in place: a
    refinement assigns a new list), so the detectors on the reference share it."""
    thresholds: dict[bytes, IntArray] = field(default_factory=dict)
    """The detectors' calibrated thresholds (``_h``, read-only: a detector only ever assigns a
    new array), one array per distinct set, so every shard's detector on the reference shares it."""

    def __post_init__(self) -> None:
        self.columns = self.table.T


@dataclass(frozen=True)
class _Lanes:
    """The per-value bound kept apart for up to :data:`_LANES` groups of similar CUSUMs (see
    :meth:`SequentialDetector._group_key`; groups past the last share it, padding groups never
    rise): one bank-wide bound takes the largest increment of every design, so it reaches the
    nearest threshold far sooner than each group's own does."""

    reach: Sequence[int]
    """Each group's largest increment per symbol, symbol by symbol: group ``g``'s for symbol ``s``
    at ``_LANES * s + g`` (a memoryview over ``table``). A symbol's bounds share a cache line: a
    worker with 1,000 models holds 25,000 references, whose tables are rarely in cache when a
    quiet model's few values come (a row per group cost a miss per group and value)."""
    table: IntArray
    """The same as one (symbol, group) array, for a batch's bound (:meth:`defer_symbols`)."""
    order: IntArray
    """The CUSUMs sorted by group."""
    starts: IntArray
    """Where each group begins in ``order``."""

    def slacks(self, margin: IntArray) -> list[int]:
        """Each group's smallest distance ``h_j - S_j`` to a threshold (padding groups: never)."""
        found: list[int] = np.minimum.reduceat(margin.take(self.order), self.starts).tolist()
        return found + [_NEVER] * (_LANES - len(found))


_TABLES: weakref.WeakValueDictionary[bytes, _Tables] = weakref.WeakValueDictionary()


@dataclass(frozen=True)
class Alarm:
    """One alarm of a detector."""

    index: int
    """0-based position of the alarming observation among all those the detector has counted
    (skipped None/NaN values excluded), over every call since it was built."""
    component: str
    """Which CUSUM fired, e.g. ``"mean+0.4"``, ``"scale*1.5"``, ``"category 'red' x2"``."""
    statistic: float
    """That CUSUM's statistic at the alarm, in nats (log-likelihood ratio)."""
    threshold: float
    """Its threshold, in nats."""
    offset: int = field(default=0, compare=False)
    """0-based position of the alarming observation in the batch given to the call that raised it
    (``xs[offset]`` for ``update_many(xs)``, skipped values included; 0 for ``update``). Not part
    of an alarm's identity: the same alarm seen through other batches has another offset."""


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


class SequentialDetector:
    """A bank of CUSUMs watching one stream, calibrated to a false-alarm rate: the detectors' base.

    The River-style surface is :meth:`update` (one value: the :class:`Alarm` it raises, or None),
    :meth:`update_many` (a batch, in order: its alarms), :meth:`reset` (clear the evidence) and
    :attr:`statistic` (``max_j S_j / h_j``: 1 is the alarm level). After an alarm every CUSUM
    restarts from 0, so false alarms form a renewal process with mean gap ``arl``. Build one with a
    subclass's constructor (:class:`NumericDetector`, :class:`CategoricalDetector`,
    :class:`BinaryDetector`); ``update_many`` and ``update`` per value give bit-identical alarms
    and state however a stream is chunked.

    Parameters
    ----------
    arl
        Average run length: the mean number of no-drift values between two false alarms (given to
        the constructors; the thresholds are calibrated from it and the reference).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(5)
    >>> det: SequentialDetector = NumericDetector.from_reference(rng.normal(size=10_000), arl=1e6)
    >>> det.update_many(rng.normal(size=5_000))
    []
    >>> alarm = det.update_many(rng.normal(1.0, 1.0, size=1_000))[0]   # the mean moves by 1 sd
    >>> alarm.offset < 100, alarm.index == 5_000 + alarm.offset   # in the batch / in the stream
    (True, True)
    >>> det.reset(); det.statistic, det.n
    (0.0, 6000)

    References
    ----------
    Page (1954), Continuous inspection schemes. Lorden (1971), Procedures for reacting to a change
    in distribution. Siegmund (1985), Sequential Analysis. Gandy & Kvaloy (2013), Guaranteed
    conditional performance of control charts via bootstrap methods. docs/detectors.md has the
    method and its measured accuracy.
    """

    kind: str = ""
    arl: float
    n: int
    """Values counted so far (skipped ones, None/NaN, are not)."""
    alarms_total: int
    _labels: list[str]
    _h: IntArray
    _sums: IntArray  # each CUSUM's statistic, fixed point, as of the values before _pending
    _table: npt.NDArray[np.int32] | IntArray  # see _Tables.table
    _columns: npt.NDArray[np.int32] | IntArray  # _table.T, C-contiguous: one row per CUSUM
    # The per-value fast path defers the vectorised CUSUM step: symbols wait in _pending while
    # _rise stays below _slack, the smallest distance of a CUSUM to its threshold. _rise is a
    # CUSUM of the largest increment of any CUSUM (_reach per symbol), and S_j <= S_j(0) + _rise
    # for every j (by induction: S_j + z_j <= S_j(0) + _rise + max_k z_k), so until then no CUSUM
    # can alarm and deferring changes nothing. At the bound, at _due (a refinement point, or
    # _MAX_PENDING values) and whenever the state is read, the symbols run the exact batch path.
    # A bank whose designs rise on different symbols (a numeric bank: mean+ on high scores,
    # mean- on low, scale*1.5 in the tails, scale*0.67 in the centre) keeps that bound per group
    # of similar CUSUMs instead (_lanes): _rises[g] is a CUSUM of the group's largest increment
    # and bounds S_j - S_j(0) for each j in the group by the same induction, _slacks[g] the
    # group's smallest distance to a threshold. The bank-wide bound's largest increment is the
    # largest of every design's and reaches the nearest threshold every ~17 no-drift values;
    # the groups' every ~60, so a quarter of the settles, for 4 additions a value instead of 1.
    _pending: list[int]
    _rise: int
    _slack: int
    _due: int
    _reach: Sequence[int] | None  # None until the first per-value call (see _Tables.per_value)
    _lanes: _Lanes | None  # the bounds per group (None: one group, or no per-value call yet)
    _rises: list[int]  # per group, as _rise (with _lanes only)
    _slacks: list[int]  # per group, as _slack (with _lanes; empty until a per-value step needs it)
    _refine_at: int = _NEVER  # n at which the subclass's _refine runs (BinaryDetector)
    _REFERENCE: tuple[str, ...] = ()
    """Attributes that are a function of the reference only: shared through :class:`_Tables`."""

    def _setup(self, arl: float, labels: list[str], thresholds: FloatArray) -> None:
        self.arl = float(arl)
        self.n = 0
        self.alarms_total = 0
        self._labels = labels
        self._h = np.ceil(np.asarray(thresholds) * _ONE).astype(np.int64)
        self._sums = np.zeros(len(labels), dtype=np.int64)
        self._derive()

    def _derive(self) -> None:
        """Everything rebuilt from the stored arrays (after building, a refinement, or unpickling).

        The lookup tables and the reference attributes (:attr:`_REFERENCE`) are shared by every
        live detector built on the same arrays (one reference watched by many shards, banks or
        replays holds them once); per detector remain the CUSUM statistics and counters."""
        digest = hashlib.blake2b(type(self).__name__.encode(), digest_size=16)
        for part in self._table_inputs():
            digest.update(np.ascontiguousarray(part).tobytes())
            digest.update(b"|")
        key = digest.digest()
        tables = _TABLES.get(key)
        if tables is None:
            table = self._build_table()
            if table.size and int(np.abs(table).max()) < 2**31:
                table = table.astype(np.int32)
            table = np.asfortranarray(table)
            table.flags.writeable = False
            reference = {name: _frozen(getattr(self, name)) for name in self._REFERENCE}
            tables = _Tables(table, reference)
            _TABLES[key] = tables
        self._tables = tables  # keeps the shared entry alive as long as this detector
        self.__dict__.update(tables.reference)
        labels = tables.labels.get(tuple(self._labels))
        if labels is None:
            labels = [sys.intern(label) for label in self._labels]
            tables.labels[tuple(labels)] = labels
        self._labels = labels
        self._h = tables.thresholds.setdefault(self._h.tobytes(), self._h)
        self._h.flags.writeable = False
        self._table = tables.table
        self._columns = tables.columns
        self._reach, self._lanes = tables.per_value if tables.per_value is not None else (None, None)
        # one list each for the detector's life, changed in place (see _arm_lanes)
        self._pending, self._rises, self._slacks = [], [], []
        self._arm()

    def _per_value(self) -> Sequence[int]:
        """The per-value path's sequences, built once per reference on first use; the reach.
        Called only with nothing pending (a detector calls it before its first per-value step),
        so the groups' bounds start here as at a settle."""
        tables = self._tables
        if tables.per_value is None:
            reach = self._table.max(axis=1)
            reach.flags.writeable = False
            tables.per_value = (_view(reach), self._build_lanes())
        self._reach, self._lanes = tables.per_value
        self._arm_lanes()
        return self._reach

    def _group_keys(self) -> list[object]:
        """Per CUSUM, the group of similar CUSUMs whose bound it shares on the per-value path
        (groups past :data:`_LANES` share the last lane): one group unless a subclass's designs
        rise on different symbols."""
        return [0] * len(self._labels)

    def _build_lanes(self) -> _Lanes | None:
        layout = _lane_layout(tuple(self._group_keys()))
        if layout is None:
            return None
        order, starts = layout
        # each group's largest increment per symbol, over its CUSUMs' contiguous rows (~10 us a
        # reference; reduceat took ~100: a worker restarting with 1,000 models builds 25,000)
        rows = self._columns.take(order, axis=0)
        table = np.zeros((self._table.shape[0], _LANES), dtype=self._table.dtype)
        for g, (begin, end) in enumerate(itertools.pairwise([*starts.tolist(), order.size])):
            table[:, g] = rows[begin:end].max(axis=0)
        table.flags.writeable = False
        return _Lanes(_view(table.reshape(-1)), table, order, starts)

    def _arm_lanes(self) -> None:
        # the groups' slacks wait for a per-value step (_lane_slacks): a batch path that re-arms
        # after each call (run_symbols) would find them for nothing. The lists change in place:
        # a new one each settle is a young object the cyclic collector scans (1,000 models keep
        # 100,000 detectors; a worker's collections found ~50,000 such lists at a time)
        self._rises[:] = _NO_RISE if self._lanes is not None else ()
        self._slacks.clear()

    def _lane_slacks(self) -> list[int]:
        """Each group's smallest distance to a threshold since the settle (found on first use)."""
        if not self._slacks:
            assert self._lanes is not None
            self._slacks[:] = self._lanes.slacks(self._h - self._sums)
        return self._slacks

    def _table_inputs(self) -> list[npt.NDArray[Any]]:
        """The arrays the increment table is a function of."""
        raise NotImplementedError

    def _arm(self, slack: int | None = None) -> None:
        """The per-value bound from scratch; ``slack``: ``min(h - S)``, if the caller has it."""
        self._rise = 0
        self._slack = int((self._h - self._sums).min()) if slack is None else slack
        self._due = min(self._refine_at, self.n + _MAX_PENDING)
        self._arm_lanes()

    # subclasses: symbols of a batch (skipped values dropped) with the batch positions they came
    # from (None: nothing skipped), of one value (None = skipped), the increment table
    def _symbols_at(self, xs: Any) -> tuple[IntArray, IntArray | None]:
        raise NotImplementedError

    def _symbols(self, xs: Any) -> IntArray:
        """The symbols of a batch, skipped values dropped."""
        return self._symbols_at(xs)[0]

    def batch_edges(self) -> FloatArray | None:
        """The sorted edges whose count below a valid number (not NaN) is its symbol, as
        :meth:`_symbols` finds it, so several detectors' batches can be searched in one call
        (``_watch.c`` ``cells_rows``); None where this detector finds symbols otherwise."""
        return None

    def _symbol_list(self, xs: Any) -> tuple[list[int], list[int] | None]:
        """:meth:`_symbols_at` as lists, for a few values (a subclass finds them without arrays)."""
        syms, at = self._symbols_at(xs)
        return syms.tolist(), None if at is None else at.tolist()

    def _symbol(self, x: Any) -> int | None:
        raise NotImplementedError

    def _build_table(self) -> IntArray:
        raise NotImplementedError

    def _tally(self, syms: IntArray) -> None:
        """See symbols as they are counted (a refining subclass keeps its block statistics)."""

    def _refine(self) -> None:
        """Called when ``n`` reaches ``_refine_at`` (never, unless a subclass sets it)."""
        self._refine_at = _NEVER

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

    @property
    def _S(self) -> IntArray:
        """Each CUSUM's statistic now, in fixed point (``2**24`` per nat)."""
        self._flush()
        return self._sums

    def reset(self) -> None:
        """Every CUSUM back to 0 (thresholds, ``n`` and ``alarms_total`` are kept)."""
        self._flush()
        self._sums = np.zeros_like(self._sums)
        self._arm()

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
        self._flush()
        self._h = np.ceil(base * np.maximum(factors, 1.0)).astype(np.int64)
        self._arm()

    @property
    def thresholds_fixed(self) -> IntArray:
        """The thresholds in fixed point (``2**24`` per nat), a copy."""
        return self._h.copy()

    def update(self, x: Any) -> Alarm | None:
        """Count one observation (None/NaN are skipped); the alarm it raises, if any."""
        sym = self._symbol(x)
        if sym is None:
            return None
        reach = self._reach or self._per_value()
        self.n += 1
        self._pending.append(sym)
        if self._lanes is not None:
            return self._step_lanes(sym, self._lanes.reach)
        rise = self._rise + reach[sym]
        self._rise = rise if rise > 0 else 0
        if rise < self._slack and self.n < self._due:
            return None  # no CUSUM can have reached its threshold: the step can wait
        return self._settle()

    def update_symbol(self, sym: int) -> Alarm | None:
        """Count one already-mapped symbol; the alarm it raises, if any."""
        reach = self._reach or self._per_value()
        self.n += 1
        self._pending.append(sym)
        if self._lanes is not None:
            return self._step_lanes(sym, self._lanes.reach)
        rise = self._rise + reach[sym]
        self._rise = rise if rise > 0 else 0
        if rise < self._slack and self.n < self._due:
            return None
        return self._settle()

    def _step_lanes(self, sym: int, reach: Sequence[int]) -> Alarm | None:
        """update_symbol's bound per group (the symbol is counted and pending already)."""
        k = sym * _LANES  # _LANES (4) groups
        rises = self._rises
        a, b, c, d = rises
        a += reach[k]
        if a < 0:
            a = 0
        b += reach[k + 1]
        if b < 0:
            b = 0
        c += reach[k + 2]
        if c < 0:
            c = 0
        d += reach[k + 3]
        if d < 0:
            d = 0
        rises[0] = a  # in place (see _arm_lanes)
        rises[1] = b
        rises[2] = c
        rises[3] = d
        sa, sb, sc, sd = self._slacks or self._lane_slacks()
        if a < sa and b < sb and c < sc and d < sd and self.n < self._due:
            return None
        return self._settle()

    def defer_each(self, syms: Sequence[int]) -> int:
        """Count the longest head of ``syms`` (already-mapped symbols, a short list) that
        :meth:`update_symbol` would only defer, with the same bound step for step (so the state
        is the one those calls leave); how many were counted. The caller hands the rest to
        :meth:`update_symbol`: the first of them reaches the bound and settles.

        A quiet model hands its monitors a few values per batch: this loop on Python ints costs
        a fraction of a microsecond a value, a call per value several."""
        reach = self._reach or self._per_value()
        room = self._due - self.n - 1  # update_symbol settles once n reaches _due
        counted = 0
        lanes = self._lanes
        if lanes is not None:  # the bound per group, as _step_lanes (inline: a call costs as
            # much as a value's step, and most calls hand one or two values)
            bound = lanes.reach
            a, b, c, d = self._rises
            sa, sb, sc, sd = self._slacks or self._lane_slacks()
            for sym in syms:
                k = sym * _LANES  # _LANES (4) groups
                na = a + bound[k]
                if na < 0:
                    na = 0
                nb = b + bound[k + 1]
                if nb < 0:
                    nb = 0
                nc = c + bound[k + 2]
                if nc < 0:
                    nc = 0
                nd = d + bound[k + 3]
                if nd < 0:
                    nd = 0
                if na >= sa or nb >= sb or nc >= sc or nd >= sd or counted >= room:
                    break
                a, b, c, d = na, nb, nc, nd
                counted += 1
            if counted:
                rises = self._rises  # in place (see _arm_lanes)
                rises[0] = a
                rises[1] = b
                rises[2] = c
                rises[3] = d
        else:
            rise, slack = self._rise, self._slack
            for sym in syms:
                step = rise + reach[sym]
                if step < 0:
                    step = 0
                if step >= slack or counted >= room:
                    break
                rise = step
                counted += 1
            if counted:
                self._rise = rise
        if counted:
            self._pending.extend(syms if counted == len(syms) else syms[:counted])
            self.n += counted
        return counted

    def defer_symbols(self, syms: IntArray) -> bool:
        """Count already-mapped symbols as :meth:`update_symbol` would one by one when none of them
        can alarm, in one vectorised bound: every CUSUM rises by at most the sum of the positive
        largest increments, so while that stays below the slack they only wait in ``_pending``.
        False (nothing counted) when an alarm might be among them: run them instead.

        A model with little traffic hands its monitors a few values per batch; this costs a few
        microseconds where stepping the CUSUMs costs tens."""
        total = syms.size
        if self.n + total >= self._due:
            return False
        reach = np.asarray(self._reach or self._per_value())
        if self._lanes is not None:  # per group, as _step_lanes (a few Python ints: no arrays)
            if total > _LANES_DEFER_AT_MOST:
                # measured on a numeric bank (arl 2.5e7): at 48-64 values half of the batches
                # pass and waiting costs more than the step; at 96-120 none pass
                return False
            steps = self._lanes.table.take(syms, axis=0)
            np.maximum(steps, 0, out=steps)
            added = steps.sum(axis=0, dtype=np.int64).tolist()
            rises = [r + z for r, z in zip(self._rises, added, strict=True)]
            if any(r >= s for r, s in zip(rises, self._slacks or self._lane_slacks(), strict=True)):
                return False
            self._pending.extend(syms.tolist())
            self.n += total
            self._rises[:] = rises
            return True
        rise = self._rise + int(np.maximum(reach.take(syms), 0).sum(dtype=np.int64))
        if rise >= self._slack:
            return False
        self._pending.extend(syms.tolist())
        self.n += total
        self._rise = rise  # a bound on each CUSUM's rise since the last settle, as per value
        return True

    def _settle(self) -> Alarm | None:
        """Run the pending symbols; only the last can alarm (the bound held before it)."""
        syms = np.array(self._pending, dtype=np.int64)
        self._pending.clear()
        # S_T = C_T - min(-S_0, min_t C_t) over the cumulative sums C of the increments: no
        # running minimum per value is needed, as no earlier value can have alarmed
        c = self._columns.take(syms, axis=1).cumsum(axis=1, dtype=np.int64)
        sums = c[:, -1] - np.minimum(c.min(axis=1), -self._sums)
        slack = int((self._h - sums).min())  # the alarm test and the next bound in one pass
        alarm = None
        if slack <= 0:
            alarm = self._alarm(self.n - 1, 0, sums)
            sums = np.zeros_like(sums)
            slack = int(self._h.min())
        self._sums = sums
        self._tally(syms)
        self._rise, self._slack, self._due = 0, slack, min(self._refine_at, self.n + _MAX_PENDING)
        if self._lanes is not None:
            self._arm_lanes()
        if self.n == self._refine_at:
            self._refine()
        return alarm

    def _flush(self) -> None:
        if self._pending:
            self._settle()

    def update_many(self, xs: Any) -> list[Alarm]:
        """Count a batch of observations in order; its alarms, usually none.

        An alarm's ``offset`` is its position in ``xs`` (skipped values included), its ``index``
        its position among all the values this detector has counted.
        """
        syms, at = self._symbols_at(xs)
        alarms = self.run_symbols(syms)[0]
        if at is None or not alarms:
            return alarms
        return [replace(a, offset=int(at[a.offset])) for a in alarms]

    def run_symbols(self, syms: IntArray, first_only: bool = False) -> tuple[list[Alarm], int]:
        """Count already-mapped symbols in order: (alarms, symbols counted).

        An alarm's ``offset`` is its position in ``syms``. With ``first_only`` counting stops
        right after the first alarm (its renewal included), so a caller can hand the rest of the
        batch to something else; bit-identical to counting those symbols one by one.
        """
        self._flush()
        alarms: list[Alarm] = []
        done, total = 0, syms.size
        while done < total:
            stop = min(total, done + self._refine_at - self.n)
            got, used = self._advance(syms[done:stop], self.n, first_only)
            alarms.extend(replace(a, offset=a.offset + done) for a in got)
            self.n += used
            done += used
            if self.n == self._refine_at:
                self._refine()
            if first_only and got:
                break
        self._arm()
        return alarms, done

    def _advance(self, syms: IntArray, start: int, first_only: bool) -> tuple[list[Alarm], int]:
        """The CUSUM step over ``syms`` (the first counted as value ``start``); ``n`` is the caller's.

        Vectorised per window of values: ``S_t = C_t - min(-S_0, min_{s<=t} C_s)`` over the
        cumulative sums ``C``, looping only over alarms (after one at ``a``, ``-S_0`` becomes
        ``C_a``: the running minimum restarts there). The arrays are (CUSUM, value): each CUSUM's
        sums and running minimum run along a contiguous row, half the time of the (value, CUSUM)
        layout's strided columns on 10-30 CUSUMs; the integers are the same.
        """
        total = syms.size
        alarms: list[Alarm] = []
        columns, h = self._columns, self._h
        s0 = self._sums
        for pos in range(0, total, _WINDOW):
            end = min(total, pos + _WINDOW)
            # c[:, i] is C of observation pos + i; int64 sums of the (maybe int32) increments
            c = columns.take(syms[pos:end], axis=1).cumsum(axis=1, dtype=np.int64)
            floor = -s0  # every S_t is C_t less the running minimum of C from this floor
            base = 0  # the first value after the last alarm (or of the window)
            while True:
                seg = c[:, base:]
                path = np.minimum.accumulate(seg, axis=1)
                np.minimum(path, floor[:, None], out=path)
                np.subtract(seg, path, out=path)  # S, CUSUM by value
                if not (path.max(axis=1) >= h).any():
                    s0 = path[:, -1].copy()
                    break
                t = int((path >= h[:, None]).any(axis=0).argmax())
                alarms.append(self._alarm(start, pos + base + t, path[:, t]))
                floor = c[:, base + t]  # reset: S = 0 there, so later values count from C there
                base += t + 1
                if first_only:
                    self._sums = np.zeros_like(s0)
                    self._tally(syms[: pos + base])
                    return alarms, pos + base
                if base == end - pos:
                    s0 = np.zeros_like(s0)
                    break
        self._sums = s0
        self._tally(syms)
        return alarms, total

    def _alarm(self, start: int, offset: int, s: IntArray) -> Alarm:
        self.alarms_total += 1
        ratio = s / self._h
        j = int(ratio.argmax())
        return Alarm(start + offset, self._labels[j], int(s[j]) / _ONE, int(self._h[j]) / _ONE, offset)

    _DERIVED: tuple[str, ...] = ("_tables", "_table", "_columns", "_reach", "_pending", "_rise", "_slack",
                                 "_due", "_lanes", "_rises", "_slacks")

    def __getstate__(self) -> dict[str, Any]:
        self._flush()
        # derived state is rebuilt bit-identically from the small arrays on load
        return {k: v for k, v in self.__dict__.items() if k not in self._DERIVED}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_S" in state:  # a checkpoint from before the per-value fast path
            state = dict(state)
            state["_sums"] = state.pop("_S")
        set_state(self, state)
        self._derive()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(arl={self.arl:g}, cusums={len(self._labels)}, n={self.n}, "
                f"alarms_total={self.alarms_total}, statistic={self.statistic:.3f})")


_Bank = SequentialDetector  # the class's name before it was public (code that imported it)


def count_quiet(detectors: Sequence[SequentialDetector], symbols: Sequence[IntArray]) -> list[bool]:
    """Count each detector's already-mapped symbols, as :meth:`~SequentialDetector.run_symbols`
    would, where none of them raises an alarm; per detector, whether it did (False: nothing
    counted, an alarm may be among them or a refinement point: run them instead).

    A model's batch reaches a bank of ~25 detectors with the same few hundred values each: one
    step over all of their CUSUMs at once (a row each) spares each detector its dozen numpy calls,
    and most rows need no running minimum. ``S_t = C_t - m_t`` with ``m_t = min(-S_0, min_{s<=t}
    C_s)`` over the cumulative sums ``C``; within a block of :data:`_BLOCK` values ``m_t`` is at
    least ``P_b``, the minimum up to the block's end, so ``S_t <= max_b C - P_b``: a row whose
    blocks all stay below its threshold cannot alarm, and its ``S`` at the end is ``C_T - P_last``.
    Only the other rows (~10 % of a quiet bank's) take the running minimum, numpy's costliest
    step per value (~3.5-6.5 ns against ~1 for a block's min and max). Bit-identical: the same
    integers, and a detector is changed only when no alarm is among its symbols. Where the C watch
    is built (:mod:`~driftline.operators.watch_native`) each detector's CUSUMs run in one C loop
    instead, value by value with an early stop (~25 ns a value of an 8-row detector against ~180
    for these steps); the steps above are its reference.

    >>> import pickle
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> a, b = (NumericDetector.from_reference(rng.normal(size=5_000), arl=1e5) for _ in range(2))
    >>> same_as_a = pickle.loads(pickle.dumps(a))
    >>> quiet, shifted = rng.normal(size=300), rng.normal(3.0, 1.0, size=300)
    >>> count_quiet([a, b], [a._symbols(quiet), b._symbols(shifted)])
    [True, False]
    >>> same_as_a.update_many(quiet), same_as_a.n == a.n, same_as_a._sums.tolist() == a._sums.tolist(), b.n
    ([], True, True, 0)
    """
    counted = [False] * len(symbols)
    by_size: dict[int, list[int]] = {}
    fast = watch_native.NATIVE
    for i, (det, syms) in enumerate(zip(detectors, symbols, strict=True)):
        det._flush()  # as run_symbols: the pending values first
        if syms.size and det.n + syms.size < det._refine_at:
            if fast is not None:  # the same CUSUMs in one C loop a detector (~8x cheaper a value)
                after = np.empty_like(det._sums)
                slack = fast.quiet_sums(det._columns, syms, det._h, det._sums, after)
                if slack > 0:
                    _counted(det, syms, after, slack)
                    counted[i] = True
                if slack >= 0:
                    continue
            by_size.setdefault(syms.size, []).append(i)
    for members in by_size.values():
        dets = [detectors[i] for i in members]
        sums, slacks = _quiet_sums(dets, [symbols[i] for i in members])
        for i, det, own, slack in zip(members, dets, sums, slacks, strict=True):
            if own is not None:
                _counted(det, symbols[i], own, slack)
                counted[i] = True
    return counted


def _counted(det: SequentialDetector, syms: IntArray, sums: IntArray, slack: int) -> None:
    """A detector's state after counting ``syms`` that raised no alarm: its CUSUMs' ``S`` then
    ``sums``, ``slack`` their least distance to a threshold."""
    det._sums = sums
    det._tally(syms)
    det.n += syms.size
    det._arm(slack)


def _quiet_sums(dets: Sequence[SequentialDetector],
                symbols: Sequence[IntArray]) -> tuple[list[IntArray | None], list[int]]:
    """:func:`count_quiet`'s step for detectors given equally many symbols: per detector its
    CUSUMs' ``S`` after them and ``min(h - S)``, or None (and 0) if one of them may alarm."""
    sizes = [det._h.size for det in dets]
    starts = np.cumsum([0, *sizes[:-1]])
    h = np.concatenate([det._h for det in dets])
    s = np.concatenate([det._sums for det in dets])
    alarmed = np.zeros(h.size, dtype=np.bool_)
    narrow = all(det._columns.dtype == np.int32 for det in dets)
    total = symbols[0].size
    for pos in range(0, total, _WINDOW):
        end = min(total, pos + _WINDOW)
        steps = np.empty((h.size, end - pos), dtype=np.int32 if narrow else np.int64)
        for det, syms, lo, size in zip(dets, symbols, starts.tolist(), sizes, strict=True):
            if narrow:
                det._columns.take(syms[pos:end], axis=1, out=steps[lo : lo + size])
            else:
                steps[lo : lo + size] = det._columns.take(syms[pos:end], axis=1)
        c = steps.cumsum(axis=1, dtype=np.int64)
        blocks = np.arange(0, end - pos, _BLOCK)
        prefix = np.minimum.accumulate(np.minimum.reduceat(c, blocks, axis=1), axis=1)
        np.minimum(prefix, -s[:, None], out=prefix)  # P_b
        bound = np.maximum.reduceat(c, blocks, axis=1)
        np.subtract(bound, prefix, out=bound)
        near = np.flatnonzero((bound >= h[:, None]).any(axis=1))
        if near.size:  # these rows value by value, as SequentialDetector._advance
            part = c[near]
            path = np.minimum.accumulate(part, axis=1)
            np.minimum(path, -s[near, None], out=path)
            np.subtract(part, path, out=path)
            alarmed[near[path.max(axis=1) >= h[near]]] = True
        s = c[:, -1] - prefix[:, -1]
    quiet = ~np.logical_or.reduceat(alarmed, starts)
    slacks = np.minimum.reduceat(h - s, starts).tolist()
    flags = quiet.tolist()
    out: list[IntArray | None] = [s[lo : lo + size].copy() if ok else None
                                  for lo, size, ok in zip(starts.tolist(), sizes, flags, strict=True)]
    return out, [slack if ok else 0 for slack, ok in zip(slacks, flags, strict=True)]


@lru_cache(maxsize=1024)
def _lane_layout(keys: tuple[object, ...]) -> tuple[IntArray, IntArray] | None:
    """The CUSUMs sorted by group (groups past :data:`_LANES` in the last) and where each group
    begins, for a bank whose CUSUMs have these group keys; None for a bank of one group. Banks
    share a few layouts (the designs a reference size keeps), so they are found once."""
    first = {key: min(g, _LANES - 1) for g, key in enumerate(dict.fromkeys(keys))}
    group = np.array([first[key] for key in keys], dtype=np.int64)
    groups = int(group.max()) + 1
    if groups == 1:
        return None
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(groups))
    order.flags.writeable = starts.flags.writeable = False
    return order, starts


def set_state(obj: object, state: dict[str, Any]) -> None:
    """``obj``'s attributes from an unpickled ``state``, held compactly: set one by one, so the
    instance dict shares its keys with the class's other instances (~280 bytes for a detector's
    24 attributes, ~830 as ``__dict__.update`` leaves it), and each array a copy owning its data
    (protocol 5, a checkpoint's, loads an array as a view on a buffer of its own: ~650 bytes for a
    bank's 6 thresholds, ~170 copied)."""
    for name, value in state.items():
        if isinstance(value, np.ndarray) and value.base is not None:
            value = value.copy()
        setattr(obj, name, value)


def _view(array: npt.NDArray[Any]) -> Sequence[Any]:
    """A read-only array as a sequence of Python numbers (for bisect and per-value indexing)."""
    return memoryview(array.data).toreadonly()


def _frozen(value: Any) -> Any:
    """A reference attribute as the shared copy holds it: arrays read-only (own data, no view)."""
    if isinstance(value, np.ndarray):
        value = value.copy() if value.base is not None or value.flags.writeable else value
        value.flags.writeable = False
    return value


def _quantise(z: FloatArray) -> IntArray:
    return np.rint(z * _ONE).astype(np.int64)


# -- numeric -------------------------------------------------------------------------------------


class NumericDetector(SequentialDetector):
    """Mean and scale CUSUMs on the normal scores of a numeric feature.

    Values are anything ``float()`` accepts; None and NaN are skipped (not counted), +-inf count as
    the most extreme scores.

    Parameters
    ----------
    arl
        Mean number of no-drift values between two false alarms.
    min_effect
        Indifference zone in reference sd of the normal score: mean shifts up to it (and sd
        factors up to ``1 +- min_effect``) keep the ARL.

    Examples
    --------
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

    References
    ----------
    Page (1954); Lorden (1971); Jones, Champ & Rigdon (2004) on estimated parameters.
    docs/detectors.md: the normal score, the design grid and the reference-uncertainty guard.
    """

    kind = "numeric"
    _lo: FloatArray
    _hi: FloatArray
    _u: FloatArray
    _coef: FloatArray
    _lo_list: Sequence[float] | None
    _hi_list: Sequence[float] | None
    _edges: FloatArray  # see _symbol_edges (shared through _Tables)
    _REFERENCE = ("_lo", "_hi", "_u", "_coef")

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
            IncrementLaw(z, w, near_normal=continuous and label.startswith("mean"))
            for z, label in zip(cal, labels, strict=True)
        ]
        det = cls.__new__(cls)
        det._lo, det._hi, det._u = lo, hi, u
        det._coef = np.array(coef, dtype=np.float64)
        det._setup(arl, labels, calibrate_thresholds(nulls, arl))
        return det

    def _build_table(self) -> IntArray:
        a, b, c = self._coef[:, 0], self._coef[:, 1], self._coef[:, 2]
        u = self._u[:, None]
        return _quantise(((a * u) * u + b * u) + c)

    def _table_inputs(self) -> list[npt.NDArray[Any]]:
        return [self._lo, self._hi, self._u, self._coef]

    def _group_keys(self) -> list[object]:
        # the mean shifts of one sign rise on the same side of the scores, each scale design on
        # its own part (the tails, the centre): settles every ~60 no-drift values, not ~24
        return [label[:5] if label.startswith("mean") else label for label in self._labels]

    def _derive(self) -> None:
        super()._derive()
        tables = self._tables
        bounds = tables.bounds
        self._lo_list, self._hi_list = bounds if bounds is not None else (None, None)
        if tables.edges is None:
            tables.edges = _symbol_edges(self._lo, self._hi)
        self._edges = tables.edges

    def _bounds(self) -> None:
        """The cell bounds as lists for bisect, once per reference, on the first update() itself:
        bisect reads ~12 bounds per value and a list hands back its floats where a memoryview
        builds each (0.79 vs 1.21 us per update()). The pipeline finds symbols in batches and
        never builds them (~70 KB a reference)."""
        tables = self._tables
        if tables.bounds is None:
            tables.bounds = (self._lo.tolist(), self._hi.tolist())
        self._lo_list, self._hi_list = tables.bounds

    def _symbol_list(self, xs: Any) -> tuple[list[int], list[int] | None]:
        # a quiet model's few floats: a bisect of the edges per value (~0.5 us) where one
        # searchsorted and its array round trip cost ~4 us a call; the same count of edges below.
        # One loop checks and finds them (a pass per check cost as much as the bisects)
        if type(xs) is list and len(xs) <= _FEW:
            view = self._tables.edge_view
            if view is None and self._edges.size:
                view = self._tables.edge_view = _view(self._edges)
            if view is not None:
                syms: list[int] = []
                for v in xs:
                    if type(v) is not float or v != v:  # not a float, or NaN (skipped)
                        break
                    syms.append(bisect_left(view, v))
                else:
                    return syms, None
                if set(map(type, xs)) <= _FLOAT:
                    kept = [i for i, v in enumerate(xs) if v == v]
                    return [bisect_left(view, xs[i]) for i in kept], kept
        return super()._symbol_list(xs)

    _DERIVED = (*SequentialDetector._DERIVED, "_lo_list", "_hi_list", "_edges")

    def batch_edges(self) -> FloatArray | None:
        return self._edges if self._edges.size else None

    def _symbols_at(self, xs: Any) -> tuple[IntArray, IntArray | None]:
        if type(xs) is list and len(xs) <= _FEW and set(map(type, xs)) <= _FLOAT:
            few: list[float] | None = xs  # already what float64's tolist() would give
        else:
            x = np.asarray(xs, dtype=np.float64).ravel()
            few = x.tolist() if x.size <= _FEW else None
        if few is not None and self._edges.size:  # a quiet model's few values: one search, no
            # array round trip (the vectorised steps cost ~10 us a call, a search per value ~2 us)
            if all(v == v for v in few):
                return self._edges.searchsorted(few, side="left"), None
            valid = [i for i, v in enumerate(few) if v == v]
            return (self._edges.searchsorted([few[i] for i in valid], side="left"),
                    np.array(valid, dtype=np.int64))
        if few is not None:
            hi, lo, cells = self._hi, self._lo, self._hi.size
            syms: list[int] = []
            kept: list[int] = []
            for i, v in enumerate(few):
                if v == v:
                    cell = int(hi.searchsorted(v))
                    syms.append(2 * cell + 1 if cell < cells and v >= lo[cell] else 2 * cell)
                    kept.append(i)
            found = np.array(syms, dtype=np.int64)
            return found, None if len(kept) == len(few) else np.array(kept, dtype=np.int64)
        at = None
        if np.isnan(x).any():
            at = np.flatnonzero(~np.isnan(x))
            x = x[at]
        if self._edges.size:  # one search of 2 * cells edges, no gather and compare
            fast = watch_native.NATIVE
            if fast is not None:  # branchless: ~4x cheaper than numpy's on values in random order
                found = np.empty(x.size, dtype=np.int64)
                if fast.cells(self._edges, x, found):
                    return found, at
            return self._edges.searchsorted(x, side="left"), at
        j = np.searchsorted(self._hi, x, side="left")
        inside = (j < self._hi.size) & (x >= self._lo[np.minimum(j, self._hi.size - 1)])
        return (2 * j + inside).astype(np.int64), at

    def _symbol(self, x: Any) -> int | None:
        if x is None:
            return None
        v = float(x)
        if v != v:
            return None
        if self._hi_list is None:
            self._bounds()
        hi, lo = self._hi_list, self._lo_list
        assert hi is not None and lo is not None
        j = bisect_left(hi, v)  # np.searchsorted(side="left") per value: ~10x dearer
        return 2 * j + 1 if j < len(hi) and v >= lo[j] else 2 * j


def _symbol_edges(lo: FloatArray, hi: FloatArray) -> FloatArray:
    """Edges ``e`` such that a value's symbol is ``#{e < x}``: ``2 j + 1`` inside cell ``j``
    (``lo[j] <= x <= hi[j]``, the first cell whose ``hi`` is not below ``x``), ``2 j`` in the gap
    before it, the same as searching ``hi`` then comparing with ``lo``.

    The symbol is ``#{hi < x} + #{lo* <= x}`` with ``lo*[j] = max(lo[j], next float above
    hi[j-1])`` (a bound shared with the previous cell, ``hi[j-1] == lo[j]``, counts for that cell
    only), and ``lo* <= x`` is ``prev(lo*) < x`` for floats, so the edges are ``hi`` and
    ``prev(lo*)`` interleaved, which is sorted. Empty (search ``hi``, then compare) where that
    does not hold: a cell ``[-inf, ...]``, as ``prev(-inf) < -inf`` is false, or unsorted bounds.

    >>> lo, hi = np.array([0.0, 1.0, 3.0]), np.array([1.0, 2.0, 3.0])
    >>> edges = _symbol_edges(lo, hi)
    >>> edges.searchsorted([-1.0, 0.0, 1.0, 1.5, 2.5, 3.0, 4.0]).tolist()
    [0, 1, 1, 3, 4, 5, 6]
    """
    if not lo.size or not lo[0] > -math.inf:
        return np.empty(0)
    start = lo.copy()
    start[1:] = np.maximum(lo[1:], np.nextafter(hi[:-1], math.inf))
    edges = np.empty(2 * lo.size)
    edges[0::2] = np.nextafter(start, -math.inf)
    edges[1::2] = hi
    if not bool((edges[1:] >= edges[:-1]).all()):
        return np.empty(0)
    edges.flags.writeable = False
    return edges


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


class CategoricalDetector(SequentialDetector):
    """Bernoulli CUSUMs on each category's indicator (rarer and more frequent), "other" included.

    Parameters
    ----------
    arl
        Mean number of no-drift values between two false alarms.
    min_psi
        Indifference zone: a category's share may move until its indicator's PSI reaches it.

    Examples
    --------
    >>> det = CategoricalDetector.from_counts(["red", "blue"], [600, 390, 10], arl=1e5)
    >>> det.components[:4]
    ["category 'red' x1.5", "category 'red' x0.5", "category 'blue' x1.5", "category 'blue' x0.5"]
    >>> det.update_many(["red", "blue"] * 500)
    []
    >>> alarm = next(a for _ in range(100) if (a := det.update("green")))
    >>> alarm.component
    "category '__other__' x4"

    References
    ----------
    Page (1954); Wilson (1927) for the rates' confidence bounds. docs/detectors.md has the method.
    """

    kind = "categorical"
    categories: list[str]
    reference_shares: FloatArray
    """Each category's share of the reference, "other" last."""
    _index: dict[str, int]
    _a: FloatArray
    _b: FloatArray
    _target: IntArray
    _REFERENCE = ("categories", "reference_shares", "_index", "_a", "_b", "_target")

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
        nulls: list[IncrementLaw] = []
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
                nulls.append(IncrementLaw(np.array([on, off]), np.array([p0, 1.0 - p0])))
        if not labels:
            raise ValueError("no category change can be designed from these counts")
        det = cls.__new__(cls)
        det.categories = categories
        det.reference_shares = c / n
        det._index = {name: k for k, name in enumerate(categories)}
        det._a, det._b = np.array(a), np.array(b)
        det._target = np.array(target, dtype=np.int64)
        det._setup(arl, labels, calibrate_thresholds(nulls, arl))
        return det

    def _table_inputs(self) -> list[npt.NDArray[Any]]:
        # the names too: detectors share categories and their index, not only the table
        return [self._a, self._b, self._target, self.reference_shares, np.array([len(self.categories)]),
                np.frombuffer("\x00".join(self.categories).encode(), dtype=np.uint8)]

    def _group_keys(self) -> list[object]:
        # a category's designs rise on its own values only: the most frequent categories get a
        # lane each, the rarer share the last (8 categories: a settle every ~19 values, not ~8)
        own = set(np.argsort(-self.reference_shares, kind="stable")[: _LANES - 1].tolist())
        return [k if k in own else -1 for k in self._target.tolist()]

    def _build_table(self) -> IntArray:
        table = np.tile(_quantise(self._b), (len(self.categories) + 1, 1))
        table[self._target, np.arange(self._target.size)] = _quantise(self._a)
        return table

    def _symbols_at(self, xs: Any) -> tuple[IntArray, IntArray | None]:
        other = len(self.categories)
        get = self._index.get
        if type(xs) is list:
            fast = watch_native.NATIVE
            if fast is not None:  # a list of strings looked up in C (~3x cheaper)
                found = np.empty(len(xs), dtype=np.int64)
                if fast.codes(self._index, xs, other, found):
                    return found, None
            if set(map(type, xs)) <= _STR:  # the common batch: a string is its own key
                return np.fromiter(map(get, xs, repeat(other, len(xs))), dtype=np.int64, count=len(xs)), None
        syms = np.fromiter((-1 if _missing(v) else get(category_key(v), other) for v in _iter(xs)),
                           dtype=np.int64)
        if syms.size and syms.min() < 0:  # skipped values: keep where the others came from
            at = np.flatnonzero(syms >= 0)
            return syms[at], at
        return syms, None

    def _symbol_list(self, xs: Any) -> tuple[list[int], list[int] | None]:
        if type(xs) is list:  # a string is its own key (one loop checks and finds them)
            get, other = self._index.get, len(self.categories)
            syms: list[int] = []
            for x in xs:
                if type(x) is not str:
                    break
                syms.append(get(x, other))
            else:
                return syms, None
        return super()._symbol_list(xs)

    def _symbol(self, x: Any) -> int | None:
        if _missing(x):
            return None
        return self._index.get(category_key(x), len(self.categories))


class BinaryDetector(SequentialDetector):
    """Bernoulli CUSUMs for increases of an error rate (a stream of 0/1, 1 = error).

    Any non-zero value (``True``, 1) is an error; None and NaN are skipped.

    Parameters
    ----------
    arl
        Mean number of no-drift values between two false alarms.
    min_ratio
        Indifference zone: error rates up to ``min_ratio`` times the reference's keep the ARL.
    tighten
        With a reference *estimated* from a sample (``from_reference``, ``from_rate`` with
        ``n_reference``), let quiet stream values tighten the estimate: the designs start at the
        upper confidence bound of the rate, which a small reference puts far above the rate itself
        (a 1,000-value reference at 0.10: 0.12, so a rise to 0.15 looks a quarter as large as it
        is). The stream is read in blocks that double the pooled sample (the first as long as the
        reference); a block whose rate agrees with the pooled estimate (within
        :data:`BLOCK_AGREEMENT` standard errors of the difference) and whose alarms are no more
        than false alarms at ``arl`` explain (:data:`BLOCK_AGREEMENT` sd above their mean) joins
        it, and the bank is recalibrated at the pooled bound (rounded up to a 0.5 % grid, so
        detectors share calibrations and late blocks cost nothing). The design rate never rises above
        the reference's own :data:`CAP_KAPPA` standard-error bound, so a slow ramp that slips into
        the pooled sample moves it no further than a reference one standard error more unlucky
        than the guarantee region allows, while a reference that was that unlucky (its region
        misses the rate, 2 % of references) is corrected by the stream. Blocks end at fixed
        counts, so chunking still does not matter.

    Examples
    --------
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

    A 1,000-value reference tightened by quiet stream values:

    >>> small = BinaryDetector.from_reference(rng.random(1_000) < 0.1, arl=1e6)
    >>> round(small.design_rate, 2)
    0.12
    >>> small.update_many(rng.random(127_000) < 0.1), small.reference_n
    ([], 128000)
    >>> round(small.design_rate, 3)
    0.102

    References
    ----------
    Wilson (1927), Probable inference, the law of succession, and statistical inference.
    Jones, Champ & Rigdon (2004), The run length distribution of the CUSUM with estimated
    parameters. Bifet & Gavalda (2007), Learning from time-changing data with adaptive windowing
    (ADWIN, whose growing window is what tightening imitates).
    """

    kind = "binary"
    p0: float
    """The reference error rate (as given, or of the reference sample)."""
    design_rate: float
    """The rate the designs are built against: the rate's upper confidence bound (or ``min_ratio``
    times it), tightened as quiet stream values join the reference."""
    reference_n: int | None
    """Outcomes the reference estimate rests on (stream values joined included); None: exact."""
    _a: FloatArray
    _b: FloatArray
    _REFERENCE = ("_a", "_b")
    _errors: float = 0.0  # errors among the reference_n outcomes
    _min_ratio: float = 1.0
    _design_cap: float = 1.0  # the highest design rate tightening may reach
    _block_start: int = 0
    _block_errors: int = 0
    _block_alarms: int = 0

    @classmethod
    def from_reference(cls, values: Iterable[Any], *, arl: float = 1_000_000.0,
                       min_ratio: float = 1.0, tighten: bool = True) -> BinaryDetector:
        """From a reference 0/1 sample (None/NaN skipped); designs start at its Wilson upper bound,
        or at ``min_ratio`` times its rate if higher (the indifference zone)."""
        x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
        x = x[~np.isnan(x)].ravel()
        if not x.size:
            raise ValueError("a binary reference needs at least one value")
        errors = float(np.count_nonzero(x))
        return cls._build(errors / x.size, arl, int(x.size), min_ratio, tighten, errors)

    @classmethod
    def from_rate(cls, p0: float, *, arl: float = 1_000_000.0, n_reference: int | None = None,
                  min_ratio: float = 1.0, tighten: bool = True) -> BinaryDetector:
        """From a reference error rate ``0 < p0 < 1``: exact, or estimated from ``n_reference``
        outcomes (then designs start at its Wilson upper bound, as :meth:`from_reference`'s do,
        and ``tighten`` applies); with ``min_ratio > 1`` at least at ``min_ratio * p0``."""
        return cls._build(p0, arl, n_reference or None, min_ratio, tighten)

    @classmethod
    def _build(cls, p0: float, arl: float, n_reference: int | None, min_ratio: float,
               tighten: bool, errors: float | None = None) -> BinaryDetector:
        _check_arl(arl)
        if not min_ratio >= 1.0:
            raise ValueError("min_ratio must be at least 1")
        det = cls.__new__(cls)
        det.p0, det.reference_n, det._min_ratio = float(p0), n_reference, float(min_ratio)
        if n_reference is None:
            design = min_ratio * p0
        else:
            det._errors = p0 * n_reference if errors is None else errors
            design = max(_wilson(det._errors, float(n_reference))[1], min_ratio * p0)
        if design >= 1.0 > p0:  # min_ratio times a high rate: no rate above it; halfway to 1 instead
            design = (1.0 + p0) / 2.0
        det._design_cap = design
        if n_reference is not None:  # see tighten: the reference's CAP_KAPPA-se bound
            det._design_cap = max(design, _wilson(det._errors, float(n_reference), CAP_KAPPA)[1])
        labels, laws = det._design(design)
        det._setup(arl, labels, calibrate_thresholds(laws, arl))
        if tighten and n_reference is not None:
            det._next_block()
        return det

    def _design(self, p_design: float) -> tuple[list[str], list[IncrementLaw]]:
        """Designs against the rate ``p_design`` (sets ``design_rate`` and the increments)."""
        if not 0.0 < p_design < 1.0:
            raise ValueError("the reference error rate must be strictly between 0 and 1")
        targets: list[tuple[str, float]] = []  # (label, the error rate designed against)
        for r in ERROR_RATIOS:
            p1 = min(r * p_design, P_CAP)
            if p1 > p_design and not _near(p1, [t for _, t in targets]):
                targets.append((f"error rate x{r:g}", p1))
        if not targets:
            # A rate at or above P_CAP (a many-class model's error rate, say 0.9): the ladder has no
            # room left, so one design halfway to certain error, not none (a monitor that cannot
            # be built stopped the stage that builds it, at every restart).
            p1 = (1.0 + p_design) / 2.0
            targets.append((f"error rate x{p1 / p_design:.3g}", p1))
        labels = [label for label, _ in targets]
        a: list[float] = []
        b: list[float] = []
        laws: list[IncrementLaw] = []
        for _, p1 in targets:
            on, off = _bernoulli(p_design, p1)
            a.append(on)
            b.append(off)
            laws.append(IncrementLaw(np.array([on, off]), np.array([p_design, 1.0 - p_design])))
        self.design_rate = float(p_design)
        self._a, self._b = np.array(a), np.array(b)
        return labels, laws

    def _next_block(self) -> None:
        assert self.reference_n is not None
        self._block_start, self._block_errors, self._block_alarms = self.n, 0, self.alarms_total
        self._refine_at = self.n + self.reference_n

    def _tally(self, syms: IntArray) -> None:
        if self._refine_at != _NEVER:
            self._block_errors += int(np.count_nonzero(syms))

    def _refine(self) -> None:
        """A block of stream values is complete: join it to the reference if it is quiet."""
        assert self.reference_n is not None
        size, pooled = self.n - self._block_start, self.reference_n
        rate, p = self._block_errors / size, self._errors / pooled
        se = math.sqrt(max(p * (1.0 - p), 1.0 / pooled) * (1.0 / size + 1.0 / pooled))
        expected = size / self.arl  # false alarms a quiet block may hold (Poisson, a few sd)
        quiet = self.alarms_total - self._block_alarms <= expected + BLOCK_AGREEMENT * math.sqrt(expected)
        if quiet and abs(rate - p) <= BLOCK_AGREEMENT * se:
            self._errors += self._block_errors
            self.reference_n = pooled + size
            upper = _wilson(self._errors, float(self.reference_n))[1]
            design = min(max(upper, self._min_ratio * self._errors / self.reference_n), self._design_cap)
            # rounded up onto a grid of 0.5 % steps: a late block moves the bound by less than
            # that, and a design on the grid is calibrated once per process, not per detector
            design = min(_TIGHTEN_STEP ** math.ceil(math.log(design) / math.log(_TIGHTEN_STEP)),
                         self._design_cap)
            if design != self.design_rate:
                labels, laws = self._design(design)
                thresholds = calibrate_thresholds(laws, self.arl)
                if labels != self._labels:
                    self._sums = np.zeros(len(labels), dtype=np.int64)
                self._labels = labels
                self._h = np.ceil(np.asarray(thresholds) * _ONE).astype(np.int64)
                self._derive()
        self._next_block()

    def _table_inputs(self) -> list[npt.NDArray[Any]]:
        return [self._a, self._b]

    def _build_table(self) -> IntArray:
        return np.stack([_quantise(self._b), _quantise(self._a)])

    def _symbols_at(self, xs: Any) -> tuple[IntArray, IntArray | None]:
        x = np.asarray(xs, dtype=np.float64).ravel()
        keep = ~np.isnan(x)
        if keep.all():
            return (x != 0).astype(np.int64), None
        at = np.flatnonzero(keep)
        return (x[at] != 0).astype(np.int64), at

    def _symbol(self, x: Any) -> int | None:
        if x is None:
            return None
        v = float(x)
        return None if v != v else int(v != 0)


def _near(p1: float, others: list[float]) -> bool:
    """Whether rate ``p1`` is within 20 % of one of ``others`` in both ``p`` and ``1 - p`` (a duplicate)."""
    return any(abs(math.log(p1 / q)) < math.log(1.2) and abs(math.log((1 - p1) / (1 - q))) < math.log(1.2)
               for q in others)


_STR = frozenset({str})
_FLOAT = frozenset({float})


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
