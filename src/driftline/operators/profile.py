"""Reference profiles: what a model's inputs and outputs looked like when it was trusted.

A profile comes from the training table (:func:`build_profile`) or, when a model has none, from
its first full window (:func:`profile_from_window`). Both go through :class:`FeatureStats`, so a
reference bin and a window bin place every value by the same sketch bucket: a value that sits
exactly on a bin edge can never land on different sides in the two histograms. The JSON form
(``model_dump_json``) is what ClickHouse stores and the profiles topic carries.

>>> p = build_profile("m", "1", {"x": [float(i) for i in range(100)], "c": ["a"] * 70 + ["b"] * 30},
...                   label_column=None, prediction_column=None, bins=4, top_k=1, created_at_ms=0)
>>> p.features["x"].kind, p.features["x"].ref_counts
('numeric', [24, 25, 25, 26])
>>> p.features["c"].categories, p.features["c"].ref_counts, p.features["c"].bin_labels
(['a'], [70, 30], ['a', '__other__'])
>>> ReferenceProfile.model_validate_json(p.model_dump_json()) == p
True
"""

from __future__ import annotations

import hashlib
import math
import time
import weakref
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from driftline.operators.sketch import RELATIVE_ACCURACY, QuantileSketch
from driftline.operators.window_stats import (
    OVERFLOW,
    FeatureStats,
    MergedWindow,
    category_key,
    float_array,
    valid_numbers,
)

OTHER_LABEL = "__other__"

Task = Literal["classification", "regression"]


class FeatureProfile(BaseModel):
    """Reference distribution of one feature (or of the model's predictions).

    Numeric: ``len(edges) + 1`` bins ``(-inf, e0), [e0, e1), ..., [ek, inf)`` and the reference
    ``sketch`` (for KS and Wasserstein). Categorical: one bin per kept category, then "other".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["numeric", "categorical"]
    edges: list[float] = Field(default_factory=list, description="interior bin edges (numeric)")
    categories: list[str] = Field(default_factory=list, description="top-k categories; 'other' is last")
    ref_counts: list[int] = Field(description="reference count per bin")
    n: int = Field(ge=0, description="values the profile was built from")
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    sketch: dict[str, Any] | None = Field(
        default=None, description="QuantileSketch.to_dict() of the reference"
    )

    @model_validator(mode="after")
    def _consistent(self) -> FeatureProfile:
        if min(self.ref_counts, default=0) < 0:
            raise ValueError("ref_counts are counts: none may be negative")
        if self.kind == "numeric":
            if not self.edges or self.sketch is None:
                raise ValueError("a numeric profile needs edges and a sketch")
            if len(self.ref_counts) != len(self.edges) + 1:
                raise ValueError("a numeric profile needs len(edges) + 1 ref_counts")
            # what the scorer and the detectors decode, and compare with the windows' sketches
            if QuantileSketch.checked(self.sketch).relative_accuracy != RELATIVE_ACCURACY:
                raise ValueError(f"a reference sketch's alpha must be the windows' ({RELATIVE_ACCURACY})")
        elif len(self.ref_counts) != len(self.categories) + 1:
            raise ValueError("a categorical profile needs len(categories) + 1 ref_counts ('other' last)")
        return self

    def reference_sketch(self) -> QuantileSketch:
        """The reference sketch of a numeric profile."""
        if self.sketch is None:
            raise ValueError("categorical profiles have no sketch")
        return QuantileSketch.from_dict(self.sketch)

    @property
    def bin_labels(self) -> list[str]:
        if self.kind == "categorical":
            return [*self.categories, OTHER_LABEL]
        e = [f"{x:.6g}" for x in self.edges]
        return [f"< {e[0]}", *(f"[{lo}, {hi})" for lo, hi in pairwise(e)), f">= {e[-1]}"]


class SeasonalFeature(BaseModel):
    """One numeric feature's cycle (:mod:`driftline.operators.seasonal`): its level and scale
    per slot, and the distribution of its standardised values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: list[float] = Field(description="the feature's mean per slot")
    std: list[float] = Field(description="sd per slot of the values around the interpolated level")
    n: list[int] = Field(description="training values per slot")
    strength: float = Field(description="share of the feature's variance its level cycle explains")
    residual: FeatureProfile = Field(description="profile of the standardised training values")


