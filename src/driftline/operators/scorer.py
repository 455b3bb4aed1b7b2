"""Batch drift scoring without Kafka: a reference table in, per-feature statistics and verdicts out.

:class:`DriftScorer` composes the streaming pipeline's own operators, so a batch score and a window
score of the same data agree: :func:`~driftline.operators.profile.build_profile` turns the reference
table into a :class:`~driftline.operators.profile.ReferenceProfile`, each window column goes through
:class:`~driftline.operators.window_stats.FeatureStats`, and
:func:`~driftline.operators.drift.score_feature` and :func:`~driftline.operators.drift.verdicts`
give the statistics and the Benjamini-Hochberg verdict.

A table is a mapping of column name to values (lists, numpy arrays), a pandas ``DataFrame`` or a
pyarrow ``Table``. Values are numbers (numeric features), strings or bools (categorical features);
``None``, NaN and pandas' ``NA`` count as missing, infinities as invalid. A feature drifts when its
test (KS numeric, chi-square categorical) is significant after Benjamini-Hochberg across the
features at ``drift.fdr_q`` *and* the shift is practically large (PSI >= ``drift.psi_threshold``
or Jensen-Shannon distance >= ``drift.js_threshold``): see :mod:`driftline.operators.drift`. At
the default thresholds that takes about a quarter of a standard deviation of mean shift, however
large the tables; lower them to flag smaller (significant) shifts.

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
>>> age.kind, age.n, age.drifted, age.drifted_by, round(age.psi, 2), round(age.ks, 2)
('numeric', 2000, True, ('ks', 'psi', 'js'), 0.34, 0.24)
>>> report["income"].drifted, report["income"].p_adj > 0.01
(False, True)
>>> print(report.table(columns=("feature", "kind", "n", "psi", "js", "drifted")))
feature  kind            n     psi      js  drifted
age      numeric      2000  0.3380  0.2431  yes
income   numeric      2000  0.0053  0.0309  no
plan     categorical  2000  0.4631  0.2845  yes
3 features, 2 drifted (age, plan) at fdr_q=0.01, psi >= 0.2 or js >= 0.1
>>> report.to_rows()[2]["feature"], report.to_rows()[2]["chi2_pvalue"] < 1e-12
('plan', True)

A shift of 0.15 standard deviations is highly significant at these sizes but below the default
magnitude floors (PSI 0.2, JS distance 0.1); a lower floor makes it count:

>>> subtle = {**window, "age": rng.normal(41.5, 10, 2_000),
...           "plan": rng.choice(["free", "pro", "team"], 2_000, p=[0.6, 0.3, 0.1])}
>>> r = scorer.score(subtle)
>>> r.drifted_features, round(r["age"].js, 3), r["age"].p_adj < 1e-6
([], 0.066, True)
>>> DriftScorer(scorer.profile, drift=DriftSettings(js_threshold=0.04)).score(subtle).drifted_features
['age']

The profile is the same object ``driftline profile build`` publishes, so a batch reference can be
stored, shipped and loaded back into a scorer:

>>> from driftline.operators.profile import ReferenceProfile
>>> again = DriftScorer(ReferenceProfile.model_validate_json(scorer.profile.model_dump_json()))
>>> again.score(window).drifted_features
['age', 'plan']
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.config import DriftSettings
from driftline.operators.drift import FeatureScore, score_feature, verdicts
from driftline.operators.profile import FeatureProfile, ReferenceProfile, build_profile
from driftline.operators.window_stats import FeatureStats, category_key

__all__ = ["DriftScorer", "FeatureResult", "ScoreReport"]

_VALUE_TYPES = (bool, int, float, str)
_NUMERIC_TYPES = frozenset({int, float})
_CATEGORICAL_TYPES = frozenset({str, bool})

ROW_FIELDS = (
    "feature", "kind", "n", "missing", "invalid", "psi", "js", "ks", "ks_pvalue", "wasserstein",
    "chi2", "chi2_pvalue", "out_of_range", "pvalue", "p_adj", "drifted", "drifted_by",
)
"""The keys of :meth:`ScoreReport.to_rows`, in order."""

DEFAULT_TABLE_COLUMNS = ("feature", "kind", "n", "missing", "psi", "js", "ks", "wasserstein", "pvalue",
                         "p_adj", "drifted")


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


@dataclass
class _Column:
    """A column as plain Python numbers, strings, bools and None (NaN/NA turned None)."""

    values: list[Any]
    numbers: bool  # holds at least one number
    labels: bool  # holds at least one string or bool


def _column(name: str, column: Any) -> _Column:
    """Convert one table column; ValueError naming the column for values of other types."""
    if isinstance(column, str | bytes) or not hasattr(column, "__len__"):
        raise ValueError(f"column {name!r} is not a sequence of values ({type(column).__name__})")
    if hasattr(column, "dtype"):  # numpy array, pandas/polars Series: typed, so no per-value checks
        arr = np.asarray(column)
        if arr.ndim == 1 and arr.dtype.kind in "fiubU":
            return _from_array(arr)
    for method in ("tolist", "to_pylist", "to_list"):  # numpy/pandas, pyarrow, polars
        convert = getattr(column, method, None)
        if convert is not None:
            values = list(convert())
            break
    else:
        values = list(column)
    types = set(map(type, values))
    if not types <= {*_VALUE_TYPES, type(None)}:
        values = [_plain(name, v) for v in values]
        types = set(map(type, values))
    if float in types and types & _CATEGORICAL_TYPES:  # NaN in a string column: pandas' missing
        values = [None if v != v else v for v in values]  # only NaN is unequal to itself
        types = set(map(type, values))
    elif float in types:
        values = _nan_to_none(values)
    return _Column(values, bool(types & _NUMERIC_TYPES), bool(types & _CATEGORICAL_TYPES))


def _from_array(arr: np.ndarray[Any, Any]) -> _Column:
    values = arr.tolist()
    if arr.dtype.kind == "f":
        nan = np.isnan(arr)
        if nan.any():
            values = [None if m else v for v, m in zip(values, nan.tolist(), strict=True)]
        return _Column(values, numbers=not nan.all(), labels=False)
    numbers = arr.dtype.kind in "iu"
    return _Column(values, numbers=numbers and arr.size > 0, labels=not numbers and arr.size > 0)


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


def _nan_to_none(values: list[Any]) -> list[Any]:
    try:
        nan = np.isnan(np.array(values, dtype=np.float64))  # None turns NaN: missing either way
    except OverflowError:  # an int beyond float range
        return [None if v != v else v for v in values]
    if not nan.any():
        return values
    return [None if m else v for v, m in zip(values, nan.tolist(), strict=True)]


def _read(table: Any, names: Sequence[str], role: str) -> dict[str, _Column]:
    available = _column_names(table)
    absent = [n for n in names if n not in available]
    if absent:
        listed = ", ".join(map(repr, available[:30])) + (", ..." if len(available) > 30 else "")
        raise ValueError(
            f"column(s) {', '.join(map(repr, absent))} not in the {role} table (columns: {listed or 'none'})"
        )
    columns = {n: _column(n, table[n]) for n in names}
    lengths = {n: len(c.values) for n, c in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the {role} table's columns differ in length: {lengths}")
    return columns


# -- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureResult:
    """One feature of one scored window.

    ``n`` values were compared (finite numbers of a numeric feature, strings/bools of a categorical
    one); ``missing`` were None/NaN/NA, ``invalid`` infinities in a numeric feature. ``pvalue`` is
    the feature's test (``ks_pvalue`` or ``chi2_pvalue``), ``p_adj`` its Benjamini-Hochberg
    adjustment across the window's features (None: not tested, e.g. fewer than ``drift.min_count``
    values). ``score`` keeps the full :class:`~driftline.operators.drift.FeatureScore` (histograms,
    bin labels).
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
    out_of_range: int
    pvalue: float | None
    p_adj: float | None
    drifted: bool
    drifted_by: tuple[str, ...]
    score: FeatureScore = field(repr=False, compare=False)

    def to_row(self) -> dict[str, Any]:
        """The result as a flat dict (keys :data:`ROW_FIELDS`; ``drifted_by`` joined by commas)."""
        row = {name: getattr(self, name) for name in ROW_FIELDS}
        row["drifted_by"] = ",".join(self.drifted_by)
        return row


