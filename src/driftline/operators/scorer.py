"""Batch drift scoring without Kafka: a reference table in, per-feature statistics and verdicts out.

:class:`DriftScorer` composes the streaming pipeline's own operators, so a batch score and a window
score of the same data agree: :func:`~driftline.operators.profile.build_profile` turns the reference
table into a :class:`~driftline.operators.profile.ReferenceProfile`, each window column goes through
:class:`~driftline.operators.window_stats.FeatureStats`, and
:func:`~driftline.operators.drift.score_feature` and :func:`~driftline.operators.drift.verdicts`
give the statistics and the Benjamini-Hochberg verdict.

A table is a mapping of column name to values (lists, numpy arrays), a pandas ``DataFrame`` or a
pyarrow ``Table``; numpy, pandas and pyarrow columns are read as arrays (no Python object per
value). Numbers are numeric features; strings, bools and pandas ``category`` columns categorical;
``categorical=[...]`` turns integer codes into categories, and an integer column with few distinct
values left numeric draws a warning. ``None``, NaN and pandas' ``NA`` count as missing,
infinities as invalid.

A feature drifts when its test (KS numeric, chi-square categorical) is significant after
Benjamini-Hochberg across the features at ``fdr_q`` (0.01) *and* the shift is large enough to
matter: by default an effect of at least 0.05 reference standard deviations (Wasserstein distance
over the reference sd; Cohen's w for categories), or PSI >= 0.2 or JS distance >= 0.1. Each result
says why in ``reason``. See :mod:`driftline.operators.drift` and :func:`default_settings`.

>>> import numpy as np
>>> from driftline.config import DriftSettings
>>> rng = np.random.default_rng(0)
>>> reference = {
...     "age": rng.normal(40, 10, 5_000),
...     "income": rng.lognormal(10, 0.5, 5_000),
...     "plan": rng.choice(["free", "pro", "team"], 5_000, p=[0.6, 0.3, 0.1]),
... }
>>> scorer = DriftScorer.from_reference(reference)
>>> scorer.features
['age', 'income', 'plan']
>>> window = {
...     "age": rng.normal(46, 10, 2_000),          # shifted by 0.6 standard deviations
...     "income": rng.lognormal(10, 0.5, 2_000),   # unchanged
...     "plan": rng.choice(["free", "pro", "team"], 2_000, p=[0.3, 0.4, 0.3]),  # new mix
... }
>>> report = scorer.score(window)
>>> report.drifted, report.drifted_features
(True, ['age', 'plan'])
>>> age = report["age"]
>>> age.kind, age.n, age.drifted, age.drifted_by, round(age.effect, 2), round(age.ks, 2)
('numeric', 2000, True, ('ks', 'effect', 'psi', 'js'), 0.59, 0.24)
>>> report["income"].drifted, report["income"].reason
(False, 'ks p_adj 0.981 >= fdr_q 0.01')
>>> print(report.table(columns=("feature", "kind", "n", "effect", "psi", "js", "drifted")))
feature  kind            n  effect     psi      js  drifted
age      numeric      2000  0.5861  0.3380  0.2431  yes
income   numeric      2000  0.0270  0.0053  0.0309  no
plan     categorical  2000  0.7568  0.4631  0.2845  yes
3 features, 2 drifted (age, plan) at fdr_q=0.01, effect >= 0.05 sd or psi >= 0.2 or js >= 0.1
>>> report.to_rows()[2]["feature"], report.to_rows()[2]["chi2_pvalue"] < 1e-12
('plan', True)

A shift of 0.15 standard deviations is highly significant at these sizes and above the effect
floor; the pipeline's ``[drift]`` defaults (no effect floor, PSI 0.2 / JS 0.1) let it pass:

>>> subtle = {**window, "age": rng.normal(41.5, 10, 2_000),
...           "plan": rng.choice(["free", "pro", "team"], 2_000, p=[0.6, 0.3, 0.1])}
>>> r = scorer.score(subtle)
>>> r.drifted_features, r["age"].reason
(['age'], 'ks p_adj 1.8e-07 < fdr_q 0.01 and effect 0.155 sd >= 0.05')
>>> print(DriftScorer(scorer.profile, drift=DriftSettings()).score(subtle)["age"].reason)
ks p_adj 1.8e-07 < fdr_q 0.01 but psi 0.0239 < 0.2, js 0.0656 < 0.1

The profile is the same object ``driftline profile build`` publishes, so a batch reference can be
stored, shipped and loaded back into a scorer:

>>> from driftline.operators.profile import ReferenceProfile
>>> again = DriftScorer(ReferenceProfile.model_validate_json(scorer.profile.model_dump_json()))
>>> again.score(window).drifted_features
['age', 'plan']
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from driftline.config import DriftSettings
from driftline.operators.drift import (
    FeatureScore,
    PreparedReference,
    Scored,
    count_feature,
    score_features,
    verdicts,
)
from driftline.operators.profile import FeatureProfile, ReferenceProfile, build_profile
from driftline.operators.window_stats import FeatureStats, category_key

__all__ = ["DEFAULT_EFFECT_THRESHOLD", "DriftScorer", "FeatureResult", "ScoreReport", "default_settings"]

DEFAULT_EFFECT_THRESHOLD = 0.05
"""The scorer's effect-size floor, in reference standard deviations (see :func:`default_settings`)."""