class SeasonSection(BaseModel):
    """A profile's cycle: ``period_s`` seconds in ``slots`` slots from 00:00 of ``timezone``'s
    local time (UTC unless named), and the numeric features that follow it (the others keep their
    pooled reference)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    period_s: int = Field(gt=0)
    slots: int = Field(gt=0)
    features: dict[str, SeasonalFeature]
    timezone: str = Field(default="UTC", description="IANA zone whose local time the slots follow")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        if name != "UTC":
            try:
                ZoneInfo(name)
            except (ValueError, ZoneInfoNotFoundError):
                raise ValueError(f"unknown time zone {name!r} (an IANA name, e.g. Europe/Berlin)") from None
        return name

    @model_validator(mode="after")
    def _a_value_per_slot(self) -> SeasonSection:
        # what standardising reads, slot by slot: a short list raised in the middle of a batch
        for name, feature in self.features.items():
            if not len(feature.mean) == len(feature.std) == len(feature.n) == self.slots:
                raise ValueError(f"seasonal feature {name!r}: mean, std and n need one value per slot")
            if min(feature.std) <= 0.0 or min(feature.n) < 1:
                raise ValueError(
                    f"seasonal feature {name!r}: every slot needs a positive std and training values")
            if feature.residual.kind != "numeric" or feature.residual.n < 2:
                raise ValueError(f"seasonal feature {name!r}: its residual profile needs 2 numbers or more")
        return self

    @model_serializer(mode="wrap")
    def _utc_unsaid(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A UTC section is written as before zones existed: its JSON, season_id and the profile's
        # id are those of a profile built before (its multivariate section's season_id still matches).
        data: dict[str, Any] = handler(self)
        if self.timezone == "UTC":
            data.pop("timezone", None)
        return data

    def __setstate__(self, state: dict[Any, Any]) -> None:
        # pickled (a stage-2 checkpoint) before zones existed: UTC
        state.get("__dict__", {}).setdefault("timezone", "UTC")
        super().__setstate__(state)

    def season_id(self) -> str:
        """A digest of the cycle: a multivariate section made from columns standardised by it
        records it (``"season_id"``), so a section fit on other values is refused."""
        content = self.model_dump(mode="json")
        return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


class ReferenceProfile(BaseModel):
    """Everything drift scoring needs about one model version; ``profile_id`` hashes the content."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str
    model_version: str
    profile_id: str
    source: Literal["training", "first_window"]
    created_at_ms: int
    effective_from_ms: int
    task: Task
    features: dict[str, FeatureProfile]
    prediction: FeatureProfile | None = None
    baseline: dict[str, float] = Field(default_factory=dict, description='e.g. {"accuracy": 0.9}')
    multivariate: dict[str, Any] | None = Field(
        default=None,
        description="fitted multivariate state (driftline.operators.model_watch.multivariate_section); "
        "None: no multivariate monitoring",
    )
    season: SeasonSection | None = Field(
        default=None,
        description="the training's cycle (driftline.operators.seasonal): windows, detectors and the "
        "multivariate section compare like with like; None: one pooled reference",
    )
    detected_cycle: dict[str, float] | None = Field(
        default=None,
        description="features with a strong cycle found at build (share of variance) when no season "
        "was asked for: a hint, nothing uses it",
    )

    @model_validator(mode="after")
    def _usable_multivariate(self) -> ReferenceProfile:
        if self.multivariate is not None:
            # imported here: the monitors' module imports this one
            from driftline.operators.model_watch import check_section

            check_section(self.multivariate)
        return self

    def __setstate__(self, state: dict[Any, Any]) -> None:
        # A checkpoint pickled before a field existed lacks it: the field's default, which is what
        # a profile without it means (``season``: one pooled reference).
        values = state.get("__dict__", {})
        for name, field in type(self).model_fields.items():
            if name not in values and not field.is_required():
                values[name] = field.get_default(call_default_factory=True)
        super().__setstate__(state)