def _result(
    name: str, score: FeatureScore, stats: FeatureStats, drifted: bool, by: Sequence[str], p_adj: float | None
) -> FeatureResult:
    return FeatureResult(
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
        out_of_range=score.out_of_range,
        pvalue=score.pvalue,
        p_adj=p_adj,
        drifted=drifted,
        drifted_by=tuple(by),
        score=score,
    )


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
        left = {"feature", "kind", "drifted", "drifted_by"}
        lines = []
        for row in cells:
            parts = [
                cell.ljust(widths[i]) if columns[i] in left else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            ]
            lines.append("  ".join(parts).rstrip())
        cfg = self.settings
        names = f" ({', '.join(self.drifted_features)})" if self.drifted_features else ""
        lines.append(
            f"{self.n_features} features, {self.n_drifted} drifted{names} at fdr_q={cfg.fdr_q:g}, "
            f"psi >= {cfg.psi_threshold:g} or js >= {cfg.js_threshold:g}"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# -- the scorer ------------------------------------------------------------------------------------


class DriftScorer:
    """Scores windows (tables) against one reference profile, with the pipeline's statistics.

    Build it from a reference table with :meth:`from_reference`, or wrap an existing profile (for
    instance one written by ``driftline profile build --out``). ``drift`` holds the thresholds
    (``fdr_q``, ``psi_threshold``, ``js_threshold``, ``min_count``); :meth:`from_reference` also
    takes ``bins`` and ``top_k`` from it. ``profile`` is the
    :class:`~driftline.operators.profile.ReferenceProfile` to publish.

    >>> scorer = DriftScorer.from_reference(
    ...     {"x": [0.5 * i for i in range(400)], "y": [1, 2] * 200, "label": [0, 1] * 200},
    ...     label_column="label", drift=DriftSettings(bins=4),
    ... )
    >>> scorer.features, scorer.profile.features["x"].edges
    (['x', 'y'], [49.7, 100.0, 149.0])
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
    ) -> None:
        if prediction_column is not None and profile.prediction is None:
            raise ValueError(
                f"prediction column {prediction_column!r} given but the profile has no prediction"
            )
        self.profile = profile
        self.drift = drift if drift is not None else DriftSettings()
        self.prediction_column = prediction_column

    @classmethod
    def from_reference(
        cls,
        table: Any,
        *,
        features: Sequence[str] | None = None,
        drift: DriftSettings | None = None,
        label_column: str | None = None,
        prediction_column: str | None = None,
        model_id: str = "batch",
        model_version: str = "reference",
    ) -> DriftScorer:
        """Profile ``table`` (every column but the label and prediction ones, unless ``features``).

        Raises ValueError for an unknown column, a column holding other values than numbers,
        strings, bools and None/NaN, or a feature without any usable value.
        """
        cfg = drift if drift is not None else DriftSettings()
        if isinstance(features, str):
            raise ValueError(f"features must be a list of column names, not the string {features!r}")
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
        columns = _read(table, [*wanted, *targets], "reference")
        for name in wanted:
            if columns[name].numbers and columns[name].labels:
                raise ValueError(
                    f"column {name!r} of the reference table mixes numbers and strings/bools; a feature "
                    "is either numeric or categorical"
                )
        if not any(columns[n].values for n in wanted):
            raise ValueError("the reference table has no rows")
        profile = build_profile(
            model_id,
            model_version,
            {name: column.values for name, column in columns.items()},
            label_column=label_column,
            prediction_column=prediction_column,
            bins=cfg.bins,
            top_k=cfg.top_k,
        )
        unusable = [n for n in wanted if n not in profile.features]
        if unusable:
            raise ValueError(f"column(s) {', '.join(map(repr, unusable))} hold no usable value (all missing)")
        return cls(profile, drift=cfg, prediction_column=prediction_column)

    @property
    def features(self) -> list[str]:
        """The scored features, in reference-table order."""
        return list(self.profile.features)

    def score(self, window: Any) -> ScoreReport:
        """Score one window table: every reference feature must be a column (extra columns are ignored)."""
        names = self.features
        pred = self.prediction_column
        has_pred = pred is not None and pred in _column_names(window)
        columns = _read(window, [*names, *([pred] if has_pred and pred is not None else [])], "window")
        n_rows = len(next(iter(columns.values())).values) if columns else 0
        stats = {name: self._stats(name, self.profile.features[name], columns[name]) for name in names}
        scores = {name: score_feature(self.profile.features[name], stats[name], self.drift) for name in names}
        verdict = verdicts(scores, self.drift)
        results = {
            name: _result(
                name, scores[name], stats[name], verdict.features[name].drifted,
                verdict.features[name].drifted_by, verdict.features[name].p_adj,
            )
            for name in names
        }
        prediction = None
        if has_pred and pred is not None and self.profile.prediction is not None:
            pstats = self._prediction_stats(self.profile.prediction, columns[pred].values)
            pscore = score_feature(self.profile.prediction, pstats, self.drift)
            prediction = _result(pred, pscore, pstats, False, (), None)
        return ScoreReport(
            features=results,
            n_rows=n_rows,
            drifted=verdict.drifted,
            drifted_features=verdict.drifted_features,
            settings=self.drift,
            prediction=prediction,
        )

    @staticmethod
    def _stats(name: str, profile: FeatureProfile, column: _Column) -> FeatureStats:
        values = column.values
        if profile.kind == "numeric" and column.labels:
            example = next(v for v in values if isinstance(v, str | bool))
            raise ValueError(
                f"column {name!r} is numeric in the reference but the window holds strings/bools "
                f"(e.g. {example!r})"
            )
        if profile.kind == "categorical" and column.numbers:
            example = next(v for v in values if type(v) in _NUMERIC_TYPES)
            raise ValueError(
                f"column {name!r} is categorical in the reference but the window holds numbers "
                f"(e.g. {example!r}); convert them to strings"
            )
        stats = FeatureStats()
        stats.add(values)
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
        return (
            f"DriftScorer(profile={self.profile.profile_id!r}, features={len(self.profile.features)}, "
            f"fdr_q={self.drift.fdr_q:g})"
        )
