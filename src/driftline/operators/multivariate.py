"""Multivariate drift: changes in the *joint* distribution that no single feature shows.

Two pure, deterministic operators over numeric features (a table: a dict of arrays, a pandas
DataFrame or a pyarrow Table; categorical features are left to the per-feature detectors):

**Reconstruction drift** (per event, :class:`ReconstructionDrift`, as NannyML's data-reconstruction
drift). Each feature is mapped to its reference normal score ``u = Phi^-1(F_mid(x))`` (the mid-rank
probability integral transform the sequential detectors use; a missing value scores 0, the
reference median), so every feature is ~N(0, 1) under the reference whatever its law. PCA (numpy
SVD) on the reference's normal scores keeps the fewest components explaining ``variance`` (default
0.9) of their variance. An event's reconstruction error is the Euclidean distance between its
normal scores and their projection on those components. When the correlations change, events leave
the reference's principal subspace and their error grows although every marginal stays the same.
The errors feed a :class:`~driftline.operators.sequential.NumericDetector` calibrated on the
reference's own errors, so a correlation change is caught within hundreds of events at a
controlled false-alarm rate (``arl``).

**Domain classifier** (per window, :class:`DomainClassifierDrift`, "adversarial validation"). A
seeded gradient-boosted classifier (scikit-learn's ``HistGradientBoostingClassifier``, the
``[multivariate]`` extra) learns to tell a reference sample from the window's sample; its
``folds``-fold cross-validated ROC-AUC is 0.5 when they are indistinguishable (0.8 is the usual
"clearly drifted" line). The threshold is calibrated, not guessed: under no drift the
out-of-fold AUC is a Mann-Whitney statistic, with sd ``sqrt((n0 + n1 + 1) / (12 n0 n1))`` if the
folds were independent; at construction ``null_runs`` runs of the very procedure on two disjoint
halves of the reference measure how much wider the real null is (the ``inflation`` factor, at
least 1), and a window drifts when ``auc >= 0.5 + z * inflation * sd`` with ``z`` the normal
quantile of ``1 - alpha``. The features that separate the samples most are ranked by permutation
importance: the mean drop of the held-out folds' AUC when one feature's column is shuffled.

Both are exact under replay: every random draw comes from a generator seeded by ``seed`` (and the
window's ordinal for the domain classifier), never from the clock.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> def table(rho, n):
...     a = rng.normal(size=n)
...     b = rho * a + np.sqrt(1 - rho**2) * rng.normal(size=n)
...     return {"a": a, "b": b, "c": rng.normal(size=n)}
>>> monitor = ReconstructionDrift.from_reference(table(0.9, 20_000), arl=1e6)
>>> monitor.components, monitor.features
(2, ['a', 'b', 'c'])
>>> monitor.update_many(table(0.9, 20_000))      # same joint law: quiet
[]
>>> alarm = monitor.update_many(table(-0.9, 2_000))[0]   # b's sign flips: marginals unchanged
>>> alarm.offset < 200
True
"""

from __future__ import annotations

import base64
import functools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import ndtri

from driftline.extras import require
from driftline.operators import watch_native
from driftline.operators.sequential import Alarm, NumericDetector
from driftline.operators.window_stats import category_key

FloatArray = npt.NDArray[np.float64]


def table_columns(table: Any) -> list[str]:
    """Column names of a mapping, a pandas/polars DataFrame or a pyarrow Table (duck typed)."""
    if isinstance(table, Mapping):
        return [str(n) for n in table]
    if hasattr(table, "column_names"):  # pyarrow.Table / RecordBatch
        return [str(n) for n in table.column_names]
    if hasattr(table, "columns") and hasattr(table, "__getitem__"):  # pandas / polars DataFrame
        return [str(n) for n in table.columns]
    raise ValueError(
        f"expected a table: a mapping of column name to values, a pandas DataFrame or a pyarrow "
        f"Table, not {type(table).__name__}"
    )


def numeric_matrix(table: Any, features: Sequence[str]) -> FloatArray:
    """The ``features`` columns of ``table`` as an (n, d) float matrix; None/NA become NaN."""
    names = set(table_columns(table))
    missing = [f for f in features if f not in names]
    if missing:
        raise ValueError(f"the table lacks feature column(s) {missing}")
    columns = []
    for name in features:
        column = table[name]
        if hasattr(column, "to_numpy") and not isinstance(column, np.ndarray):
            try:  # pandas nullable dtypes: NA becomes NaN
                column = column.to_numpy(dtype=np.float64, na_value=np.nan)
            except TypeError:  # pyarrow ChunkedArray.to_numpy takes no dtype
                column = column.to_numpy()
        values = np.asarray([np.nan if v is None else v for v in column] if isinstance(column, list)
                            else column)
        try:
            columns.append(values.astype(np.float64))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"feature {name!r} is not numeric") from exc
    if not columns:
        raise ValueError("at least one numeric feature is needed")
    lengths = {c.size for c in columns}
    if len(lengths) != 1:
        raise ValueError(f"feature columns differ in length: {sorted(lengths)}")
    return np.column_stack(columns)


def numeric_features(table: Any) -> list[str]:
    """The columns of ``table`` whose values are numbers (bools and strings excluded)."""
    out = []
    for name in table_columns(table):
        values = np.asarray(table[name][:100])
        if values.dtype == object:  # a list with None: judge by the values present
            values = np.asarray([v for v in values.tolist() if v is not None])
        if values.dtype.kind in "iuf":
            out.append(name)
    return out