_PARSED: weakref.WeakValueDictionary[bytes, ReferenceProfile] = weakref.WeakValueDictionary()


def parse_profile(value: bytes) -> ReferenceProfile:
    """``ReferenceProfile.model_validate_json(value)``, parsed and checked once per process while
    anything holds the result: every stage-1 shard of a process and its stage 2 read the same
    profiles-topic message, and with the checks a 25-feature profile costs ~3 ms to parse (a
    worker with 1,000 models paid that five times a model at start). Keyed by a digest of the
    bytes; profiles are never changed in place, so one object serves every reader.

    >>> p = build_profile("m", "1", {"x": [1.0, 2.0, 3.0]}, label_column=None, prediction_column=None,
    ...                   bins=2, top_k=2, created_at_ms=0)
    >>> blob = p.model_dump_json().encode()
    >>> parse_profile(blob) is parse_profile(blob) and parse_profile(blob) == p
    True
    """
    key = hashlib.blake2b(value, digest_size=16).digest()
    found = _PARSED.get(key)
    if found is None:
        found = _PARSED[key] = ReferenceProfile.model_validate_json(value)
    return found


def build_profile(
    model_id: str,
    model_version: str,
    columns: Mapping[str, Sequence[Any]],
    *,
    label_column: str | None,
    prediction_column: str | None,
    bins: int,
    top_k: int,
    effective_from_ms: int = 0,
    source: Literal["training", "first_window"] = "training",
    task: Task | None = None,
    created_at_ms: int | None = None,
    feature_stats: Mapping[str, FeatureStats] | None = None,
    multivariate: dict[str, Any] | None = None,
    season: SeasonSection | None = None,
    detected_cycle: dict[str, float] | None = None,
) -> ReferenceProfile:
    """Profile a training table given as columns (lists, numpy/pandas/pyarrow arrays).

    Columns holding strings or bools are categorical, numbers numeric (``None``/NaN are skipped).
    ``task`` defaults to regression when the label (else prediction) column holds floats, to
    classification otherwise. With both a label and a prediction column the baseline is accuracy,
    or MAE and RMSE. ``created_at_ms`` defaults to now; it is not part of ``profile_id``.
    ``feature_stats`` are the features already accumulated (e.g. from arrays with
    :meth:`FeatureStats.add_array`, no Python list per column); ``columns`` then only needs the
    label and prediction columns. ``multivariate``: the section
    :func:`~driftline.operators.model_watch.multivariate_section` made from the same table.
    ``season``: the table's cycle (:func:`driftline.operators.seasonal.fit_season`); a
    multivariate section over any of its features must then be made by
    :func:`driftline.operators.seasonal.seasonal_multivariate_section` (from the standardised
    columns, which the monitor compares with standardised events), else ValueError; ``detected_cycle``:
    the strong cycles found when no season was asked for.
    """
    _check_multivariate_season(multivariate, season)
    data = {name: _as_list(col) for name, col in columns.items()}
    targets = {label_column, prediction_column} - {None}
    missing = targets - data.keys()
    if missing:
        raise ValueError(f"column(s) {sorted(str(m) for m in missing)} not in the table")
    if feature_stats is None:
        feature_stats = {name: _stats(values) for name, values in data.items() if name not in targets}
    features = {}
    for name, stats in feature_stats.items():
        feature = _feature_profile(stats, bins, top_k)
        if feature is not None:
            features[name] = feature
    outputs = [data[c] for c in (label_column, prediction_column) if c is not None]
    if task is None:
        task = "regression" if outputs and _holds_floats(outputs[0]) else "classification"
    prediction = None
    if prediction_column is not None:
        prediction = _output_profile(data[prediction_column], task, bins, top_k)
    baseline: dict[str, float] = {}
    if label_column is not None and prediction_column is not None:
        baseline = _baseline(data[label_column], data[prediction_column], task)
    return _identified(
        model_id=model_id,
        model_version=model_version,
        source=source,
        created_at_ms=int(time.time() * 1000) if created_at_ms is None else created_at_ms,
        effective_from_ms=effective_from_ms,
        task=task,
        features=features,
        prediction=prediction,
        baseline=baseline,
        multivariate=multivariate,
        season=season,
        detected_cycle=detected_cycle,
    )