FEW_DISTINCT = 10
"""An integer reference column with at most this many distinct values draws a warning when it is
scored as numeric: such columns are often category codes."""

_VALUE_TYPES = (bool, int, float, str)
_NUMERIC_TYPES = frozenset({int, float})
_CATEGORICAL_TYPES = frozenset({str, bool})

Kind = Literal["numeric", "categorical"]

ROW_FIELDS = (
    "feature", "kind", "n", "missing", "invalid", "psi", "js", "ks", "ks_pvalue", "wasserstein",
    "chi2", "chi2_pvalue", "effect", "out_of_range", "pvalue", "p_adj", "drifted", "drifted_by", "reason",
)
"""The keys of :meth:`ScoreReport.to_rows`, in order."""

DEFAULT_TABLE_COLUMNS = ("feature", "kind", "n", "missing", "effect", "psi", "js", "p_adj", "drifted",
                         "reason")


def default_settings() -> DriftSettings:
    """The scorer's default thresholds: the pipeline's, plus the effect floor of 0.05 reference sd.

    A feature drifts when its test is significant after Benjamini-Hochberg at ``fdr_q=0.01`` and
    its effect is at least 0.05 reference sd (or PSI >= 0.2, or JS distance >= 0.1). The pipeline
    (``[drift]`` in its settings) leaves the effect floor off: its PSI/JS floors are what
    ``driftline calibrate`` tunes.
    """
    return DriftSettings(effect_threshold=DEFAULT_EFFECT_THRESHOLD)


# -- tables ----------------------------------------------------------------------------------------


def _column_names(table: Any) -> list[str]:
    """Column names of a mapping, a pandas/polars DataFrame or a pyarrow Table (duck typed)."""
    if isinstance(table, Mapping):
        names = list(table.keys())
    elif hasattr(table, "column_names"):  # pyarrow.Table / RecordBatch
        names = list(table.column_names)
    elif hasattr(table, "columns") and hasattr(table, "__getitem__"):  # pandas / polars DataFrame
        names = list(table.columns)
    else:
        raise ValueError(
            f"expected a table: a mapping of column name to values, a pandas DataFrame or a pyarrow "
            f"Table, not {type(table).__name__}"
        )
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise ValueError(f"column names must be strings, got {bad[:5]!r}")
    return names


def _is_missing(value: Any) -> bool:
    # NaN in an object column is how pandas writes a missing string; pd.NA / NaT are missing too.
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return type(value).__name__ in ("NAType", "NaTType")