class NormalScores:
    """Maps each numeric feature to its reference normal score ``Phi^-1(F_mid(x))``.

    ``F_mid = (L + R + 1) / (2 (n + 1))`` with ``L``/``R`` the reference values below / at or below
    ``x`` (the mid-rank for ties), so scores stay finite; a missing value scores 0 (the median).
    A reference longer than ``max_points`` is kept as that many evenly spaced order statistics
    (the CDF off by at most ``1 / max_points``; memory bounded whatever the reference's size).

    Ranks alone cap a score at the reference's extreme rank (~3.8 for 8,192 points), so a wild
    value would look no stranger than the reference's maximum. Beyond the reference's range a
    score therefore keeps growing linearly, at the slope between the tail's outermost 1 % of
    order statistics and the extreme (per unit of the range if those coincide).

    >>> ns = NormalScores.fit({"x": [1.0, 2.0, 3.0]}, ["x"])
    >>> [round(float(u), 3) for u in ns.transform({"x": [2.0, 3.0, 4.0, 1e6, None]})[:, 0]]
    [0.0, 0.674, 1.825, 674488.877, 0.0]
    """

    def __init__(self, features: Sequence[str], sorted_reference: Sequence[FloatArray]) -> None:
        self.features = list(features)
        self._sorted = [np.asarray(s, dtype=np.float64) for s in sorted_reference]
        if any(s.ndim != 1 or s.size < 2 for s in self._sorted):
            raise ValueError("the normal scores need at least 2 sorted reference values per feature")
        self.tails = [_tails(ref) for ref in self._sorted]
        """Per feature ``(low, high, u_low, u_high, slope_low, slope_high)``: the range, the
        scores just outside it and the extrapolation slopes (score per unit of x)."""
        self._flat_scores: _FlatScores | None = None  # built on the first transform

    def __getstate__(self) -> dict[str, Any]:
        # the flat tables are built again from the points: a pickle does not fix their layout
        return {**self.__dict__, "_flat_scores": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._flat_scores = None  # (a pickle of before the layout changed may hold old tables)

    @classmethod
    def fit(cls, table: Any, features: Sequence[str], *, max_points: int = 8_192) -> NormalScores:
        x = numeric_matrix(table, features)
        cols = []
        for j, name in enumerate(features):
            col = np.sort(x[:, j][~np.isnan(x[:, j])])
            if col.size < 2:
                raise ValueError(f"feature {name!r} needs at least 2 reference values")
            if col.size > max_points:
                col = col[np.round(np.linspace(0, col.size - 1, max_points)).astype(np.int64)]
            cols.append(col)
        return cls(features, cols)

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (:meth:`from_state` rebuilds an identical transform)."""
        return {"features": self.features, "sorted": [pack_array(s) for s in self._sorted]}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> NormalScores:
        return cls([str(f) for f in state["features"]], [unpack_array(s) for s in state["sorted"]])

    @property
    def sorted_reference(self) -> list[FloatArray]:
        """Per feature, the sorted reference values (or order statistics) scores are ranked in."""
        return self._sorted

    def transform_matrix(self, x: FloatArray) -> FloatArray:
        """Normal scores of an (n, d) matrix whose columns are :attr:`features` in order."""
        # C order: BLAS (in the PCA fit) picks its rounding by the layout
        return np.ascontiguousarray(self.scores_by_feature(x).T)

    def scores_by_feature(self, x: FloatArray) -> FloatArray:
        """:meth:`transform_matrix` transposed, (d, n): one contiguous row per feature.

        Per value one binary search (a second only for a value equal to a reference point) and
        a table look-up: ``left + right + 1`` is an integer in ``[1, 2 n + 1]``, so the ndtri of
        each possible mid-rank is computed once (the same float division, the same bits). All
        features at once: the search is a branchless bisection over every value of the (d, n)
        matrix together (a feature's order statistics are a row of one padded array), about
        twice as fast as a ``searchsorted`` per feature on values in random order.
        """
        flat = self._flat()
        made = np.empty((x.shape[1], x.shape[0]))
        if flat.native_scores(x, made):  # the steps below value by value in one C loop (~1.9x cheaper)
            return made
        columns = np.ascontiguousarray(x.T, dtype=np.float64)  # (d, n)
        left = flat.count_below(columns)
        ranks = 2 * left + 1  # left + right + 1 where no reference point equals the value
        at_left = flat.padded[np.minimum(left, flat.width - 1) + flat.row_offsets]
        tied_features, tied_rows = np.nonzero(at_left == columns)
        if tied_features.size:  # every tied value of every feature in one search
            tied = columns[tied_features, tied_rows]
            right = flat.count_at_most(tied, tied_features)
            ranks[tied_features, tied_rows] = left[tied_features, tied_rows] + right + 1
        half = ranks >> 1  # odd ranks (no tie) first in a feature's table, then the even ones
        u = flat.scores[np.where(ranks & 1, half + flat.score_offsets, half + flat.even_offsets)]
        wild_features, wild_rows = np.nonzero(~((columns >= flat.low) & (columns <= flat.high)))  # or NaN
        if wild_features.size:
            wild = columns[wild_features, wild_rows]
            low, high, u_low, u_high, slope_low, slope_high = flat.tails[:, wild_features]
            u[wild_features, wild_rows] = np.where(
                wild > high, u_high + (wild - high) * slope_high,
                np.where(wild < low, u_low - (low - wild) * slope_low, 0.0))
        return u

    def _flat(self) -> _FlatScores:
        if self._flat_scores is None:
            self._flat_scores = _FlatScores.of(self._sorted, self.tails)
        return self._flat_scores

    def transform(self, table: Any) -> FloatArray:
        """Normal scores of a table's features, an (n, d) matrix."""
        return self.transform_matrix(numeric_matrix(table, self.features))


GRID_CELLS_PER_POINT = 4
"""Cells of :class:`_FlatScores`' value grid per order statistic (of the widest feature)."""


@dataclass(frozen=True)
class _FlatScores:
    """:class:`NormalScores`' per-feature arrays laid end to end, for array operations over all
    features at once: the order statistics (row ``j`` of a (d, stride) array, padded with +inf),
    and ``ndtri(k / (2 (n + 1)))`` for every integer ``k`` in ``[0, 2 n + 1]`` (the mid-rank
    scores: a feature's odd ``k`` first, then its even ones, so values tied with no point, the common
    case, read half of the table); offsets and per-feature constants as (d, 1). ``first`` holds int32
    positions. A batch's values touch most cache lines of these tables, and in a shard the tables are
    out of cache when the next batch comes (the shard's other work runs between), so their bytes set
    the cost: 0.93 -> 0.63 CPU-us a prediction for bench_stages' workload against int64 positions and
    ranks in order (in a warm cache, alone, ~12 ns a value either way).

    The search starts from a grid: ``[low, high]`` of each feature cut into ``cells`` equal cells,
    and per cell how many order statistics fall in earlier cells. A value's cell is computed by
    the same float operations as the points', which are monotone, so every point of an earlier
    cell is below the value and every point of a later cell is not: the count lies within the
    value's cell, and the bisection needs only as many steps as the fullest cell's count has bits.

    >>> flat = _FlatScores.of([np.array([1.0, 2.0, 2.0]), np.array([0.0, 5.0])], [(0.0,) * 6] * 2)
    >>> flat.count_below(np.array([[0.5, 2.0, 3.0, np.inf], [5.0, 6.0, -1.0, 0.0]])).tolist()
    [[0, 1, 3, 3], [1, 2, 0, 0]]
    """

    padded: FloatArray
    """Flat (d * stride): row j holds feature j's order statistics, then +inf (at least as many
    as it has points: a search starting in a row's last cell stays in the row)."""
    width: int
    """A power of two >= every feature's number of points."""
    row_offsets: npt.NDArray[np.intp]
    scores: FloatArray
    score_offsets: npt.NDArray[np.int64]
    """(d, 1): where a feature's scores start (its odd ranks' ``k >> 1`` from here)."""
    even_offsets: npt.NDArray[np.int64]
    """(d, 1): where a feature's even ranks' scores start (``score_offsets`` plus ``n + 1``)."""
    low: FloatArray
    high: FloatArray
    tails: FloatArray
    """(6, d): low, high, u_low, u_high, slope_low, slope_high."""
    cells: int
    grid_scale: FloatArray
    """(d, 1): cells per unit of the feature (0 for a feature without a spread)."""
    cell_offsets: npt.NDArray[np.intp]
    first: npt.NDArray[np.int32]
    """Flat (d * cells): the position in ``padded`` of the cell's first point (the row's offset
    plus the points in earlier cells)."""
    steps: int
    """Bisection steps: bits of the largest count of points in one cell."""
    sizes: npt.NDArray[np.int64]
    """Each feature's number of points."""

    @classmethod
    def of(cls, sorted_reference: Sequence[FloatArray],
           tails: Sequence[tuple[float, float, float, float, float, float]]) -> _FlatScores:
        sizes = np.asarray([ref.size for ref in sorted_reference], dtype=np.int64)
        width = 1 << max(0, int(sizes.max()) - 1).bit_length()  # a power of two >= every size
        cells = GRID_CELLS_PER_POINT * width
        constants = np.ascontiguousarray(np.asarray(tails, dtype=np.float64).T)  # (C order: native_scores)
        low, high = constants[0][:, None], constants[1][:, None]
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            scale = cells / (high - low)
        scale[~np.isfinite(scale) | (scale <= 0)] = 0.0  # one value (or inf) only: one cell
        counts = np.stack([np.bincount(_cells(ref[None, :], low[j : j + 1], scale[j : j + 1], cells)[0],
                                       minlength=cells) for j, ref in enumerate(sorted_reference)])
        steps = int(counts.max()).bit_length()
        stride = width + (1 << steps)  # probes reach 2 ** steps - 2 past a cell's first point
        if sizes.size * stride >= 2**31:  # (first's int32 positions; ~16 GB of points)
            raise ValueError("the normal scores' reference points do not fit the table's positions")
        padded = np.full((sizes.size, stride), np.inf)
        for j, ref in enumerate(sorted_reference):
            padded[j, : ref.size] = ref
        row_offsets = (np.arange(sizes.size, dtype=np.intp) * stride)[:, None]
        first = np.zeros((sizes.size, cells), dtype=np.int64)
        np.cumsum(counts[:, :-1], axis=1, out=first[:, 1:])
        first += row_offsets
        tables = []
        for n in sizes.tolist():
            table = ndtri(np.arange(2 * n + 2, dtype=np.int64) / (2.0 * (n + 1)))
            tables.append(np.concatenate([table[1::2], table[0::2]]))
        table_sizes = 2 * sizes + 2
        score_offsets = (np.cumsum(table_sizes) - table_sizes)[:, None]
        return cls(padded.ravel(), width, row_offsets, np.concatenate(tables), score_offsets,
                   score_offsets + sizes[:, None] + 1, low, high, constants, cells, scale,
                   (np.arange(sizes.size, dtype=np.intp) * cells)[:, None], first.ravel().astype(np.int32),
                   steps, sizes)

    def native_scores(self, x: FloatArray, out: FloatArray) -> bool:
        """:meth:`NormalScores.scores_by_feature` of the (n, d) ``x`` into the (d, n) ``out`` by the
        C watch (``_watch.normal_scores``: the same bits); False where it is not built or does not
        take them (not float64), ``out`` then holding nothing to use."""
        fast = watch_native.NATIVE
        return fast is not None and bool(fast.normal_scores(
            x, self.padded, self.first, self.scores, self.score_offsets, self.row_offsets, self.tails,
            self.grid_scale, self.sizes, self.cells, self.steps, self.width, out))

    def count_below(self, columns: FloatArray) -> npt.NDArray[np.intp]:
        """Per value of the (d, n) ``columns``, how many of its feature's reference points are
        below it (``searchsorted`` side "left"; 0 for NaN, whose score is fixed apart)."""
        cell = _cells(columns, self.low, self.grid_scale, self.cells)
        cell += self.cell_offsets
        base = np.take(self.first, cell).astype(np.intp)  # invariant: the row's points before base are below
        values = np.empty(columns.shape, dtype=np.float64)
        below = np.empty(columns.shape, dtype=np.bool_)
        moves = np.empty(columns.shape, dtype=np.intp)
        step = (1 << self.steps) // 2  # 2 ** steps > the count in any one cell
        while step:
            np.take(self.padded[step - 1 :], base, out=values)  # the points at base + step - 1
            np.less(values, columns, out=below)
            # a product and a plain add: a masked add (where=) costs about twice as much
            np.multiply(below, step, out=moves)
            base += moves
            step //= 2
        base -= self.row_offsets
        return base

    def count_at_most(self, values: FloatArray, features: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """Per value (of feature ``features[i]``), how many of its feature's reference points are
        at most it (``searchsorted`` side "right"), for values that are not NaN.

        The search of :meth:`count_below` with ``<=``: every point of an earlier cell is below the
        value and every point of a later cell above it, so the count lies within the value's cell.

        >>> flat = _FlatScores.of([np.array([1.0, 2.0, 2.0]), np.array([0.0, 5.0])], [(0.0,) * 6] * 2)
        >>> flat.count_at_most(np.array([2.0, 1.0, 5.0, 0.0, 3.0]), np.array([0, 0, 1, 1, 0])).tolist()
        [3, 1, 2, 1, 3]
        """
        offsets = self.row_offsets[:, 0][features]
        cell = _cells(values, self.low[:, 0][features], self.grid_scale[:, 0][features], self.cells)
        cell += self.cell_offsets[:, 0][features]
        base = np.take(self.first, cell).astype(np.intp)
        points = np.empty(values.shape, dtype=np.float64)
        at_most = np.empty(values.shape, dtype=np.bool_)
        moves = np.empty(values.shape, dtype=np.intp)
        step = (1 << self.steps) // 2
        while step:
            np.take(self.padded[step - 1 :], base, out=points)
            np.less_equal(points, values, out=at_most)
            np.multiply(at_most, step, out=moves)
            base += moves
            step //= 2
        base -= offsets
        # a point +inf equals the +inf padding after it: count the feature's points at most
        return np.minimum(base, self.sizes[features], out=base)


def _cells(values: FloatArray, low: FloatArray, scale: FloatArray, cells: int) -> npt.NDArray[np.intp]:
    """The grid cell of each value (row j: feature j's ``low`` and ``scale``); NaN in cell 0.
    Monotone in the value: a subtraction, a product and clipping, each rounding monotonically."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, inf * 0: NaN, cell 0
        position = np.subtract(values, low)
        np.multiply(position, scale, out=position)
    np.fmax(position, 0.0, out=position)  # fmax/fmin: NaN gives the bound
    np.fmin(position, cells - 1.0, out=position)
    return position.astype(np.intp)


def _tails(ref: FloatArray) -> tuple[float, float, float, float, float, float]:
    n = ref.size
    k = max(1, round(0.01 * n))  # order statistics in the outermost 1 %
    u_outside = float(ndtri((2 * n + 1) / (2.0 * (n + 1))))  # the score just beyond either end
    # Scores (by symmetry, magnitudes) of the extreme and of the k-th order statistic from it.
    rise = float(ndtri(n / (n + 1.0)) - abs(ndtri((k + 1) / (n + 1.0))))
    fallback = 1.0 / (float(ref[-1] - ref[0]) or 1.0)

    def slope(spread: float) -> float:
        return rise / spread if spread > 0 and rise > 0 else fallback

    return (float(ref[0]), float(ref[-1]), -u_outside, u_outside,
            slope(float(ref[k] - ref[0])), slope(float(ref[-1] - ref[n - 1 - k])))


@dataclass(frozen=True)
class ReconstructionSummary:
    """A window's reconstruction errors against the reference's."""

    n: int
    """Events in the window."""
    mean_error: float
    """Mean reconstruction error of the window's events."""
    reference_mean_error: float
    """Mean reconstruction error of the reference's events."""
    share_above_p99: float
    """Share of the window's events whose error exceeds the reference's 99 % quantile (0.01
    expected without drift)."""


class ReconstructionDrift:
    """Per-event PCA reconstruction error against the reference, watched by a CUSUM detector.

    Build with :meth:`from_reference`; ``update_many(table)`` returns the detector's alarms
    (``Alarm.offset`` is the row in the table), :meth:`errors` the per-event errors, and
    :meth:`summarize` a window's errors against the reference's.
    """

    def __init__(self, scores: NormalScores, mean: FloatArray, basis: FloatArray,
                 reference_errors: FloatArray, arl: float, variance: float) -> None:
        self._scores = scores
        self._mean = mean
        self._basis = basis  # (d, k), orthonormal columns
        self.reference_errors = np.sort(reference_errors)
        self.arl = arl
        self.variance = variance
        self.detector = NumericDetector.from_reference(reference_errors, arl=arl)
        self.p99 = float(np.quantile(self.reference_errors, 0.99))
        """The reference errors' 99 % quantile (``summarize``'s ``share_above_p99`` line)."""
        self.reference_mean_error = float(self.reference_errors.mean())

    @classmethod
    def from_reference(cls, table: Any, *, features: Sequence[str] | None = None,
                       variance: float = 0.9, arl: float = 1_000_000.0,
                       scores: NormalScores | None = None) -> ReconstructionDrift:
        """Fit on a reference table (``features``: its numeric columns unless given; ``scores``:
        a normal-score transform already fitted on it, shared with other operators).

        ``variance``: the share of the normal scores' variance the kept components explain (at
        least one component is dropped, so the error is never identically 0).
        """
        names = list(features) if features is not None else numeric_features(table)
        if len(names) < 2:
            raise ValueError("reconstruction drift needs at least 2 numeric features")
        if not 0.0 < variance < 1.0:
            raise ValueError("variance must be in (0, 1)")
        if scores is None:
            scores = NormalScores.fit(table, names)
        names = scores.features
        z = scores.transform(table)
        mean = z.mean(axis=0)
        _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
        explained = np.cumsum(s**2) / max(float(np.sum(s**2)), 1e-300)
        k = min(int(np.searchsorted(explained, variance) + 1), len(names) - 1)
        basis = np.ascontiguousarray(vt[:k].T)
        errors = _reconstruction_errors(z, mean, basis)
        return cls(scores, mean, basis, errors, arl, variance)

    def to_state(self, *, max_errors: int = 2_048) -> dict[str, Any]:
        """JSON-safe state without the normal scores (shared with other operators; pass them to
        :meth:`from_state`). The reference errors are kept as at most ``max_errors`` evenly spaced
        order statistics (the detector is calibrated on those, the 99 % quantile on all)."""
        errors = self.reference_errors
        if errors.size > max_errors:
            errors = errors[np.round(np.linspace(0, errors.size - 1, max_errors)).astype(np.int64)]
        return {"mean": pack_array(self._mean), "basis": pack_array(self._basis),
                "reference_errors": pack_array(errors), "p99": self.p99,
                "reference_mean_error": self.reference_mean_error,
                "arl": self.arl, "variance": self.variance}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], scores: NormalScores) -> ReconstructionDrift:
        """The operator :meth:`to_state` described, on ``scores``.

        >>> import orjson
        >>> rng = np.random.default_rng(3)
        >>> a = rng.normal(size=5_000)
        >>> ref = {"a": a, "b": a + rng.normal(size=5_000), "c": rng.normal(size=5_000)}
        >>> rd = ReconstructionDrift.from_reference(ref)
        >>> state = orjson.loads(orjson.dumps(rd.to_state()))
        >>> copy = ReconstructionDrift.from_state(state, NormalScores.from_state(rd.scores.to_state()))
        >>> bool(np.array_equal(copy.errors(ref), rd.errors(ref))), copy.p99 == rd.p99
        (True, True)
        """
        rd = cls(scores, unpack_array(state["mean"]), unpack_array(state["basis"]),
                 unpack_array(state["reference_errors"]), float(state["arl"]), float(state["variance"]))
        rd.p99 = float(state["p99"])
        rd.reference_mean_error = float(state["reference_mean_error"])
        return rd

    @property
    def scores(self) -> NormalScores:
        """The normal-score transform of the reference."""
        return self._scores

    def errors_of_scores(self, z: FloatArray) -> FloatArray:
        """Reconstruction errors of normal scores already computed (``scores.transform``)."""
        return _reconstruction_errors(z, self._mean, self._basis)

    @property
    def features(self) -> list[str]:
        return self._scores.features

    @property
    def components(self) -> int:
        """Principal components kept."""
        return int(self._basis.shape[1])

    def errors(self, table: Any) -> FloatArray:
        """Each event's reconstruction error (distance from the reference's principal subspace)."""
        return _reconstruction_errors(self._scores.transform(table), self._mean, self._basis)

    def update_many(self, table: Any) -> list[Alarm]:
        """Feed a batch of events (in order) to the detector; its alarms."""
        return self.detector.update_many(self.errors(table))

    def summarize(self, table: Any) -> ReconstructionSummary:
        """A window's errors against the reference's (does not touch the detector)."""
        e = self.errors(table)
        return ReconstructionSummary(
            n=int(e.size),
            mean_error=float(e.mean()) if e.size else math.nan,
            reference_mean_error=self.reference_mean_error,
            share_above_p99=float(np.mean(e > self.p99)) if e.size else math.nan,
        )

    def reset(self) -> None:
        """Clear the detector's evidence."""
        self.detector.reset()


def _reconstruction_errors(z: FloatArray, mean: FloatArray, basis: FloatArray) -> FloatArray:
    centred = z - mean
    residual = centred - rowwise_matmul(rowwise_matmul(centred, basis), basis.T)
    return np.sqrt(rowwise_dot(residual, residual))


def rowwise_matmul(x: FloatArray, m: FloatArray) -> FloatArray:
    """``x @ m`` computed one column of ``x`` at a time with elementwise operations, so each row's
    result is bit-identical however the rows are batched (BLAS picks kernels, and with them the
    rounding, by the matrix's shape; replay and restore must not depend on the batching).

    >>> rowwise_matmul(np.array([[1.0, 2.0]]), np.array([[1.0, 0.0], [0.0, 3.0]])).tolist()
    [[1.0, 6.0]]
    """
    fast = watch_native.NATIVE
    if fast is not None:  # the steps below in one C loop, no (k, n) temporary a column (~2x cheaper)
        made = np.empty((m.shape[1], x.shape[0]))
        if fast.matmul_columns(x, m, made):
            return made.T
    # Feature-major (one contiguous row per column of x): the same products summed in the same
    # order, about twice as fast as broadcasting over strided columns; an F-order x is not copied.
    by_column = np.ascontiguousarray(x.T)
    weights = np.ascontiguousarray(m)[:, :, None]
    out = np.zeros((m.shape[1], x.shape[0]))
    term = np.empty_like(out)
    for j in range(by_column.shape[0]):
        np.multiply(weights[j], by_column[j], out=term)
        out += term
    return out.T


def rowwise_dot(x: FloatArray, y: FloatArray) -> FloatArray:
    """Each row's dot product, summed column by column (batch-independent, as rowwise_matmul)."""
    fast = watch_native.NATIVE
    if fast is not None:  # the steps below in one C loop
        made = np.empty(x.shape[0])
        if fast.dot_rows(x, y, made):
            return made
    xs, ys = np.ascontiguousarray(x.T), np.ascontiguousarray(y.T)
    out = np.zeros(x.shape[0])
    term = np.empty_like(out)
    for j in range(xs.shape[0]):
        np.multiply(xs[j], ys[j], out=term)
        out += term
    return out


def pack_array(values: npt.ArrayLike, dtype: str = "<f8") -> dict[str, Any]:
    """A compact JSON-safe form of an array: dtype, shape and the little-endian bytes in base64.

    >>> unpack_array(pack_array(np.array([[1.5, -2.0]]))).tolist()
    [[1.5, -2.0]]
    """
    with np.errstate(over="ignore"):  # valid values past float32's range saturate to +-inf in "<f4"
        a = np.ascontiguousarray(np.asarray(values), dtype=np.dtype(dtype))  # samples: order is kept
    return {"dtype": dtype, "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def unpack_array(packed: Mapping[str, Any]) -> FloatArray:
    """The float64 array :func:`pack_array` encoded."""
    raw = np.frombuffer(base64.b64decode(packed["b64"]), dtype=np.dtype(str(packed["dtype"])))
    return raw.reshape([int(n) for n in packed["shape"]]).astype(np.float64)


@dataclass(frozen=True)
class DomainResult:
    """A domain classifier's verdict on one window."""

    auc: float
    """Cross-validated ROC-AUC of telling the window's sample from the reference's (0.5: alike)."""
    threshold: float
    """The AUC at or above which the window drifts (calibrated null, see the module docs)."""
    drifted: bool
    n_reference: int
    """Reference rows in the comparison."""
    n_window: int
    """Window rows in the comparison."""
    top_features: list[tuple[str, float]]
    """Features by permutation importance (mean AUC drop), most separating first, at most
    ``top_k``, only those with a positive importance."""


def _sklearn_config(**settings: Any) -> Any:
    """scikit-learn's ``config_context`` (imported with the classifier)."""
    from sklearn import config_context

    return config_context(**settings)


def _require_sklearn() -> Any:
    require("multivariate", "DomainClassifierDrift")
    return _binned_classifier()


_SORTED_PERCENTILES_AGREE: bool | None = None
"""Whether :func:`_sorted_percentiles` gave ``np.percentile``'s bits on its first columns (None:
not compared yet); False: ``np.percentile`` from then on."""


def _sorted_percentiles(ordered: FloatArray, percentiles: FloatArray) -> FloatArray:
    """``np.percentile(ordered, percentiles, axis=0, method="averaged_inverted_cdf")`` of columns
    already sorted, as numpy computes it (the virtual index ``n q - 1``, the weight 1, or 1/2 at
    an integer index, and its interpolation ``b - (b - a) (1 - t)``) without its partition of
    every column around each index: 0.05 against 0.35 ms on 1,000 rows of 25 features.
    Compared with ``np.percentile`` on the first call of a process, which is used from then on
    if they differ.

    >>> column = np.sort(np.random.default_rng(0).normal(size=(500, 3)), axis=0)
    >>> q = np.linspace(0, 100, 64)[1:-1]
    >>> bool(np.array_equal(_sorted_percentiles(column, q),
    ...                     np.percentile(column, q, axis=0, method="averaged_inverted_cdf")))
    True
    """
    global _SORTED_PERCENTILES_AGREE
    with np.errstate(invalid="ignore"):  # inf - inf next to a quantile: NaN, left to the library
        if _SORTED_PERCENTILES_AGREE is False:
            return np.percentile(ordered, percentiles, axis=0, method="averaged_inverted_cdf")
        virtual = ordered.shape[0] * np.true_divide(percentiles, 100) - 1
        previous = np.floor(virtual)
        below = np.clip(previous, 0, ordered.shape[0] - 1).astype(np.intp)
        above = np.clip(previous + 1, 0, ordered.shape[0] - 1).astype(np.intp)
        weight = np.where(virtual - below == 0, 0.5, 1.0)[:, None]
        low, high = ordered[below], ordered[above]
        ours = high - (high - low) * (1 - weight)
        if _SORTED_PERCENTILES_AGREE is None:
            theirs = np.percentile(ordered, percentiles, axis=0, method="averaged_inverted_cdf")
            _SORTED_PERCENTILES_AGREE = bool(np.array_equal(ours, theirs, equal_nan=True))
            return theirs
        return ours


@functools.cache
def _binned_classifier() -> Any:
    """scikit-learn's ``HistGradientBoostingClassifier`` with the training data binned for all
    features at once (:func:`quantile_bins`) instead of a joblib task per feature for the
    thresholds and a binary search per value: 0.6 against 4.5 ms of a 10 ms fit on 1,000 rows of
    25 features, the same thresholds, bins and models. Data :func:`quantile_bins` leaves to the
    library (missing values, repeated quantiles, categorical features, weights) is binned by its
    own code, and so is everything until the first fit shows both give the same thresholds and
    bins."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    class BinnedClassifier(HistGradientBoostingClassifier):
        agrees: bool | None = None
        """Whether :func:`quantile_bins` gave the library's thresholds and bins on the first
        training data both binned (None: not compared yet); False keeps the library's binning."""

        def _bin_data(self, X: Any, sample_weight: Any, is_training_data: bool) -> Any:
            mapper = self._bin_mapper
            if (not is_training_data or sample_weight is not None or self.agrees is False
                    or mapper.known_categories is not None
                    or (mapper.is_categorical is not None and np.any(mapper.is_categorical))
                    or X.shape[0] > mapper.subsample):
                return super()._bin_data(X, sample_weight, is_training_data)
            bins = quantile_bins(X, mapper.n_bins - 1)
            if bins is None:
                return super()._bin_data(X, sample_weight, is_training_data)
            thresholds, binned = bins
            if self.agrees is None:
                theirs = super()._bin_data(X, sample_weight, is_training_data)
                type(self).agrees = (
                    len(mapper.bin_thresholds_) == len(thresholds)
                    and all(np.array_equal(a, b)
                            for a, b in zip(thresholds, mapper.bin_thresholds_, strict=True))
                    and theirs.dtype == binned.dtype and np.array_equal(theirs, binned))
                return theirs
            mapper.is_categorical_ = np.zeros(X.shape[1], dtype=np.uint8)
            mapper.missing_values_bin_idx_ = mapper.n_bins - 1
            mapper.bin_thresholds_ = thresholds
            mapper.n_bins_non_missing_ = np.array([t.size + 1 for t in thresholds], dtype=np.uint32)
            return binned

    return BinnedClassifier


ALMOST_INF = 1e300
"""scikit-learn's cap of a bin threshold (``_hist_gradient_boosting.common.ALMOST_INF``)."""


def quantile_bins(x: FloatArray, max_bins: int) -> tuple[list[FloatArray], npt.NDArray[np.uint8]] | None:
    """Each column's bin thresholds and the bins of its values as scikit-learn's histogram
    gradient boosting finds them for columns without missing values: for a column with more than
    ``max_bins`` distinct values the ``max_bins - 1`` inner percentiles by numpy's
    "averaged_inverted_cdf" method, else the midpoints of its distinct values (none for one
    value), capped at :data:`ALMOST_INF`; per value the number of thresholds below it (uint8, F
    order). The many-valued columns in one sort and one ``percentile`` call (the same elementwise
    arithmetic per column as one call per column); the bins from where each threshold falls in
    the sorted column. None if a column has a missing value or a repeated or non-finite
    percentile (the library's own code handles those).

    >>> x = np.column_stack([np.arange(100.0), np.arange(100.0) ** 2, np.arange(100.0) % 3])
    >>> thresholds, binned = quantile_bins(x, 4)
    >>> [t.tolist() for t in thresholds]
    [[24.5, 49.5, 74.5], [600.5, 2450.5, 5550.5], [0.5, 1.5]]
    >>> binned[[0, 24, 25, 99]].tolist()
    [[0, 0, 0], [0, 0, 0], [1, 1, 1], [3, 3, 0]]
    """
    if x.ndim != 2 or x.shape[0] < 2 or not 2 <= max_bins <= 255 or np.isnan(x).any():
        return None
    n, d = x.shape
    order = np.argsort(x, axis=0)
    ordered = np.take_along_axis(x, order, axis=0)
    distinct = 1 + np.count_nonzero(ordered[1:] != ordered[:-1], axis=0)
    thresholds: list[FloatArray] = [np.empty(0) for _ in range(d)]  # one value: no threshold
    many = np.flatnonzero(distinct > max_bins)
    if many.size:
        percentiles = np.linspace(0, 100, num=max_bins + 1)[1:-1]
        quantiles = _sorted_percentiles(ordered[:, many], percentiles)
        if np.any(quantiles[1:] == quantiles[:-1]) or not np.isfinite(quantiles).all():
            return None
        np.clip(quantiles, None, ALMOST_INF, out=quantiles)
        for i, j in enumerate(many.tolist()):
            thresholds[j] = np.ascontiguousarray(quantiles[:, i])
    for j in np.flatnonzero(distinct <= max_bins).tolist():
        values = np.unique(ordered[:, j]).astype(np.float64)  # the library's calls, as it makes them
        if values.size != distinct[j]:
            return None  # equal values told apart (0.0 and -0.0): the library decides
        if values.size > 1:
            midpoints = sliding_window_view(values, 2).mean(axis=1)
            unique = np.unique(midpoints)
            if unique.shape[0] != midpoints.shape[0]:
                midpoints = unique
            np.clip(midpoints, None, ALMOST_INF, out=midpoints)
            thresholds[j] = midpoints
    # A value's bin counts the thresholds below it: in the sorted column, those whose number of
    # values at or below them is at most the value's rank.
    steps = np.empty((n, d), dtype=np.uint8)
    for j, column_thresholds in enumerate(thresholds):
        ends = np.searchsorted(ordered[:, j], column_thresholds, side="right")
        steps[:, j] = np.bincount(ends, minlength=n + 1)[:n]
    binned = np.empty((n, d), dtype=np.uint8, order="F")
    np.put_along_axis(binned, order, np.cumsum(steps, axis=0, dtype=np.uint8), axis=0)
    return thresholds, binned


@functools.cache
def _thread_pools() -> Any:
    """The process's BLAS and OpenMP thread pools (scikit-learn's OpenMP is loaded by then):
    ``threadpool_limits`` scans the loaded libraries on every call, about 3 ms CPU, a tenth of a
    window's fit; this controller's ``limit`` costs about 15 us."""
    from threadpoolctl import ThreadpoolController  # installed with scikit-learn

    return ThreadpoolController()


def auc_score(labels: npt.NDArray[Any], scores: FloatArray) -> float:
    """ROC-AUC of ``scores`` for binary ``labels`` (Mann-Whitney, ties count 1/2).

    >>> auc_score(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    from scipy.stats import rankdata

    y = np.asarray(labels).astype(bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n0 == 0 or n1 == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n0 * n1))


def _mann_whitney_sd(n0: int, n1: int) -> float:
    return math.sqrt((n0 + n1 + 1) / (12.0 * n0 * n1))


MAX_CATEGORIES = 254
"""Categories kept per categorical feature (the most frequent in the reference): the gradient-boosted
classifier's categorical codes must stay below its 255 bins, and one code is "other"."""


class CategoryCodes:
    """Integer codes of categorical features: the reference's most frequent categories (as
    :func:`~driftline.operators.window_stats.category_key` strings), then one "other" code for
    the rest; a missing value is NaN.

    >>> codes = CategoryCodes.fit({"c": ["b", "a", "b", None]}, ["c"])
    >>> codes.transform({"c": ["a", "b", "z", None]})[:, 0].tolist()
    [1.0, 0.0, 2.0, nan]
    """

    def __init__(self, features: Sequence[str], categories: Sequence[Sequence[str]]) -> None:
        self.features = list(features)
        self.categories = [list(c) for c in categories]
        self._index = [{k: i for i, k in enumerate(c)} for c in self.categories]

    @staticmethod
    def _keys(table: Any, name: str) -> list[str | None]:
        column = table[name]
        values = (column.to_pylist() if hasattr(column, "to_pylist")
                  else column.tolist() if hasattr(column, "tolist") else list(column))
        return [None if v is None or (isinstance(v, float) and v != v) else category_key(v)
                for v in values]

    @classmethod
    def fit(cls, table: Any, features: Sequence[str]) -> CategoryCodes:
        categories = []
        for name in features:
            counts = Counter(k for k in cls._keys(table, name) if k is not None)
            ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            categories.append([k for k, _ in ranked[:MAX_CATEGORIES]])
        return cls(features, categories)

    def transform(self, table: Any) -> FloatArray:
        """An (n, c) matrix of codes."""
        columns = []
        for name, index in zip(self.features, self._index, strict=True):
            other = float(len(index))
            columns.append(np.array([math.nan if k is None else index.get(k, other)
                                     for k in self._keys(table, name)], dtype=np.float64))
        return np.column_stack(columns) if columns else np.empty((0, 0))


class DomainClassifierDrift:
    """Per window, can a seeded gradient-boosted classifier tell the window from the reference?

    ``features``: numeric columns, ``categorical``: categorical ones (codes of the reference's
    categories, split natively by the classifier); by default every numeric column and every
    other one (strings, bools) as categorical. ``sample_size`` rows of the window (all if fewer,
    evenly spaced otherwise) against as many reference rows (a seeded draw), ``folds``-fold
    stratified cross-validation; ``alpha`` the per-window false-alarm probability the threshold
    aims at. ``null_runs`` calibrations run at construction (each ``folds`` fits), so building
    costs about ``null_runs`` windows. A reference longer than ``max_reference`` rows is kept as
    a seeded sample of that many. ``max_bins``, ``max_leaf_nodes`` and ``learning_rate``: the
    boosted trees' (coarser than scikit-learn's 255 and 31, twice its 0.1 step: the fit's cost is
    mostly per tree node. On 1,000 rows against 1,000 with 25 features, 2 folds: 20 iterations at
    the library's settings 99 ms CPU, at these 43 ms, 10 iterations at these 29 ms; a 90-degree
    rotation of two correlated features reads a mean AUC of 0.80, 0.80 and 0.80 (10 iterations at
    a 0.1 step: 0.77), clean windows 0.50; 8 windows each, one run).
    Needs scikit-learn (``pip install 'driftline[multivariate]'``).
    """

    _validated = False
    """True once a fit has passed scikit-learn's check of the settings (later fits skip it)."""

    def __init__(self, reference: Any, *, features: Sequence[str] | None = None,
                 categorical: Sequence[str] | None = None, sample_size: int = 1_000,
                 folds: int = 3, alpha: float = 0.001,
                 null_runs: int = 6, max_iter: int = 60, top_k: int = 5, seed: int = 0,
                 max_reference: int = 50_000, rank_quiet: bool = True, max_bins: int = 63,
                 max_leaf_nodes: int = 15, learning_rate: float = 0.2) -> None:
        _require_sklearn()  # the class itself is looked up per fit: an instance pickles without it
        numeric = list(features) if features is not None else numeric_features(reference)
        if categorical is None:
            categorical = ([] if features is not None
                           else [c for c in table_columns(reference) if c not in numeric])
        self._codes = CategoryCodes.fit(reference, categorical)
        self.features = numeric + list(categorical)
        """Every feature the classifier sees: the numeric ones, then the categorical ones."""
        if not self.features:
            raise ValueError("the domain classifier needs at least one feature")
        self._n_numeric = len(numeric)
        reference_rows = self._matrix(reference)
        if reference_rows.shape[0] > max_reference:  # a seeded sample bounds memory
            keep = np.random.default_rng([seed, 0x726566]).choice(reference_rows.shape[0], max_reference,
                                                                  replace=False)
            reference_rows = reference_rows[np.sort(keep)]
        self._reference = reference_rows
        if self._reference.shape[0] < 2 * folds:
            raise ValueError("the reference is too small for the domain classifier")
        self.sample_size = sample_size
        self.folds = folds
        self.alpha = alpha
        self.max_iter = max_iter
        self.max_bins = max_bins
        self.max_leaf_nodes = max_leaf_nodes
        self.learning_rate = learning_rate
        self.top_k = top_k
        self.seed = seed
        self.rank_quiet = rank_quiet
        """False: separating features are ranked for drifted windows only (the permutations cost
        about half as much again as the folds' fits; the pipeline's choice)."""
        self.z = float(-ndtri(alpha))
        self.inflation = self._calibrate(null_runs)

    def _calibrate(self, runs: int) -> float:
        """The null AUC's sd over the Mann-Whitney formula's, from reference-vs-reference runs."""
        if runs < 2:
            return 1.0
        n = min(self.sample_size, self._reference.shape[0] // 2)
        aucs = []
        for run in range(runs):
            rng = np.random.default_rng([self.seed, 0x6E756C6C, run])
            rows = rng.permutation(self._reference.shape[0])[: 2 * n]
            auc, _ = self._cross_validated(self._reference[rows[:n]], self._reference[rows[n:]], rng,
                                           importances=False)
            aucs.append(auc)
        # The spread about 0.5 (the known null mean), so a few runs cannot shrink it by chance
        # of a shifted mean; never below the independent-folds formula.
        spread = math.sqrt(float(np.mean((np.asarray(aucs) - 0.5) ** 2)))
        return max(1.0, spread / _mann_whitney_sd(n, n))

    def threshold(self, n_reference: int, n_window: int) -> float:
        """The drift threshold on the AUC for samples of these sizes."""
        return 0.5 + self.z * self.inflation * _mann_whitney_sd(n_reference, n_window)

    def score(self, window: Any, *, ordinal: int = 0) -> DomainResult:
        """Compare a window (a table) with the reference; ``ordinal`` (e.g. the window's start)
        seeds the reference draw, so replaying a window gives the same result."""
        x = self._matrix(window)
        if x.shape[0] < self.folds:
            raise ValueError(f"a window needs at least {self.folds} rows")
        rng = np.random.default_rng([self.seed, ordinal])
        if x.shape[0] > self.sample_size:
            x = x[np.linspace(0, x.shape[0] - 1, self.sample_size).astype(np.int64)]
        n_ref = min(x.shape[0], self._reference.shape[0])
        ref = self._reference[rng.choice(self._reference.shape[0], n_ref, replace=False)]
        threshold = self.threshold(n_ref, x.shape[0])
        auc, importance = self._cross_validated(ref, x, rng, importances=True, threshold=threshold)
        ranked = sorted(zip(self.features, importance, strict=True), key=lambda t: (-t[1], t[0]))
        return DomainResult(
            auc=auc, threshold=threshold, drifted=auc >= threshold, n_reference=n_ref,
            n_window=int(x.shape[0]),
            top_features=[(f, float(v)) for f, v in ranked[: self.top_k] if v > 0],
        )

    def _matrix(self, table: Any) -> FloatArray:
        parts = []
        if self._n_numeric:
            parts.append(numeric_matrix(table, self.features[: self._n_numeric]))
        if self._codes.features:
            parts.append(self._codes.transform(table))
        return np.hstack(parts)

    def _cross_validated(self, ref: FloatArray, win: FloatArray, rng: np.random.Generator, *,
                         importances: bool, threshold: float = -math.inf) -> tuple[float, FloatArray]:
        """Out-of-fold AUC and, if ``importances``, each feature's mean AUC drop when shuffled
        (zeros when ``rank_quiet`` is off and the AUC stays below ``threshold``)."""
        x = np.vstack([ref, win])
        y = np.concatenate([np.zeros(ref.shape[0], np.int64), np.ones(win.shape[0], np.int64)])
        # Stratified folds: each class's rows shuffled, then dealt round-robin.
        fold = np.empty(y.size, np.int64)
        for label in (0, 1):
            rows = np.flatnonzero(y == label)
            fold[rng.permutation(rows)] = np.arange(rows.size) % self.folds
        oof = np.empty(y.size)
        drops = np.zeros(x.shape[1])
        # One thread: on a few thousand rows OpenMP's threads cost more than they save (measured
        # 1.5 s against 34 s wall per window on a loaded 2-core machine), and results are the same.
        # scikit-learn checks the classifier's settings in the first fit only (the null
        # calibration's), not in each window's: about 0.5 ms of a 10 ms fit, the same models.
        with _thread_pools().limit(limits=1), _sklearn_config(skip_parameter_validation=self._validated):
            models = self._folds(x, y, fold, oof)
            auc = auc_score(y, oof)
            if importances and (self.rank_quiet or auc >= threshold):
                for k, model in enumerate(models):
                    test = fold == k
                    base = auc_score(y[test], oof[test])
                    for j in range(x.shape[1]):
                        shuffled = x[test].copy()
                        shuffled[:, j] = rng.permutation(shuffled[:, j])
                        drops[j] += base - auc_score(y[test], model.predict_proba(shuffled)[:, 1])
        return auc, drops / self.folds

    def _folds(self, x: FloatArray, y: npt.NDArray[np.int64], fold: npt.NDArray[np.int64],
               oof: FloatArray) -> list[Any]:
        """Fit one model per fold, fill the out-of-fold scores; the fitted models."""
        models = []
        for k in range(self.folds):
            test = fold == k
            model = _binned_classifier()(
                max_iter=self.max_iter, max_bins=self.max_bins, max_leaf_nodes=self.max_leaf_nodes,
                learning_rate=self.learning_rate, random_state=self.seed, early_stopping=False,
                categorical_features=(np.arange(x.shape[1]) >= self._n_numeric
                                      if self._codes.features else None),
            )
            model.fit(x[~test], y[~test])
            oof[test] = model.predict_proba(x[test])[:, 1]
            models.append(model)
            self._validated = True  # the settings passed scikit-learn's check once
        return models