def _check_multivariate_season(multivariate: Mapping[str, Any] | None, season: SeasonSection | None) -> None:
    """Refuse a multivariate section fit on other values than the monitor will see: raw columns
    under a season (every event would read as off its cycle), or residuals without that season."""
    if multivariate is None:
        return
    named = set(multivariate.get("features", []))
    cyclic = sorted(set(season.features) & named) if season is not None else []
    expected = season.season_id() if season is not None and cyclic else None
    made = multivariate.get("season_id")
    if made == expected:
        return
    if expected is not None:
        raise ValueError(
            f"the multivariate section was not made from the columns standardised by this season "
            f"({', '.join(cyclic)} follow its cycle): make it with "
            "driftline.operators.seasonal.seasonal_multivariate_section(season, columns, times_ms)")
    raise ValueError(f"the multivariate section was made under a season (season_id {made}) the profile does "
                     "not have: pass that season, or make the section from the raw columns")


def numeric_profile(stats: FeatureStats, bins: int) -> FeatureProfile | None:
    """The numeric profile of accumulated values (None when none was a number)."""
    return _feature_profile(stats, bins, 1, kind="numeric")


def feature_profile_of(values: Sequence[float], bins: int) -> FeatureProfile:
    """The numeric profile of a sample of numbers (e.g. the reference's reconstruction errors).

    >>> p = feature_profile_of([1.0, 2.0, 3.0, 4.0], 2)
    >>> p.kind, p.n, sum(p.ref_counts)
    ('numeric', 4, 4)
    """
    profile = _feature_profile(_stats(list(values)), bins, 1, kind="numeric")
    if profile is None:
        raise ValueError("no numeric value to profile")
    return profile


def profile_from_window(
    merged: MergedWindow, model_id: str, model_version: str, window_start_ms: int, bins: int, top_k: int
) -> ReferenceProfile:
    """The no-profile case: the first full window becomes the reference, effective from its start.

    The task is classification when the window's predictions carry labels; there is no baseline
    (a window has no ground truth).
    """
    features = {}
    for name in sorted(merged.features):
        feature = _feature_profile(merged.features[name], bins, top_k)
        if feature is not None:
            features[name] = feature
    if merged.prediction_label.n_categorical:
        task: Task = "classification"
        prediction = _feature_profile(merged.prediction_label, bins, top_k, kind="categorical")
    else:
        task = "regression"
        prediction = _feature_profile(merged.prediction_value, bins, top_k, kind="numeric")
    return _identified(
        model_id=model_id,
        model_version=model_version,
        source="first_window",
        created_at_ms=window_start_ms,
        effective_from_ms=window_start_ms,
        task=task,
        features=features,
        prediction=prediction,
        baseline={},
    )