def _category(value: bool | int | float | str) -> str:
    """A declared-categorical value as its category: integral floats as the integer (3.0 -> '3')."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return category_key(value) if not isinstance(value, float) else repr(value)


@dataclass
class _Column:
    """One column accumulated into window statistics, with what the type checks need."""

    stats: FeatureStats
    integers: bool = False  # the numbers came as integers (category codes, maybe)
    distinct: int | None = None  # distinct integers, when cheap to know (a small range)


def _read_column(name: str, column: Any, kind: Kind | None) -> _Column:
    """Accumulate one table column; ``kind`` forces numeric/categorical, None follows the types.

    numpy, pandas and pyarrow columns take array paths (no Python object per value): floats and
    integers are numeric, bools, strings and pandas ``category`` columns categorical. Other
    columns (lists, object arrays) go value by value. ValueError names the column for values of
    other types.
    """
    if isinstance(column, str | bytes) or not hasattr(column, "__len__"):
        raise ValueError(f"column {name!r} is not a sequence of values ({type(column).__name__})")
    if hasattr(column, "to_pylist") and hasattr(column, "type"):  # pyarrow Array / ChunkedArray
        return _read_arrow(name, column, kind)
    dtype = getattr(column, "dtype", None)
    if dtype is not None:
        if str(dtype) == "category" and hasattr(column, "cat"):  # pandas categorical
            return _read_pandas_categorical(name, column, kind)
        arr = _as_array(column)
        if arr is not None and arr.ndim == 1 and arr.dtype.kind in "fiubU":
            return _read_array(name, arr, kind)
        if kind != "numeric" and hasattr(column, "value_counts") and hasattr(column, "isna"):
            counted = _read_pandas_labels(name, column)  # pandas object/string/boolean columns
            if counted is not None:
                return counted
    for method in ("tolist", "to_pylist", "to_list"):  # numpy/pandas, pyarrow, polars
        convert = getattr(column, method, None)
        if convert is not None:
            return _read_values(name, list(convert()), kind)
    return _read_values(name, list(column), kind)


def _as_array(column: Any) -> np.ndarray[Any, Any] | None:
    if isinstance(column, np.ndarray):
        return column
    dtype = column.dtype
    if not isinstance(dtype, np.dtype):  # pandas nullable Int64/Float64: NA becomes NaN
        if getattr(dtype, "kind", "") in "iuf" and hasattr(column, "to_numpy"):
            return np.asarray(column.to_numpy(dtype=np.float64, na_value=np.nan))
        return None
    return np.asarray(column)


def _read_array(name: str, arr: np.ndarray[Any, Any], kind: Kind | None) -> _Column:
    stats = FeatureStats()
    k = arr.dtype.kind
    if k == "U":
        if kind == "numeric":
            raise ValueError(f"column {name!r} is declared numeric but holds strings (e.g. {str(arr[0])!r})")
        values, counts = np.unique(arr, return_counts=True)
        stats.add_counts(dict(zip(values.tolist(), counts.tolist(), strict=True)))
        return _Column(stats)
    if k == "b" and kind != "numeric":
        hits = int(np.count_nonzero(arr))
        stats.add_counts({"true": hits, "false": arr.size - hits})
        return _Column(stats)
    if kind == "categorical":
        numbers = arr.astype(np.float64, copy=False)
        present = numbers[~np.isnan(numbers)]
        values, counts = np.unique(present, return_counts=True)
        keyed: Counter[str] = Counter()
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            keyed[_category(v)] += c
        stats.add_counts(keyed, missing=arr.size - present.size)
        return _Column(stats)
    stats.add_array(arr)
    if k not in "iu" or not arr.size:
        return _Column(stats)
    lo = int(arr.min())
    spread = int(arr.max()) - lo
    distinct = int(np.count_nonzero(np.bincount(arr - lo))) if spread < 1024 else None
    return _Column(stats, integers=True, distinct=distinct)


def _read_pandas_categorical(name: str, column: Any, kind: Kind | None) -> _Column:
    codes = np.asarray(column.cat.codes, dtype=np.int64)
    categories = list(column.cat.categories)
    present = codes >= 0
    if kind == "numeric":
        lookup = np.array([*map(float, categories), math.nan])  # code -1 (missing) picks the NaN
        return _read_array(name, lookup[codes], kind)
    counts = np.bincount(codes[present], minlength=len(categories)).tolist()
    keyed: Counter[str] = Counter()
    for value, c in zip(categories, counts, strict=True):
        keyed[_category(_plain(name, value))] += c
    stats = FeatureStats()
    stats.add_counts(keyed, missing=int(codes.size - np.count_nonzero(present)))
    return _Column(stats)


def _read_pandas_labels(name: str, column: Any) -> _Column | None:
    """Count a pandas label column with its own hash table; None when it holds numbers or unhashables."""
    try:
        counted = column.value_counts(dropna=True)
    except TypeError:
        return None
    values = [_plain(name, v) for v in counted.index.tolist()]
    if not all(isinstance(v, str | bool) for v in values):
        return None  # numbers in an object column: the value path sorts out mixing and its errors
    keyed: Counter[str] = Counter()
    for value, c in zip(values, counted.tolist(), strict=True):
        keyed[category_key(value)] += c
    stats = FeatureStats()
    stats.add_counts(keyed, missing=len(column) - sum(keyed.values()))
    return _Column(stats)


def _read_arrow(name: str, column: Any, kind: Kind | None) -> _Column:
    import pyarrow.types as pat  # only reached with a pyarrow column in hand

    t = column.type
    if pat.is_integer(t) or pat.is_floating(t):
        return _read_array(name, np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
                           if column.null_count else np.asarray(column.to_numpy()), kind)
    if kind != "numeric" and (pat.is_string(t) or pat.is_large_string(t) or pat.is_boolean(t)
                              or pat.is_dictionary(t)):
        counted = column.value_counts()
        keyed: Counter[str] = Counter()
        missing = 0
        for value, c in zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(),
                            strict=True):
            plain = _plain(name, value)
            if plain is None:
                missing += c
            else:
                keyed[_category(plain)] += c
        stats = FeatureStats()
        stats.add_counts(keyed, missing=missing)
        return _Column(stats)
    return _read_values(name, column.to_pylist(), kind)


def _read_values(name: str, values: list[Any], kind: Kind | None) -> _Column:
    """The value-by-value path: plain Python numbers, strings, bools and None/NaN/NA."""
    types = set(map(type, values))
    if not types <= {*_VALUE_TYPES, type(None)}:
        values = [_plain(name, v) for v in values]
        types = set(map(type, values))
    if float in types:  # NaN is missing (in a string column, pandas' missing string)
        values = [None if v != v else v for v in values]  # only NaN is unequal to itself
    if kind == "numeric" and str in types:
        example = next(v for v in values if isinstance(v, str))
        raise ValueError(f"column {name!r} is declared numeric but holds strings (e.g. {example!r})")
    if kind == "numeric" and bool in types:
        values = [float(v) if isinstance(v, bool) else v for v in values]
    elif kind == "categorical" and types & _NUMERIC_TYPES:
        values = [None if v is None or v != v else _category(v) for v in values]
    stats = FeatureStats()
    stats.add(values)
    integers = int in types and float not in types and not types & _CATEGORICAL_TYPES
    if not integers or kind is not None:
        return _Column(stats)
    present = [v for v in values if v is not None]
    return _Column(stats, integers=True, distinct=len(set(present)) if present else None)


def _plain(name: str, v: Any) -> Any:
    if isinstance(v, np.generic):  # numpy scalars in a plain list (np.str_ is no plain str)
        v = v.item()
    if _is_missing(v):
        return None
    if isinstance(v, _VALUE_TYPES):
        return v
    raise ValueError(
        f"column {name!r} holds {type(v).__name__} values ({v!r}); features are numbers, strings or "
        "bools (None/NaN for missing)"
    )


def _values(name: str, column: Any) -> list[Any]:
    """A label/prediction column as plain Python values (None for missing)."""
    if isinstance(column, str | bytes) or not hasattr(column, "__len__"):
        raise ValueError(f"column {name!r} is not a sequence of values ({type(column).__name__})")
    for method in ("tolist", "to_pylist", "to_list"):
        convert = getattr(column, method, None)
        if convert is not None:
            values = list(convert())
            break
    else:
        values = list(column)
    return [_plain(name, v) for v in values]


def _check_names(table: Any, names: Sequence[str], role: str) -> None:
    available = _column_names(table)
    absent = [n for n in names if n not in available]
    if absent:
        listed = ", ".join(map(repr, available[:30])) + (", ..." if len(available) > 30 else "")
        raise ValueError(
            f"column(s) {', '.join(map(repr, absent))} not in the {role} table (columns: {listed or 'none'})"
        )


def _check_lengths(lengths: Mapping[str, int], role: str) -> int:
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the {role} table's columns differ in length: {dict(lengths)}")
    return next(iter(lengths.values()), 0)


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureResult:
    """One feature of one scored window.

    ``n`` values were compared (finite numbers of a numeric feature, strings/bools of a categorical
    one); ``missing`` were None/NaN/NA, ``invalid`` infinities in a numeric feature. ``pvalue`` is
    the feature's test (``ks_pvalue`` or ``chi2_pvalue``), ``p_adj`` its Benjamini-Hochberg
    adjustment across the window's features (None: not tested, e.g. fewer than ``drift.min_count``
    values). ``effect`` is the shift in reference sd (Wasserstein / reference sd; Cohen's w for a
    categorical feature). ``drifted_by`` names the test and the floors crossed, ``reason`` says why
    the feature did or did not drift, thresholds included. ``score`` keeps the full
    :class:`~driftline.operators.drift.FeatureScore` (histograms, bin labels).
    """

    feature: str
    kind: str
    n: int
    missing: int
    invalid: int
    psi: float | None
    js: float | None
    ks: float | None
    ks_pvalue: float | None
    wasserstein: float | None
    chi2: float | None
    chi2_pvalue: float | None
    effect: float | None
    out_of_range: int
    pvalue: float | None
    p_adj: float | None
    drifted: bool
    drifted_by: tuple[str, ...]
    reason: str
    score: FeatureScore = field(repr=False, compare=False)

    def to_row(self) -> dict[str, Any]:
        """The result as a flat dict (keys :data:`ROW_FIELDS`; ``drifted_by`` joined by commas)."""
        row = {name: getattr(self, name) for name in ROW_FIELDS}
        row["drifted_by"] = ",".join(self.drifted_by)
        return row


def _result(
    name: str,
    score: FeatureScore,
    stats: FeatureStats,
    drifted: bool,
    by: Sequence[str],
    p_adj: float | None,
    reason: str,
) -> FeatureResult:
    # The fields set in one update of the instance's dict, as FeatureResult(...) sets them: a frozen
    # dataclass's __init__ sets each of its 20 fields through object.__setattr__, ~4 us a result
    # against ~0.2, and a window makes ~26 (with many small models, one every few predictions).
    # test_feature_result_is_what_the_dataclass_makes holds the two alike.
    result: FeatureResult = object.__new__(FeatureResult)
    result.__dict__.update(
        feature=name,
        kind=score.kind,
        n=score.count,
        missing=stats.missing,
        invalid=stats.invalid,
        psi=score.psi,
        js=score.js_distance,
        ks=score.ks_stat,
        ks_pvalue=score.ks_pvalue,
        wasserstein=score.wasserstein,
        chi2=score.chi2_stat,
        chi2_pvalue=score.chi2_pvalue,
        effect=score.effect,
        out_of_range=score.out_of_range,
        pvalue=score.pvalue,
        p_adj=p_adj,
        drifted=drifted,
        drifted_by=tuple(by),
        reason=reason,
        score=score,
    )
    return result


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0.0:
            return "0"
        if abs(value) < 1e-3:
            return f"{value:.1e}"
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    if isinstance(value, tuple):
        return ",".join(value) or "-"
    return str(value)


@dataclass(frozen=True)
class ScoreReport:
    """Per-feature results of one window and the model-level verdict.

    ``drifted`` is the model verdict: at least ``drift.min_drifted_features`` features drifted.
    ``prediction`` scores the prediction column when the scorer has one (reported only: like the
    pipeline, it takes no part in the verdict). Index by feature name, iterate over results.

    >>> scorer = DriftScorer.from_reference({"x": list(range(1000)), "c": ["a", "b"] * 500})
    >>> report = scorer.score({"x": list(range(0, 2000, 2)), "c": ["a", "b"] * 500})
    >>> report.n_rows, report.n_features, report.n_tested, report.drifted_features
    (1000, 2, 2, ['x'])
    >>> [r.feature for r in report], "x" in report, report["c"].drifted
    (['x', 'c'], True, False)
    """

    features: dict[str, FeatureResult]
    n_rows: int
    drifted: bool
    drifted_features: list[str]
    settings: DriftSettings = field(repr=False)
    prediction: FeatureResult | None = None

    @property
    def n_features(self) -> int:
        return len(self.features)

    @property
    def n_tested(self) -> int:
        """Features that were hypotheses of the Benjamini-Hochberg family."""
        return sum(r.p_adj is not None for r in self.features.values())

    @property
    def n_drifted(self) -> int:
        return len(self.drifted_features)

    def __getitem__(self, feature: str) -> FeatureResult:
        try:
            return self.features[feature]
        except KeyError:
            known = list(self.features)
            raise KeyError(f"no feature {feature!r} in the report (features: {known})") from None

    def __contains__(self, feature: object) -> bool:
        return feature in self.features

    def __iter__(self) -> Iterator[FeatureResult]:
        return iter(self.features.values())

    def __len__(self) -> int:
        return len(self.features)

    def to_rows(self, *, include_prediction: bool = False) -> list[dict[str, Any]]:
        """One flat dict per feature (``pandas.DataFrame(report.to_rows())`` makes a frame)."""
        rows = [r.to_row() for r in self.features.values()]
        if include_prediction and self.prediction is not None:
            rows.append(self.prediction.to_row())
        return rows

    def table(self, columns: Sequence[str] = DEFAULT_TABLE_COLUMNS) -> str:
        """A fixed-width text table of ``columns`` (any of :data:`ROW_FIELDS`) and a summary line."""
        unknown = [c for c in columns if c not in ROW_FIELDS]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; choose from {list(ROW_FIELDS)}")
        results = list(self.features.values())
        if self.prediction is not None:
            results.append(self.prediction)
        cells = [list(columns)] + [[_fmt(getattr(r, c)) for c in columns] for r in results]
        widths = [max(len(row[i]) for row in cells[:1] + cells[1:]) for i in range(len(columns))]
        left = {"feature", "kind", "drifted", "drifted_by", "reason"}
        lines = []
        for row in cells:
            parts = [
                cell.ljust(widths[i]) if columns[i] in left else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            ]
            lines.append("  ".join(parts).rstrip())
        cfg = self.settings
        names = f" ({', '.join(self.drifted_features)})" if self.drifted_features else ""
        effect = f"effect >= {cfg.effect_threshold:g} sd or " if cfg.effect_threshold is not None else ""
        lines.append(
            f"{self.n_features} features, {self.n_drifted} drifted{names} at fdr_q={cfg.fdr_q:g}, "
            f"{effect}psi >= {cfg.psi_threshold:g} or js >= {cfg.js_threshold:g}"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# -- the scorer ------------------------------------------------------------------------------------


class DriftScorer:
    """Scores windows (tables) against one reference profile, with the pipeline's statistics.

    Build it from a reference table with :meth:`from_reference`, or wrap an existing profile (for
    instance one written by ``driftline profile build --out``). ``drift`` holds the thresholds
    (``fdr_q``, ``effect_threshold``, ``psi_threshold``, ``js_threshold``, ``min_count``; default
    :func:`default_settings`); :meth:`from_reference` also takes ``bins`` and ``top_k`` from it.
    ``categorical`` names numeric-typed columns that hold category codes, ``numeric`` bool columns
    to score as 0/1 numbers. ``profile`` is the
    :class:`~driftline.operators.profile.ReferenceProfile` to publish.

    >>> scorer = DriftScorer.from_reference(
    ...     {"x": [0.5 * i for i in range(400)], "y": [1, 2] * 200, "label": [0, 1] * 200},
    ...     label_column="label", categorical=["y"], drift=DriftSettings(bins=4),
    ... )
    >>> scorer.features, scorer.profile.features["x"].edges, scorer.profile.features["y"].categories
    (['x', 'y'], [49.7, 100.0, 149.0], ['1', '2'])
    >>> scorer.score({"y": [1, 2]})
    Traceback (most recent call last):
    ...
    ValueError: column(s) 'x' not in the window table (columns: 'y')
    >>> scorer.score({"x": ["a", "b"], "y": [1, 2]})
    Traceback (most recent call last):
    ...
    ValueError: column 'x' is numeric in the reference but the window holds strings/bools (e.g. 'a')
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        *,
        drift: DriftSettings | None = None,
        prediction_column: str | None = None,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
    ) -> None:
        if prediction_column is not None and profile.prediction is None:
            raise ValueError(
                f"prediction column {prediction_column!r} given but the profile has no prediction"
            )
        for names, kind in ((categorical, "categorical"), (numeric, "numeric")):
            wrong = [n for n in names if n in profile.features and profile.features[n].kind != kind]
            if wrong:
                raise ValueError(f"column(s) {wrong} declared {kind} but {kind} is not their profile's kind")
        self.profile = profile
        self.drift = drift if drift is not None else default_settings()
        self.prediction_column = prediction_column
        self.categorical = frozenset(categorical)
        self.numeric = frozenset(numeric)
        # Derived once: each window's histograms, KS, Wasserstein and range checks compare against these.
        self._references = {name: PreparedReference.of(f) for name, f in profile.features.items()}
        self._prediction_reference = (None if profile.prediction is None
                                      else PreparedReference.of(profile.prediction))

    @classmethod
    def from_reference(
        cls,
        table: Any,
        *,
        features: Sequence[str] | None = None,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        drift: DriftSettings | None = None,
        label_column: str | None = None,
        prediction_column: str | None = None,
        model_id: str = "batch",
        model_version: str = "reference",
    ) -> DriftScorer:
        """Profile ``table`` (every column but the label and prediction ones, unless ``features``).

        A column's kind follows its type: numbers are numeric; strings, bools and pandas
        ``category`` columns categorical. ``categorical=[...]`` makes number columns categorical
        (integer codes: ``3`` and ``3.0`` are category ``'3'``), ``numeric=[...]`` bool columns
        0/1 numbers. An integer column with at most :data:`FEW_DISTINCT` distinct values left
        numeric draws a ``UserWarning`` (codes, perhaps; naming it in ``numeric`` silences it).

        Raises ValueError for an unknown column, a column holding other values than numbers,
        strings, bools and None/NaN, or a feature without any usable value.
        """
        cfg = drift if drift is not None else default_settings()
        for arg, value in (("features", features), ("categorical", categorical), ("numeric", numeric)):
            if isinstance(value, str):
                raise ValueError(f"{arg} must be a list of column names, not the string {value!r}")
        both = sorted(set(categorical) & set(numeric))
        if both:
            raise ValueError(f"column(s) {both} declared both categorical and numeric")
        names = _column_names(table)
        targets = [c for c in (label_column, prediction_column) if c is not None]
        if features is None:
            wanted = [n for n in names if n not in targets]
        else:
            wanted = list(dict.fromkeys(features))
            overlap = [f for f in wanted if f in targets]
            if overlap:
                raise ValueError(f"column(s) {overlap} cannot be both a feature and the label/prediction")
        if not wanted:
            raise ValueError("the reference table has no feature column")
        undeclared = sorted((set(categorical) | set(numeric)) - set(wanted))
        if undeclared:
            raise ValueError(f"column(s) {undeclared} declared categorical/numeric but not features")
        _check_names(table, [*wanted, *targets], "reference")
        kinds: dict[str, Kind] = {**dict.fromkeys(categorical, "categorical"),
                                  **dict.fromkeys(numeric, "numeric")}
        columns = {name: _read_column(name, table[name], kinds.get(name)) for name in wanted}
        outputs = {name: _values(name, table[name]) for name in targets}
        n_rows = _check_lengths(
            {**{n: c.stats.count for n, c in columns.items()}, **{n: len(v) for n, v in outputs.items()}},
            "reference",
        )
        for name in wanted:
            stats = columns[name].stats
            if (stats.n or stats.invalid) and stats.n_categorical:
                raise ValueError(
                    f"column {name!r} of the reference table mixes numbers and strings/bools; a feature "
                    "is either numeric or categorical"
                )
        if not n_rows:
            raise ValueError("the reference table has no rows")
        for name in wanted:
            column = columns[name]
            few = column.integers and column.distinct is not None and column.distinct <= FEW_DISTINCT
            if few and name not in numeric:
                warnings.warn(
                    f"column {name!r} holds integers with {column.distinct} distinct values and is scored "
                    f"as numeric (KS); if they are codes, pass categorical=[{name!r}] (numeric=[{name!r}] "
                    "keeps it numeric without this warning)",
                    UserWarning,
                    stacklevel=2,
                )
        profile = build_profile(
            model_id,
            model_version,
            outputs,
            label_column=label_column,
            prediction_column=prediction_column,
            bins=cfg.bins,
            top_k=cfg.top_k,
            feature_stats={name: column.stats for name, column in columns.items()},
        )
        unusable = [n for n in wanted if n not in profile.features]
        if unusable:
            raise ValueError(f"column(s) {', '.join(map(repr, unusable))} hold no usable value (all missing)")
        return cls(profile, drift=cfg, prediction_column=prediction_column,
                   categorical=categorical, numeric=numeric)

    @property
    def features(self) -> list[str]:
        """The scored features, in reference-table order."""
        return list(self.profile.features)

    def score(self, window: Any) -> ScoreReport:
        """Score one window table: every reference feature must be a column (extra columns are ignored)."""
        names = self.features
        pred = self.prediction_column
        has_pred = pred is not None and pred in _column_names(window)
        _check_names(window, names, "window")
        stats = {name: self._stats(name, window[name]) for name in names}
        pred_values = _values(pred, window[pred]) if has_pred and pred is not None else None
        lengths = {n: s.count for n, s in stats.items()}
        if pred is not None and pred_values is not None:
            lengths[pred] = len(pred_values)
        n_rows = _check_lengths(lengths, "window")
        pstats = None
        if pred_values is not None and self.profile.prediction is not None:
            pstats = self._prediction_stats(self.profile.prediction, pred_values)
        return self.score_stats(stats, n_rows=n_rows, prediction=pstats)

    def score_stats(
        self,
        features: Mapping[str, FeatureStats],
        *,
        n_rows: int | None = None,
        prediction: FeatureStats | None = None,
    ) -> ScoreReport:
        """Score window statistics already accumulated, e.g. the pipeline's merged partials.

        ``features`` maps feature name to its :class:`FeatureStats`; a profile feature absent from
        it is scored as never observed (not tested), names the profile lacks are ignored.
        ``n_rows`` defaults to the largest ``count``; ``prediction`` is scored against the
        profile's prediction when both exist (reported only).

        >>> scorer = DriftScorer.from_reference({"x": [float(i % 50) for i in range(1_000)]})
        >>> stats = FeatureStats()
        >>> stats.add_array(np.arange(1_000, dtype=np.float64) % 50 + 10)
        >>> report = scorer.score_stats({"x": stats})
        >>> report.n_rows, report.drifted_features, round(report["x"].effect, 1)
        (1000, ['x'], 0.7)
        """
        return self._report(features, n_rows, prediction, distributions=True)

    def count_stats(
        self,
        features: Mapping[str, FeatureStats],
        *,
        n_rows: int | None = None,
        prediction: FeatureStats | None = None,
    ) -> ScoreReport:
        """:meth:`score_stats` of an under-filled window (fewer rows than ``drift.min_count``):
        every result has its count and verdict (not tested, so not drifted; the same verdicts
        :meth:`score_stats` gives there) and no distribution statistic (PSI, JS, KS, Wasserstein,
        histograms: None or empty), which is all the cost of scoring.

        >>> scorer = DriftScorer.from_reference({"x": [float(i % 50) for i in range(1_000)]})
        >>> stats = FeatureStats()
        >>> stats.add_array(np.arange(20, dtype=np.float64))
        >>> report = scorer.count_stats({"x": stats})
        >>> report.n_rows, report["x"].n, report["x"].psi, report["x"].reason
        (20, 20, None, 'not tested: 20 values < min_count 100')
        """
        return self._report(features, n_rows, prediction, distributions=False)

    def _report(self, features: Mapping[str, FeatureStats], n_rows: int | None,
                prediction: FeatureStats | None, *, distributions: bool) -> ScoreReport:
        names = self.features
        stats = {name: features.get(name) or FeatureStats() for name in names}
        if n_rows is None:
            n_rows = max((st.count for st in stats.values()), default=0)
        profiles = self.profile.features
        reference = self.profile.prediction
        pscore: FeatureScore | None = None
        if distributions:  # the window's features (and prediction) scored together
            items: list[Scored] = [(profiles[name], stats[name], self._references[name]) for name in names]
            if prediction is not None and reference is not None:
                items.append((reference, prediction, self._prediction_reference))
            together = score_features(items, self.drift)
            scores = dict(zip(names, together, strict=False))
            pscore = together[-1] if len(together) > len(names) else None
        else:
            scores = {name: count_feature(profiles[name], stats[name], self._references[name])
                      for name in names}
        verdict = verdicts(scores, self.drift)
        results = {}
        for name in names:
            v = verdict.features[name]
            results[name] = _result(
                name, scores[name], stats[name], v.drifted, v.drifted_by, v.p_adj, v.reason
            )
        scored_prediction = None
        if prediction is not None and reference is not None:
            if pscore is None:
                pscore = count_feature(reference, prediction, self._prediction_reference)
            label = self.prediction_column or "prediction"
            scored_prediction = _result(
                label, pscore, prediction, False, (), None, "reported only: not a feature"
            )
        return ScoreReport(
            features=results,
            n_rows=n_rows,
            drifted=verdict.drifted,
            drifted_features=verdict.drifted_features,
            settings=self.drift,
            prediction=scored_prediction,
        )

    def _stats(self, name: str, column: Any) -> FeatureStats:
        profile = self.profile.features[name]
        kind: Kind | None = (
            "categorical" if name in self.categorical else "numeric" if name in self.numeric else None
        )
        stats = _read_column(name, column, kind).stats
        if profile.kind == "numeric" and stats.n_categorical:
            example = next(k for k, c in stats.categories.items() if c)
            raise ValueError(
                f"column {name!r} is numeric in the reference but the window holds strings/bools "
                f"(e.g. {example!r})"
            )
        if profile.kind == "categorical" and (stats.n or stats.invalid):
            number: float | str | None = stats.min if stats.n else "inf"
            raise ValueError(
                f"column {name!r} is categorical in the reference but the window holds numbers "
                f"(e.g. {number!r}); convert them to strings, or pass categorical=[{name!r}] if they are "
                "codes"
            )
        return stats

    @staticmethod
    def _prediction_stats(profile: FeatureProfile, values: list[Any]) -> FeatureStats:
        # As build_profile profiles the prediction column: class labels as category strings.
        stats = FeatureStats()
        if profile.kind == "categorical":
            stats.add([None if v is None else category_key(v) for v in values])
        else:
            stats.add(values)
        return stats

    def __repr__(self) -> str:
        floor = self.drift.effect_threshold
        effect = f", effect>={floor:g}sd" if floor is not None else ""
        return (
            f"DriftScorer(profile={self.profile.profile_id!r}, features={len(self.profile.features)}, "
            f"fdr_q={self.drift.fdr_q:g}{effect})"
        )