def load_profile_table(path: str | Path) -> dict[str, list[Any]]:
    """Read a CSV or Parquet training table into columns of Python values (nulls as ``None``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        from pyarrow import csv

        table = csv.read_csv(path)
    elif suffix in (".parquet", ".pq"):
        from pyarrow import parquet

        table = parquet.read_table(path)
    else:
        raise ValueError(f"{path}: expected a .csv or .parquet file")
    return table.to_pydict()


def _identified(**fields: Any) -> ReferenceProfile:
    # The id hashes the content, not the creation time: rebuilding from the same data yields the
    # same id, so re-publishing a profile is idempotent in ClickHouse and on the compacted topic.
    draft = ReferenceProfile(profile_id="", **fields)
    # Without the optional sections the content (and id) is what it was before the sections existed.
    exclude = {"profile_id", "created_at_ms"} | {
        name for name in ("multivariate", "season", "detected_cycle") if getattr(draft, name) is None}
    content = draft.model_dump(mode="json", exclude=exclude)
    if draft.multivariate is not None:
        content["multivariate"] = multivariate_identity(draft.multivariate)
    digest = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    return draft.model_copy(update={"profile_id": digest})


def multivariate_identity(section: Mapping[str, Any]) -> Any:
    """What a multivariate section contributes to the profile id: its ``source`` digest (of the
    training columns and options it was fitted from) with the season it was made under, not its
    fitted floats, which differ in the last bits from one CPU's BLAS kernels to another's. A
    section made before it carried a source is hashed whole, so its profile keeps its id."""
    if "source" not in section:
        return dict(section)
    return {key: section[key] for key in ("features", "source", "season_id") if key in section}


def _feature_profile(
    stats: FeatureStats, bins: int, top_k: int, kind: Literal["numeric", "categorical"] | None = None
) -> FeatureProfile | None:
    if kind is None:
        if not stats.n and not stats.n_categorical:
            return None  # never observed with a usable value: nothing to compare against
        kind = "numeric" if stats.n >= stats.n_categorical else "categorical"
    if kind == "numeric":
        if not stats.n:
            return None
        probs = np.arange(1, bins) / bins
        # Duplicate quantiles (discrete data) would make empty bins; unique keeps one edge each.
        edges = np.unique(stats.sketch.quantile_edges(probs))
        variance = stats.variance
        return FeatureProfile(
            kind="numeric",
            edges=edges.tolist(),
            ref_counts=stats.sketch.histogram(edges).tolist(),
            n=stats.n,
            mean=stats.mean,
            std=math.sqrt(variance) if variance is not None else None,
            min=stats.min,
            max=stats.max,
            sketch=stats.sketch.to_dict(),
        )
    counts = {k: c for k, c in stats.categories.items() if k != OVERFLOW}
    if not counts:
        return None
    top = sorted(counts, key=lambda k: (-counts[k], k))[:top_k]
    kept = [counts[k] for k in top]
    total = stats.n_categorical
    return FeatureProfile(kind="categorical", categories=top, ref_counts=[*kept, total - sum(kept)], n=total)


def _stats(values: list[Any]) -> FeatureStats:
    stats = FeatureStats()
    stats.add(values)
    return stats


def _output_profile(values: list[Any], task: Task, bins: int, top_k: int) -> FeatureProfile | None:
    stats = FeatureStats()
    if task == "classification":
        stats.add([None if v is None else category_key(v) for v in values])
        return _feature_profile(stats, bins, top_k, kind="categorical")
    stats.add(values)
    return _feature_profile(stats, bins, top_k, kind="numeric")


def _baseline(labels: list[Any], predictions: list[Any], task: Task) -> dict[str, float]:
    pairs = [(y, p) for y, p in zip(labels, predictions, strict=True) if y is not None and p is not None]
    if task == "classification":
        if not pairs:
            return {}
        return {"accuracy": sum(category_key(y) == category_key(p) for y, p in pairs) / len(pairs)}
    arr = float_array([v for pair in pairs for v in pair]).reshape(-1, 2)
    arr = arr[valid_numbers(arr).all(axis=1)]  # as the join: a pair with an invalid value measures nothing
    err = arr[:, 1] - arr[:, 0]
    if not err.size:
        return {}
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt(np.square(err).mean()))}


def _holds_floats(values: list[Any]) -> bool:
    return any(type(v) is float for v in values)


def _as_list(column: Sequence[Any]) -> list[Any]:
    # numpy and pandas expose tolist(), pyarrow to_pylist(): both yield plain Python values, so
    # numpy scalars (np.bool_ is not a bool) never reach the type dispatch of FeatureStats.add.
    for method in ("tolist", "to_pylist"):
        convert = getattr(column, method, None)
        if convert is not None:
            return list(convert())
    return list(column)
