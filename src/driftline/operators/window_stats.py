"""Profile-agnostic per-window aggregates: what stage 1 accumulates and stage 2 merges.

Stage 1 keeps one :class:`WindowAccumulator` per (window, model, version, segment) and ships
:meth:`WindowAccumulator.to_partial` when the window closes; stage 2 merges the partials of all
shards *in shard order* with :func:`merge_partials` (integer counts and sketches merge exactly; the
floating-point mean/M2 merge is deterministic for a fixed order).

>>> from driftline.schemas.events import Prediction
>>> acc = WindowAccumulator()
>>> acc.add([{"x": 1.0, "c": "a"}, {"x": float("nan"), "c": True}, {"c": None}],
...         [Prediction(label="yes", score=0.9)] * 3, [12.0, None, 8.0])
>>> x = acc.features["x"]
>>> (x.count, x.missing, x.invalid, x.n, x.mean)
(3, 1, 1, 1, 1.0)
>>> acc.features["c"].categories
{'a': 1, 'true': 1}
>>> merged = merge_partials([acc.to_partial(), acc.to_partial()])
>>> (merged.n_events, merged.features["x"].count, merged.latency.mean)
(6, 6, 10.0)
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, ClassVar, Self, cast

import numpy as np
import numpy.typing as npt

from driftline.operators import watch_native
from driftline.operators.columns import OutputColumns
from driftline.operators.sketch import FloatArray, QuantileSketch
from driftline.schemas.events import FeatureValue, Prediction

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.intp] | npt.NDArray[np.int32]

MAX_CATEGORIES = 1000
OVERFLOW = "__overflow__"
MAX_ABS_VALUE = 1e100
"""A number beyond this magnitude is invalid, as NaN and +-inf are: no real feature, score or
latency gets near it, and bounding it keeps every sum of squares finite (a window's M2 is at most
``n * (2 * MAX_ABS_VALUE)**2``; one 1e155 would overflow it to inf)."""

_NONE = type(None)
_CATEGORICAL_TYPES = frozenset({str, bool})
_NUMBER_TYPES = frozenset({int, float})
_FLOAT = frozenset({float})


def category_key(value: str | int | bool) -> str:
    """The canonical category string of a categorical value or class label.

    >>> category_key(True), category_key("a"), category_key(3)
    ('true', 'a', '3')
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def _to_float(value: Any) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range is as unusable as inf
        return math.inf if value > 0 else -math.inf


def valid_numbers(values: FloatArray) -> BoolArray:
    """Where ``values`` holds a number that counts: finite and within ``MAX_ABS_VALUE``.

    >>> valid_numbers(np.array([1.0, -1e100, 1e101, np.inf, np.nan])).tolist()
    [True, True, False, False, False]
    """
    return np.less_equal(np.abs(values), MAX_ABS_VALUE)  # NaN compares false


def float_array(values: Sequence[Any]) -> FloatArray:
    """``values`` as float64: None becomes NaN, an integer beyond float's range +-inf (invalid).

    >>> float_array([1, None, -10**400]).tolist()
    [1.0, nan, -inf]
    """
    try:
        return np.array(values, dtype=np.float64)  # None becomes NaN; the caller counts Nones apart
    except OverflowError:
        return np.array([_to_float(v) for v in values], dtype=np.float64)


class FeatureStats:
    """Counts, exact moments, a quantile sketch and category counts of one feature in one window.

    ``count`` is every event of the window, ``missing`` the absent or null values, ``invalid`` the
    NaN, infinite or beyond ``MAX_ABS_VALUE`` ones; ``n`` valid numbers feed
    ``mean``/``m2``/``min``/``max``/``sketch``; strings and bools feed ``categories`` (at most
    ``MAX_CATEGORIES`` distinct, the rest in ``"__overflow__"``).

    >>> s = FeatureStats()
    >>> s.add([1.0, 2, 3.0, None, float("inf"), "red", 1e308])
    >>> (s.count, s.missing, s.invalid, s.n, s.mean, s.variance, s.min, s.max, s.categories)
    (7, 1, 2, 3, 2.0, 1.0, 1.0, 3.0, {'red': 1})
    """

    __slots__ = ("categories", "count", "invalid", "m2", "max", "mean", "min", "missing", "n", "sketch")

    def __init__(self) -> None:
        self.count = 0
        self.missing = 0
        self.invalid = 0
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.min: float | None = None
        self.max: float | None = None
        self.sketch = QuantileSketch()
        self.categories: dict[str, int] = {}

    @property
    def variance(self) -> float | None:
        """Sample variance of the valid numbers (None below two)."""
        return self.m2 / (self.n - 1) if self.n > 1 else None

    @property
    def n_categorical(self) -> int:
        return sum(self.categories.values())

    def add(self, values: Sequence[FeatureValue]) -> None:
        """Add one value per event (``None`` = absent or null), vectorised over the batch."""
        if not values:
            return
        self.count += len(values)
        types = set(map(type, values))
        if not types & _CATEGORICAL_TYPES:
            # One C-level conversion for the common all-numeric column; Nones turn into NaN there.
            n_none = values.count(None) if _NONE in types else 0
            self.missing += n_none
            self._add_numbers(float_array(values), n_none)
        elif not types & _NUMBER_TYPES:
            counts = Counter(values)
            self.missing += counts.pop(None, 0)
            # The type test above left only str and bool keys once None is popped.
            self._add_counts(_canonical(cast("Counter[str | bool]", counts)))
        else:
            numbers: list[Any] = []
            labels: list[str | bool] = []
            for v in values:
                if v is None:
                    self.missing += 1
                elif isinstance(v, str | bool):
                    labels.append(v)
                else:
                    numbers.append(v)
            self._add_numbers(float_array(numbers), 0)
            self._add_counts(_canonical(Counter(labels)))

    def add_array(self, values: FloatArray) -> None:
        """Add a float array, one value per event: NaN is missing (as None in :meth:`add`), +-inf and
        numbers beyond ``MAX_ABS_VALUE`` invalid.

        The array path of batch callers (numpy, pandas, pyarrow columns): no Python objects per value.

        >>> s = FeatureStats()
        >>> s.add_array(np.array([1.0, np.nan, np.inf, 3.0, -1e200]))
        >>> (s.count, s.missing, s.invalid, s.n, s.mean)
        (5, 1, 2, 2, 2.0)
        """
        arr = np.asarray(values, dtype=np.float64)
        if not arr.size:
            return
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        self.count += arr.size
        self.missing += n_nan
        self._add_numbers(arr, n_nan)

    def add_counts(self, counts: Mapping[str, int], missing: int = 0) -> None:
        """Add category counts (canonical keys, see :func:`category_key`) and ``missing`` null values.

        >>> s = FeatureStats()
        >>> s.add_counts({"a": 3, "b": 1}, missing=2)
        >>> (s.count, s.missing, s.n_categorical, s.categories)
        (6, 2, 4, {'a': 3, 'b': 1})
        """
        self.count += sum(counts.values()) + missing
        self.missing += missing
        self._add_counts({k: c for k, c in counts.items() if c})

    def add_missing(self, n: int) -> None:
        """Count ``n`` events in which the feature was absent."""
        self.count += n
        self.missing += n

    def add_column(self, column: ReducedColumn) -> None:
        """Add one value per event in reduced form: exactly what :meth:`add` does with the values.

        >>> s, t = FeatureStats(), FeatureStats()
        >>> s.add([1.0, None, "a", float("nan"), True])
        >>> t.add_column(ColumnBlock.of([1.0, None, "a", float("nan"), True]).reduce())
        >>> s.to_dict() == t.to_dict()
        True
        """
        self.count += column.n
        self.missing += column.missing
        if column.numbers is not None:
            # the numbers array holds NaN for each missing and categorical value: not invalid ones
            self._add_numbers(column.numbers, column.missing + sum(column.counts.values()))
        if column.counts:
            self._add_counts(column.counts)

    def merge(self, other: FeatureStats, sketch: bool = True) -> None:
        """Add ``other`` into this (Chan et al.'s parallel mean/M2 update for the moments); without
        ``sketch``, all but the quantile sketch (left as it is)."""
        self.count += other.count
        self.missing += other.missing
        self.invalid += other.invalid
        self._merge_moments(other.n, other.mean, other.m2, other.min, other.max)
        if sketch:
            if isinstance(other, SketchValues):
                other.settle()
            self.sketch.merge(other.sketch)
        if other.categories:  # most columns are numeric: no call for nothing to add
            self._add_counts(other.categories)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "missing": self.missing,
            "invalid": self.invalid,
            "n": self.n,
            "mean": self.mean,
            "m2": self.m2,
            "min": self.min,
            "max": self.max,
            "sketch": self.sketch.to_dict(),
            "categories": dict(sorted(self.categories.items())),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureStats:
        """The statistics of :meth:`to_dict`; ValueError naming the field if ``d`` could not come from
        there (a moment that is null, i.e. was not finite, or beyond what valid numbers give).

        >>> FeatureStats.from_dict({**FeatureStats().to_dict(), "m2": None})
        Traceback (most recent call last):
        ...
        ValueError: m2 is None, not a finite number
        """
        s = cls._fields_from(d)
        s.sketch = QuantileSketch.from_dict(d["sketch"])
        return s

    @classmethod
    def _fields_from(cls, d: Mapping[str, Any]) -> Self:
        """A new instance with every field of ``d`` but the sketch (left unset) checked and set."""
        s = cls.__new__(cls)  # every field is set here or by the caller: no default sketch made
        s.count, s.missing, s.invalid = int(d["count"]), int(d["missing"]), int(d["invalid"])
        s.n = int(d["n"])
        s.mean, s.m2 = _moment(d, "mean"), _moment(d, "m2")
        s.min = None if d["min"] is None else _moment(d, "min")
        s.max = None if d["max"] is None else _moment(d, "max")
        if s.m2 < 0.0:
            raise ValueError(f"m2 is negative ({s.m2})")
        s.categories = {str(k): int(v) for k, v in d["categories"].items()}
        return s

    @staticmethod
    def parse(d: Mapping[str, Any]) -> FeatureStats:
        """The statistics of a partial's feature in either form: with its ``sketch`` (every
        version) or its ``values`` (:class:`SketchValues`, a shard's few events)."""
        return FeatureStats.from_dict(d) if "sketch" in d else SketchValues.from_dict(d)

    def __repr__(self) -> str:
        return f"FeatureStats(count={self.count}, n={self.n}, categories={len(self.categories)})"

    def _add_numbers(self, arr: FloatArray, n_none: int) -> None:
        finite = np.isfinite(arr)
        n_finite = int(np.count_nonzero(finite))
        vals = arr if n_finite == arr.size else arr[finite]
        lo, hi = (float(vals.min()), float(vals.max())) if n_finite else (0.0, 0.0)
        if lo < -MAX_ABS_VALUE or hi > MAX_ABS_VALUE:  # the bound costs nothing more unless crossed
            vals = vals[valid_numbers(vals)]
            if vals.size:
                lo, hi = float(vals.min()), float(vals.max())
        self.invalid += arr.size - vals.size - n_none
        if not vals.size:
            return
        mean = float(vals.mean())
        m2 = float(np.square(vals - mean).sum())
        self._merge_moments(vals.size, mean, m2, lo, hi)
        self._sketch_values(vals)

    def _sketch_values(self, vals: FloatArray) -> None:
        self.sketch.add_many(vals)

    def _merge_moments(self, n: int, mean: float, m2: float, lo: float | None, hi: float | None) -> None:
        if not n:
            return
        if not self.n:
            self.n, self.mean, self.m2, self.min, self.max = n, mean, m2, lo, hi
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total
        self.min = lo if self.min is None or (lo is not None and lo < self.min) else self.min
        self.max = hi if self.max is None or (hi is not None and hi > self.max) else self.max

    def _add_counts(self, counts: Mapping[str, int]) -> None:
        cats = self.categories
        new: list[tuple[str, int]] = []
        for key, c in counts.items():
            if key in cats or key == OVERFLOW:
                cats[key] = cats.get(key, 0) + c
            else:
                new.append((key, c))
        room = MAX_CATEGORIES - (len(cats) - (OVERFLOW in cats))
        if len(new) > room:
            # Keep the most frequent newcomers (ties by name): deterministic whatever the dict order.
            new.sort(key=lambda kc: (-kc[1], kc[0]))
            cats[OVERFLOW] = cats.get(OVERFLOW, 0) + sum(c for _, c in new[room:])
            new = new[:room]
        cats.update(new)


class SketchValues(FeatureStats):
    """A :class:`FeatureStats` whose quantile sketch is not built yet: it holds the valid numbers
    (in order) the sketch would be built from, and ships them as ``values`` in place of
    ``sketch``.

    A shard holding few events of a window sends their values: fewer bytes than a sketch's
    buckets, and no sketch built, encoded, parsed, when stage 2 finds the window under-filled
    (no quantile read). Merged with sketches (a filled window), its sketch is built from the
    values as the shard would have: one ``add_many`` of them into an empty sketch, so it equals
    the sketch a :class:`FeatureStats` of one chunk holds, bucket for bucket. Stage 2 reads it
    from a partial of :data:`VALUES_FORM` (what shards send now: no moments, stage 2 computes
    them) and from the form shards sent before it, this class's :meth:`to_dict` (counts, moments
    and categories as :class:`FeatureStats` ships them, ``values`` in place of ``sketch``).

    >>> s, t = FeatureStats(), SketchValues()
    >>> s.add([3.0, None, -1.5, "a", float("nan")]); t.add([3.0, None, -1.5, "a", float("nan")])
    >>> wire = t.to_dict()
    >>> wire["values"], "sketch" in wire
    ([3.0, -1.5], False)
    >>> u = FeatureStats.parse(wire)
    >>> u.settle(); u.to_dict() == s.to_dict()
    True
    """

    __slots__ = ("values",)

    def __init__(self) -> None:
        super().__init__()
        # an array as stage 1 adds them, and as parsed from the values form (a row of a matrix of
        # the partial's columns; a list only from the older form): stage 2 holds a window's parsed
        # partials until it closes, and a list of floats is an object the cyclic collector scans
        self.values: FloatArray | list[float] | None = None

    def _sketch_values(self, vals: FloatArray) -> None:
        # a second chunk (a window of more events than a chunk) keeps them in order after the first
        self.values = vals if self.values is None else np.concatenate([self.values, vals])

    def settle(self) -> None:
        """Build the sketch from the values (once): the sketch ``to_dict`` then ships."""
        if self.sketch.empty:
            # an empty sketch may be _UNBUILT (or, unpickled, one copy every column shares): a
            # column adds only into a sketch of its own
            self.sketch = QuantileSketch()
        if self.values is not None:
            self.sketch.add_many(np.asarray(self.values, dtype=np.float64))
            self.values = None

    def merge(self, other: FeatureStats, sketch: bool = True) -> None:
        if sketch:
            self.settle()  # a sketch of its own to merge into (a parsed one shares _UNBUILT)
        super().merge(other, sketch)

    def to_dict(self) -> dict[str, Any]:
        if self.values is None and self.sketch.count:
            return super().to_dict()
        d = super().to_dict()
        del d["sketch"]
        values = self.values
        d["values"] = [] if values is None else values if isinstance(values, list) else values.tolist()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SketchValues:
        """The statistics of :meth:`to_dict` (``values`` in place of ``sketch``); ValueError unless
        the values are the ``n`` valid numbers the moments describe."""
        s = cls._fields_from(d)
        s.sketch = _UNBUILT
        values = d["values"]
        # a few numbers: checked in Python (an array and its test cost more than the list's loop)
        if (type(values) is not list or len(values) != s.n
                or not all(type(v) is float and -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE for v in values)):
            raise ValueError(f"values are not the window's {s.n} valid numbers")
        s.values = values if values else None
        return s


_UNBUILT = QuantileSketch()
"""The empty sketch every parsed :class:`SketchValues` shares until :meth:`SketchValues.settle`
gives it its own (most are never merged with sketches): never added to."""

VALUES_FORM = "values"
"""The ``form`` of a partial whose columns carry their counts and valid numbers only (no moments,
no sketch): what :func:`values_partial` makes of a window a shard holds few events of. A partial
without ``form`` carries a :meth:`FeatureStats.to_dict` per column (with its ``sketch`` or, as
:class:`SketchValues`, its ``values``)."""


def values_partial(parts: Sequence[EventColumns]) -> dict[str, Any]:
    """The partial of a window's events ``parts`` (column blocks in log order, none accumulated) in
    :data:`VALUES_FORM`: per column its ``missing`` and ``invalid`` counts, its valid ``values`` in
    order and its ``categories`` (every column counts every event). Parsed, it is the partial a
    :class:`WindowAccumulator` of one chunk of these events sends, bit for bit: stage 2 computes the
    moments from the values with numpy as :meth:`FeatureStats.add_column` does, and builds a sketch
    from them only if the window fills (:class:`SketchValues`).

    Plain lists and dicts, no statistics object per column: a shard closes a window of a handful
    of events per few predictions when many models share it (docs/scaling.md, Many models).

    >>> from driftline.schemas.events import Prediction
    >>> cols = EventColumns.of([{"x": 2.0, "c": "a"}, {"x": float("inf")}], [Prediction(label=1)] * 2,
    ...                        [None, 4.0])
    >>> partial = values_partial([cols])
    >>> partial["features"]["x"], partial["features"]["c"]["categories"]
    ({'missing': 0, 'invalid': 1, 'values': [2.0], 'categories': {}}, {'a': 1})
    >>> acc = WindowAccumulator()
    >>> acc.add_chunk([cols])
    >>> parsed, whole = merge_partials([partial]), merge_accumulators([acc])
    >>> parsed.features["x"].to_dict() == whole.features["x"].to_dict()  # its sketch built, too
    True
    """
    sizes = [part.n for part in parts]
    n = sum(sizes)
    blocks: list[dict[str, ColumnBlock]]
    first = parts[0] if parts else None
    if isinstance(first, _TakenColumns) and all(
            isinstance(part, _TakenColumns) and part.in_matrix == first.in_matrix for part in parts[1:]):
        # every part taken from a decoded batch of one layout: its all-float columns listed by rows,
        # and every event carries every name (no block has a present mask)
        taken = cast("list[_TakenColumns]", parts)
        names = sorted(set(first.in_matrix).union(*[part.others for part in taken]))
        plain = _matrix_columns(first.in_matrix, [part.matrix for part in taken])
        # the float columns' blocks only where a value is not valid (each column then on its own)
        blocks = [part.others for part in taken] if plain else [part.features for part in taken]
    else:
        blocks = [part.features for part in parts]
        # A column every part holds as float64 alone (the decoder's all-float columns: most
        # features) takes no call per block: all such columns' numbers are listed, checked and cut
        # at once.
        numbers = [{name: block.numbers for name, block in columns.items() if block.numbers is not None
                    and block.codes is None and block.missing is None and block.present is None}
                   for columns in blocks]
        floats = set(numbers[0]).intersection(*numbers[1:]) if numbers else set()
        plain = _float_columns(n, sorted(floats), numbers)
        # the others as ColumnBlock.any_present, inline: ~30 columns a part, a few parts a window
        names = sorted(floats.union([name for columns in blocks for name, block in columns.items() if
                                     name not in floats and (block.present is None or block.present.any())]))
    return {
        "form": VALUES_FORM,
        "n_events": n,
        "features": {name: plain[name] if name in plain else
                     _values_column(n, sizes, [columns.get(name) for columns in blocks]) for name in names},
        "prediction_label": _values_column(n, sizes, [part.label for part in parts]),
        "prediction_value": _values_column(n, sizes, [part.value for part in parts]),
        "latency": _values_column(n, sizes, [part.latency for part in parts]),
    }


def _matrix_columns(names: Sequence[str], matrices: Sequence[FloatArray]) -> dict[str, Any]:
    """:func:`_float_columns` of the columns ``names``, the rows of each part's matrix: one list per
    part's matrix."""
    if len(matrices) == 1:
        rows = matrices[0].tolist()
    else:
        rows = [list(chain.from_iterable(parts))
                for parts in zip(*[matrix.tolist() for matrix in matrices], strict=True)]
    values = list(chain.from_iterable(rows))
    # NaN compares false
    if len([v for v in values if -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE]) < len(values):
        return {}
    return {name: {"missing": 0, "invalid": 0, "values": row, "categories": {}}
            for name, row in zip(names, rows, strict=True)}


def _float_columns(n: int, names: list[str], numbers: Sequence[Mapping[str, FloatArray]]) -> dict[str, Any]:
    """:func:`_values_column` of each of ``names``, columns of ``n`` float64 values (``numbers``: each
    part's arrays by name), made from one list of them all (numpy's concatenate costs more for a
    few values an array); empty unless every value is valid (each column is then made on its own)."""
    values = list(chain.from_iterable([part[name].tolist() for name in names for part in numbers]))
    # NaN compares false
    if len([v for v in values if -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE]) < len(values):
        return {}
    return {name: {"missing": 0, "invalid": 0, "values": values[i * n: (i + 1) * n], "categories": {}}
            for i, name in enumerate(names)}


def _values_column(n: int, sizes: Sequence[int], blocks: Sequence[ColumnBlock | None]) -> dict[str, Any]:
    """One column of :func:`values_partial` (``n`` events) from its block in each part (``sizes``: the
    parts' events; None: a part without the name). A few values each: Python lists cost less here
    than numpy's calls per array."""
    missing = 0
    values: list[float] = []
    counts: dict[str, int] = {}
    for size, block in zip(sizes, blocks, strict=True):
        if block is None:
            missing += size
            continue
        if block.missing is not None:
            missing += int(np.count_nonzero(block.missing))
        codes = block.codes
        if codes is not None:
            keys = block.keys
            cut = len(keys)  # marks a missing or numeric value
            for code in codes.tolist():
                if code < cut:
                    key = keys[code]
                    counts[key] = counts.get(key, 0) + 1
        numbers = block.numbers
        if numbers is not None:
            # NaN (a missing, categorical or NaN value) compares false: only valid numbers pass
            values += [v for v in numbers.tolist() if -MAX_ABS_VALUE <= v <= MAX_ABS_VALUE]
    if not counts:  # numbers only
        return {"missing": missing, "invalid": n - missing - len(values), "values": values,
                "categories": counts}
    n_categorical = sum(counts.values())
    if len(counts) > MAX_CATEGORIES:  # the cap FeatureStats applies (a min_count beyond 1,000)
        capped = FeatureStats()
        capped._add_counts(counts)
        counts = capped.categories
    return {"missing": missing, "invalid": n - missing - n_categorical - len(values), "values": values,
            "categories": dict(sorted(counts.items()))}


def _values_stats(count: int, built: list[SketchValues], small: list[SketchValues],
                  d: Mapping[str, Any]) -> SketchValues:
    """A column of :data:`VALUES_FORM` (``count`` events) as statistics, its moments set (a few
    values, appended to ``small``) or, appended to ``built``, not yet (see :func:`_set_moments`);
    ValueError unless its counts add up to ``count`` and its values are valid numbers. Either list's
    columns still hold their values as parsed lists (see :func:`_hold_as_rows`)."""
    s = SketchValues.__new__(SketchValues)
    missing, invalid = int(d["missing"]), int(d["invalid"])
    s.count, s.missing, s.invalid = count, missing, invalid
    categories = d["categories"]
    values = d["values"]
    # the values' bounds are checked on the moments' min and max (see _set_moments)
    if type(values) is not list or (values and not _FLOAT.issuperset(map(type, values))):
        raise ValueError("values are not valid numbers")
    s.n = n = len(values)
    moments = _small_moments(values) if 0 < n < PAIRWISE_BLOCK else None
    if categories:
        s.categories = cats = {str(k): int(v) for k, v in categories.items()}
        n_categorical = sum(cats.values())
        bad = min(cats.values()) < 0
    else:
        s.categories, n_categorical, bad = {}, 0, False
    if missing < 0 or invalid < 0 or bad or missing + invalid + n + n_categorical != count:
        raise ValueError(f"missing, invalid, values and categories are not the window's {count} events")
    s.sketch = _UNBUILT
    if moments is not None:
        s.values = values
        small.append(s)
        s.mean, s.m2, s.min, s.max = moments
        return s
    s.mean, s.m2, s.min, s.max = 0.0, 0.0, None, None
    if values:
        s.values = values
        built.append(s)
    else:
        s.values = None
    return s


PAIRWISE_BLOCK = 8
"""numpy sums fewer values than this one by one, in order, from 0.0 (its pairwise summation's
innermost case): :func:`_small_moments` adds them so in Python."""


def _small_moments(values: list[float]) -> tuple[float, float, float, float] | None:
    """Mean, M2, min and max of fewer than ``PAIRWISE_BLOCK`` floats, bit for bit what
    :func:`_set_moments` gets from numpy: a quiet model's window holds a few values a column and
    shard, where numpy's cost per call was most of parsing a partial. None (numpy decides) when a
    value is invalid (:func:`_set_moments` says so) or the min or max is a zero (numpy's minimum and
    maximum pick the sign of a zero their own way)."""
    total = 0.0
    for v in values:
        total += v
    low, high = min(values), max(values)
    # a NaN makes the total NaN (min and max may pass it by), an infinite value the min or max
    if not (low >= -MAX_ABS_VALUE and high <= MAX_ABS_VALUE) or math.isnan(total) or not low or not high:
        return None
    mean = total / len(values)
    m2 = 0.0
    for v in values:
        deviation = v - mean
        m2 += deviation * deviation
    return mean, m2, low, high


def _set_moments(stats: Sequence[SketchValues]) -> None:
    """Set each column's moments from its values: bit for bit what :meth:`FeatureStats._add_numbers`
    computes from them as one array. The columns with as many values are reduced as the rows of one
    matrix, each row's sums numpy's pairwise sum along it, as of a 1-D array (a test compares)."""
    for length, group in _by_length(stats).items():
        rows = np.array([s.values for s in group], dtype=np.float64)
        # the ufuncs' reductions, as ndarray.min, max, sum and mean (sum / length) make them, without
        # those methods' Python wrappers (a few us each; a small window's 4 partials have 2-8 groups)
        lows, highs = np.minimum.reduce(rows, axis=1), np.maximum.reduce(rows, axis=1)
        if not (np.minimum.reduce(lows) >= -MAX_ABS_VALUE and np.maximum.reduce(highs) <= MAX_ABS_VALUE):
            raise ValueError("values are not valid numbers: beyond MAX_ABS_VALUE")  # NaN fails too
        means = np.add.reduce(rows, axis=1) / length
        m2s = np.add.reduce(np.square(rows - means[:, None]), axis=1)
        for s, row, mean, m2, lo, hi in zip(group, rows, means.tolist(), m2s.tolist(), lows.tolist(),
                                            highs.tolist(), strict=True):
            # the matrix's row, not the parsed list: see SketchValues.__init__
            s.values, s.mean, s.m2, s.min, s.max = row, mean, m2, lo, hi


def _by_length(stats: Sequence[SketchValues]) -> dict[int, list[SketchValues]]:
    """The columns holding values, by how many they hold."""
    by_length: dict[int, list[SketchValues]] = {}
    for s in stats:
        if s.n:
            by_length.setdefault(s.n, []).append(s)
    return by_length


def _hold_as_rows(stats: Sequence[SketchValues]) -> None:
    """Each column's parsed list of values replaced by a row of one matrix per length (see
    :class:`SketchValues`: an array is no object for the cyclic collector; one per column cost
    ~350 ns, a matrix's row ~75)."""
    for group in _by_length(stats).values():
        for s, row in zip(group, np.array([s.values for s in group], dtype=np.float64), strict=True):
            s.values = row


def _moment(d: Mapping[str, Any], name: str) -> float:
    """Field ``name`` of a serialized :class:`FeatureStats` as a float that merges without overflow."""
    value = d[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} is {value!r}, not a finite number")
    number = float(value)
    # m2 sums squares: at most n * (2 * MAX_ABS_VALUE)**2, far below float's range; a mean of valid
    # numbers may round a little past MAX_ABS_VALUE, hence twice the bound
    if not (math.isfinite(number) if name == "m2" else abs(number) <= 2 * MAX_ABS_VALUE):
        raise ValueError(f"{name} is {value!r}, beyond what valid numbers give")
    return number


def _canonical(counts: Mapping[str | bool, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, c in counts.items():
        k = category_key(key)
        out[k] = out.get(k, 0) + c
    return out


def _columns(
    features: Sequence[Mapping[str, FeatureValue]], names: list[str]
) -> list[tuple[str, Sequence[FeatureValue]]]:
    """One column per feature name, ``None`` where an event lacks the feature."""
    if len(names) > 1:
        try:
            # Visiting each event once (C-level itemgetter, then a C-level transpose) made the whole
            # add() ~1.4x faster than one get() pass per feature: each dict is touched while cached.
            rows = list(map(itemgetter(*names), features))
            return list(zip(names, zip(*rows, strict=True), strict=True))
        except KeyError:
            pass  # some event lacks some feature: fall back to get() per feature
    return [(name, [f.get(name) for f in features]) for name in names]


@dataclass(frozen=True, slots=True)
class ReducedColumn:
    """One chunk of a value column as :meth:`FeatureStats.add_column` takes it: ``n`` events,
    ``missing`` of them absent or null, ``counts`` of the categorical ones by canonical key, and
    the values as float64 with NaN for each missing and categorical one (None when no value is a
    number)."""

    n: int
    missing: int
    counts: dict[str, int]
    numbers: FloatArray | None


class ColumnBlock:
    """One value column (a feature, the prediction's label or value, the latency) of ``n`` events in
    arrays: numbers as float64 (NaN where not a number), category codes (``len(keys)`` where not a
    category) into the canonical ``keys``, the missing (absent or null) and the present (the event
    carries the name, even as null) masks; an array is None where it would hold nothing.

    >>> block = ColumnBlock.of(["a", 2, None, True, "true"])
    >>> block.take(np.array([0, 3, 4])).reduce()
    ReducedColumn(n=3, missing=0, counts={'a': 1, 'true': 2}, numbers=array([nan, nan, nan]))
    """

    __slots__ = ("codes", "keys", "missing", "n", "numbers", "present")

    def __init__(self, n: int, numbers: FloatArray | None, missing: BoolArray | None = None,
                 codes: IntArray | None = None, keys: Sequence[str] = (),
                 present: BoolArray | None = None) -> None:
        self.n = n
        self.numbers = numbers
        self.missing = missing
        self.codes = codes
        self.keys = keys
        self.present = present

    @classmethod
    def of(cls, values: Sequence[Any], present: BoolArray | None = None,
           floats: FloatArray | None = None) -> ColumnBlock:
        """The block of ``values`` (None: absent or null), classified as :meth:`FeatureStats.add` does;
        ``floats``, when given, is ``values`` as float64 (all floats: the decoder's checks built it)."""
        n = len(values)
        if floats is not None:
            return cls(n, floats, None, None, (), present)
        fast = watch_native.NATIVE
        if fast is not None and type(values) is list:
            # a column of categories (str, bool, None: the common one without floats) in one C pass,
            # the codes the steps below give (~4.7x cheaper a value: bench_stage_steps); it refuses
            # any other column
            codes = np.empty(n, dtype=np.int32)
            found = fast.first_codes(values, codes)
            if found is not None:
                distinct, nones = found
                return cls(n, None, codes == len(distinct) if nones else None, codes,
                           [category_key(v) for v in distinct], present)
        types = set(map(type, values))
        if not types & _CATEGORICAL_TYPES:
            missing = None
            if _NONE in types:
                missing = np.fromiter((v is None for v in values), dtype=bool, count=n)
            return cls(n, float_array(values), missing, None, (), present)
        if not types & _NUMBER_TYPES:
            distinct = dict.fromkeys(values)  # True and "true" stay apart here, as in a Counter
            distinct.pop(None, None)
            index = {v: i for i, v in enumerate(distinct)}
            index[None] = len(index)
            codes = np.fromiter(map(index.__getitem__, values), dtype=np.int32, count=n)
            missing = codes == len(distinct) if _NONE in types else None
            return cls(n, None, missing, codes, [category_key(v) for v in distinct], present)
        # Numbers and categories in one column: classified value by value (an int 1 and True would
        # be one key of a dict).
        numbers: list[Any] = []
        code_of: dict[str, int] = {}
        codes_list: list[int] = []
        missing_list: list[bool] = []
        for v in values:
            if v is None:
                numbers.append(None)
                codes_list.append(-1)
                missing_list.append(True)
            elif isinstance(v, str | bool):
                numbers.append(None)
                codes_list.append(code_of.setdefault(category_key(v), len(code_of)))
                missing_list.append(False)
            else:
                numbers.append(v)
                codes_list.append(-1)
                missing_list.append(False)
        codes = np.array(codes_list, dtype=np.int32)
        codes[codes < 0] = len(code_of)
        return cls(n, float_array(numbers), np.array(missing_list, dtype=bool), codes, list(code_of),
                   present)

    @classmethod
    def absent(cls, n: int) -> ColumnBlock:
        """A name none of ``n`` events carries."""
        return cls(n, None, np.ones(n, dtype=bool), None, (), np.zeros(n, dtype=bool))

    def any_present(self) -> bool:
        return self.present is None or bool(self.present.any())

    def take(self, rows: IntArray) -> ColumnBlock:
        """The block of the events at ``rows``."""
        return ColumnBlock(len(rows), None if self.numbers is None else self.numbers[rows],
                           None if self.missing is None else self.missing[rows],
                           None if self.codes is None else self.codes[rows], self.keys,
                           None if self.present is None else self.present[rows])

    def slice(self, start: int, stop: int) -> ColumnBlock:
        """The block of the events ``start:stop`` (views)."""
        return ColumnBlock(stop - start, None if self.numbers is None else self.numbers[start:stop],
                           None if self.missing is None else self.missing[start:stop],
                           None if self.codes is None else self.codes[start:stop], self.keys,
                           None if self.present is None else self.present[start:stop])

    def reduce(self) -> ReducedColumn:
        return _reduce([self])

    @classmethod
    def concat(cls, blocks: Sequence[ColumnBlock]) -> ColumnBlock:
        """The blocks (consecutive events of one column, in order) as one block of fresh arrays: what
        :func:`_reduce` makes of any run of its events is what it makes of the same run of ``blocks``
        (the category codes renumbered into the blocks' keys joined, in first-seen order).

        >>> joined = ColumnBlock.concat([ColumnBlock.of(["b", None]), ColumnBlock.of([2.0]),
        ...                              ColumnBlock.of(["a", "b", True])])
        >>> joined.keys, joined.codes.tolist(), joined.missing.tolist()
        (['b', 'a', 'true'], [0, 3, 3, 1, 0, 2], [False, True, False, False, False, False])
        >>> joined.slice(1, 4).reduce()
        ReducedColumn(n=3, missing=1, counts={'a': 1}, numbers=array([nan,  2., nan]))
        """
        n = 0
        only_numbers = True  # the common column: numbers only, none missing (one concatenate)
        for block in blocks:
            n += block.n
            if (block.numbers is None or block.codes is not None or block.missing is not None
                    or block.present is not None):
                only_numbers = False
        if only_numbers:
            return cls(n, np.concatenate([block.numbers for block in blocks]), None, None, (), None)
        numbers = None
        if any(block.numbers is not None for block in blocks):
            # NaN where a block holds no number: as _reduce fills such a block
            numbers = np.concatenate([np.full(block.n, np.nan) if block.numbers is None else block.numbers
                                      for block in blocks])
        codes, keys = _joined_codes(blocks)
        return cls(n, numbers, _joined_mask([block.missing for block in blocks], blocks, False), codes, keys,
                   _joined_mask([block.present for block in blocks], blocks, True))


PYTHON_CODES = 64
"""Blocks of at most this many events in all are renumbered by :func:`_joined_codes` in Python."""


def _joined_codes(blocks: Sequence[ColumnBlock]) -> tuple[IntArray | None, list[str]]:
    """The blocks' category codes as one array into their keys joined in first-seen order (None,
    [] if no block holds a category)."""
    coded = [block for block in blocks if block.codes is not None]
    if not coded:
        return None, []
    keys = coded[0].keys
    if len(coded) == len(blocks) and all(block.keys is keys or block.keys == keys for block in coded):
        # one batch's blocks share their keys (take and slice keep them): the codes as they are
        return cast("IntArray", np.concatenate([block.codes for block in coded])), list(keys)
    # One remap table for all the blocks: block b's codes (0..len(keys), the last its "other")
    # offset by the slots of the blocks before it, so a single gather renumbers every event (with
    # many models a merge joins ~6 blocks of 1-3 events each: numpy calls per block dominated)
    index: dict[str, int] = {}
    for block in coded:
        for key in block.keys:
            index.setdefault(key, len(index))
    other = len(index)  # the code of a missing or numeric value
    if sum(block.n for block in blocks) <= PYTHON_CODES:
        # a few events (a buffer joining appends of 1-3): renumbered in Python, not ~8 numpy calls
        joined: list[int] = []
        for block in blocks:
            if block.codes is None:
                joined += [other] * block.n
            else:
                remap = [index[key] for key in block.keys]
                remap.append(other)
                joined += map(remap.__getitem__, block.codes.tolist())
        return cast("IntArray", np.array(joined, dtype=np.int32)), list(index)
    table: list[int] = []
    offsets: list[int] = []
    codes: list[IntArray] = []
    for block in blocks:
        offsets.append(len(table))
        if block.codes is None:
            codes.append(np.zeros(block.n, dtype=np.int32))
        else:
            table.extend([index[key] for key in block.keys])
            codes.append(block.codes)
        table.append(other)
    slots = np.concatenate(codes) + np.repeat(np.array(offsets), [block.n for block in blocks])
    return cast("IntArray", np.array(table, dtype=np.int32)[slots]), list(index)


def _joined_mask(masks: Sequence[BoolArray | None], blocks: Sequence[ColumnBlock],
                 default: bool) -> BoolArray | None:
    """The blocks' masks as one (a None mask: ``default`` for each of its block's events; None if
    every mask is)."""
    if all(mask is None for mask in masks):
        return None
    return np.concatenate([np.full(block.n, default) if mask is None else mask
                           for mask, block in zip(masks, blocks, strict=True)])


def _reduce(blocks: Sequence[ColumnBlock]) -> ReducedColumn:
    """The blocks (consecutive events of one column) as one chunk."""
    n = missing = 0
    counts: dict[str, int] = {}
    for block in blocks:
        n += block.n
        if block.missing is not None:
            missing += int(np.count_nonzero(block.missing))
        if block.codes is not None:
            keys = block.keys
            for code, c in enumerate(np.bincount(block.codes, minlength=len(keys)).tolist()[:len(keys)]):
                if c:
                    key = keys[code]
                    counts[key] = counts.get(key, 0) + c
    numbers: FloatArray | None = None
    if any(block.numbers is not None for block in blocks):
        # always a fresh array, as the row path's np.array of the chunk's values
        numbers = np.concatenate([np.full(block.n, np.nan) if block.numbers is None else block.numbers
                                  for block in blocks])
    return ReducedColumn(n, missing, counts, numbers)


@dataclass(slots=True)
class EventColumns:
    """Consecutive events of one batch as column blocks: one per feature name any of them carries,
    the prediction's class label, its value (the score where there is no regression value) and the
    latency; what :class:`WindowBuffer` holds and :meth:`WindowAccumulator.add_chunk` adds.

    >>> from driftline.schemas.events import Prediction
    >>> cols = EventColumns.of([{"x": 1.0}, {"x": 3.0, "c": "a"}], [Prediction(label=1)] * 2, [5.0, None])
    >>> acc, ref = WindowAccumulator(), WindowAccumulator()
    >>> acc.add_chunk([cols.take(np.array([1])), cols.slice(0, 1)])
    >>> ref.add([{"x": 3.0, "c": "a"}, {"x": 1.0}], [Prediction(label=1)] * 2, [None, 5.0])
    >>> acc.to_partial() == ref.to_partial()
    True
    """

    n: int
    features: dict[str, ColumnBlock]
    label: ColumnBlock
    value: ColumnBlock
    latency: ColumnBlock

    @classmethod
    def of(
        cls,
        features: Sequence[Mapping[str, FeatureValue]],
        predictions: Sequence[Prediction],
        latencies: Sequence[float | None],
        columns: tuple[Sequence[str], Sequence[Sequence[Any]], Sequence[FloatArray | None]] | None = None,
    ) -> EventColumns:
        """The columns of three parallel sequences, one entry per event (as :meth:`WindowAccumulator.add`).
        ``columns``: the features already as (names, a column per name, the float64 form of each
        all-float column or None), every event carrying every name, as the batch decoder checked them.
        """
        n = len(features)
        blocks: dict[str, ColumnBlock] = {}
        layouts = set(map(tuple, features)) if columns is None else set()
        matrix = None
        if columns is not None:
            floats_of = {name: floats for name, floats in zip(columns[0], columns[2], strict=True)
                         if floats is not None}
            in_matrix = tuple(sorted(floats_of))
            if len(in_matrix) > 1 and n:
                # The all-float columns as the rows of one matrix (by name), each block's numbers its
                # row: a take gathers them in one call, values_partial lists them in one.
                matrix = np.array([floats_of[name] for name in in_matrix], dtype=np.float64)
                floats_of = dict(zip(in_matrix, matrix, strict=True))
            for name, column in zip(columns[0], columns[1], strict=True):
                if matrix is None or name not in floats_of:
                    blocks[name] = ColumnBlock.of(column, floats=floats_of.get(name))
        elif len(layouts) == 1:  # the common case: every event carries the same names
            names = next(iter(layouts))
            if len(names) == 1:
                blocks[names[0]] = ColumnBlock.of([f[names[0]] for f in features])
            elif names:
                # One C-level gather per event and a C-level transpose, as WindowAccumulator.add.
                for name, column in zip(names, zip(*map(itemgetter(*names), features), strict=True),
                                        strict=True):
                    blocks[name] = ColumnBlock.of(column)
        else:
            for name in sorted(set().union(*layouts)):
                present = np.fromiter((name in f for f in features), dtype=bool, count=n)
                blocks[name] = ColumnBlock.of([f.get(name) for f in features],
                                              None if present.all() else present)
        if isinstance(predictions, OutputColumns):  # the batch decoder's columns: no object per output
            labels: list[Any] = list(predictions.labels)
            values = [score if value is None else value
                      for score, value in zip(predictions.scores, predictions.values, strict=True)]
        else:
            labels = [p.label for p in predictions]
            values = [p.score if p.value is None else p.value for p in predictions]
        if int in set(map(type, labels)):  # integer class labels are categories, not numbers
            labels = [str(v) if type(v) is int else v for v in labels]
        label, value, latency = ColumnBlock.of(labels), ColumnBlock.of(values), ColumnBlock.of(latencies)
        if matrix is not None:  # ``blocks``: the columns not in the matrix
            return _BatchColumns(n, blocks, label, value, latency, matrix, in_matrix)
        return cls(n, blocks, label, value, latency)

    def __reduce__(self) -> tuple[type[EventColumns], tuple[Any, ...]]:
        # Plain columns, whatever the subclass (_TakenColumns): a buffer's checkpoint bytes are the
        # same whether its parts were taken from a decoded batch or restored (deltas compare them).
        return EventColumns, (self.n, self.features, self.label, self.value, self.latency)

    def take(self, rows: IntArray) -> EventColumns:
        """The events at ``rows``, in that order."""
        return EventColumns(len(rows), {name: b.take(rows) for name, b in self.features.items()},
                            self.label.take(rows), self.value.take(rows), self.latency.take(rows))

    def slice(self, start: int, stop: int) -> EventColumns:
        return EventColumns(stop - start, {name: b.slice(start, stop) for name, b in self.features.items()},
                            self.label.slice(start, stop), self.value.slice(start, stop),
                            self.latency.slice(start, stop))

    @classmethod
    def concat(cls, parts: Sequence[EventColumns]) -> EventColumns:
        """The events of ``parts`` (consecutive, in order) as one: each column's blocks joined
        (:meth:`ColumnBlock.concat`), a name a part lacks absent from its events, as
        :meth:`WindowAccumulator.add_chunk` reads such a part.

        Parts taken from decoded batches of one layout (a window buffer's appends with many models)
        join their matrices of all-float columns in one call, not one per column; the events are
        then such a part too (pickled as the same plain columns), and decoded batches joined are a
        decoded batch (a shard's staged batches: its takes gather the matrix in one call)."""
        n = sum(part.n for part in parts)
        first = parts[0] if parts else None
        label = ColumnBlock.concat([part.label for part in parts])
        value = ColumnBlock.concat([part.value for part in parts])
        latency = ColumnBlock.concat([part.latency for part in parts])
        if isinstance(first, _TakenColumns) and all(
                isinstance(part, _TakenColumns) and part.in_matrix == first.in_matrix for part in parts[1:]):
            taken = cast("list[_TakenColumns]", parts)
            matrix = np.concatenate([part.matrix for part in taken], axis=1)
            others = {name: ColumnBlock.concat([part.others.get(name) or ColumnBlock.absent(part.n)
                                                for part in taken])
                      for name in dict.fromkeys(name for part in taken for name in part.others)}
            kind = _BatchColumns if all(type(part) is _BatchColumns for part in taken) else _TakenColumns
            return kind(n, others, label, value, latency, matrix, first.in_matrix)
        features = {name: ColumnBlock.concat([part.features.get(name) or ColumnBlock.absent(part.n)
                                              for part in parts])
                    for name in dict.fromkeys(name for part in parts for name in part.features)}
        return cls(n, features, label, value, latency)


class _TakenColumns(EventColumns):
    """Events whose all-float columns (``in_matrix``, sorted) are the rows of one ``matrix``:
    :func:`values_partial` lists them in one call and :meth:`EventColumns.concat` joins them in one.
    Their blocks (a row's view each) are made only when ``features`` is read, so a part that a
    window buffer only holds, joins and lists holds ``others`` (its other columns' blocks) and no
    object per float column: with many models a shard holds ~100,000 such parts' blocks, which the
    cyclic collector scanned (docs/scaling.md). Pickled (a buffer in a checkpoint) as the plain
    :class:`EventColumns` it equals (its ``__reduce__``)."""

    __slots__ = ("_features", "in_matrix", "matrix", "others")

    def __init__(self, n: int, others: dict[str, ColumnBlock], label: ColumnBlock, value: ColumnBlock,
                 latency: ColumnBlock, matrix: FloatArray, in_matrix: tuple[str, ...]) -> None:
        # not EventColumns.__init__: its ``features`` slot is shadowed by the property below
        self.n = n
        self.label = label
        self.value = value
        self.latency = latency
        self.matrix = matrix
        self.in_matrix = in_matrix
        self.others = others
        self._features: dict[str, ColumnBlock] | None = None

    @property
    def features(self) -> dict[str, ColumnBlock]:  # type: ignore[override]  # read-only here
        """Every column's block by name: the float columns first (``in_matrix``' order), as a
        decoded batch's take has always listed them (pickled buffers' bytes depend on it)."""
        features = self._features
        if features is None:
            features = dict(zip(self.in_matrix, map(functools.partial(ColumnBlock, self.n), self.matrix),
                                strict=True))
            features.update(self.others)
            self._features = features
        return features


class _BatchColumns(_TakenColumns):
    """A decoded batch's columns (:meth:`EventColumns.of` with ``columns``): each group of events
    a shard takes from it (a few of each model's, with many models) gathers the all-float columns
    in one call, not one per column.

    >>> from driftline.schemas.events import Prediction
    >>> cols = EventColumns.of([{"y": 2.0, "x": 1.0, "c": "a"}, {"y": 4.0, "x": 3.0, "c": "b"}],
    ...                        [Prediction(label=1)] * 2, [5.0, None],
    ...                        (["y", "x", "c"], [[2.0, 4.0], [1.0, 3.0], ["a", "b"]],
    ...                         [np.array([2.0, 4.0]), np.array([1.0, 3.0]), None]))
    >>> taken = cols.take(np.array([1]))
    >>> type(cols).__name__, taken.in_matrix, taken.matrix.tolist(), taken.features["y"].numbers
    ('_BatchColumns', ('x', 'y'), [[3.0], [4.0]], array([4.]))
    >>> values_partial([taken]) == values_partial([taken.slice(0, 1)])  # a plain part
    True
    """

    __slots__ = ()

    def take(self, rows: IntArray) -> EventColumns:
        return _TakenColumns(len(rows), {name: block.take(rows) for name, block in self.others.items()},
                             self.label.take(rows), self.value.take(rows), self.latency.take(rows),
                             self.matrix.take(rows, axis=1), self.in_matrix)


MERGE_PARTS = 8
"""A :class:`WindowBuffer` holding this many parts joins its last ones (see ``_merge_tail``)."""


class WindowBuffer:
    """Events of one window not yet added to its accumulator, as column blocks in log order: they
    are added in chunks of exactly ``chunk`` events (the rest when the window closes), so float sums
    round the same however the log was batched. Small parts are joined as they arrive (at most
    ~``MERGE_PARTS`` are held): the chunks' statistics are the same whatever the parts.

    >>> from driftline.schemas.events import Prediction
    >>> buffer, acc = WindowBuffer(), WindowAccumulator()
    >>> buffer.append(EventColumns.of([{"x": 1.0}] * 3, [Prediction(value=1.0)] * 3, [None] * 3))
    >>> buffer.drain(acc, chunk=2, final=False), buffer.n, acc.n_events
    (2, 1, 2)
    """

    __slots__ = ("n", "parts")

    def __init__(self) -> None:
        self.n = 0
        self.parts: list[EventColumns] = []

    def __len__(self) -> int:
        return self.n

    def append(self, part: EventColumns) -> None:
        if part.n:
            self.parts.append(part)
            self.n += part.n
            if len(self.parts) >= MERGE_PARTS:
                self._merge_tail()

    def _merge_tail(self) -> None:
        """Join the last part and each part before it that holds at most twice the events of the
        parts after it into one. The parts' sizes then fall geometrically: ``MERGE_PARTS`` or a few
        more parts whatever the window holds, each event copied a few times (~5 for appends of
        1-3 events up to a 2,048-event chunk). A window of many appends of a few events (many
        models: a few of each a batch) then costs about the bytes of its values, not a block's
        arrays per column and append."""
        parts = self.parts
        first, tail = len(parts) - 1, parts[-1].n
        while first and parts[first - 1].n <= 2 * tail:
            first -= 1
            tail += parts[first].n
        if first < len(parts) - 1:
            parts[first:] = [EventColumns.concat(parts[first:])]

    def drain(self, accumulator: WindowAccumulator, chunk: int, final: bool) -> int:
        """Add every whole ``chunk`` of events (and, if ``final``, the rest) to ``accumulator``;
        returns how many events were added."""
        added = 0
        while self.n >= chunk or (final and self.n):
            size = min(chunk, self.n)
            taken: list[EventColumns] = []
            need = size
            while need:
                part = self.parts[0]
                if part.n <= need:
                    taken.append(self.parts.pop(0))
                    need -= part.n
                else:
                    taken.append(part.slice(0, need))
                    rest = part.slice(need, part.n)
                    # what stays after the last whole chunk (views) is copied, so that it does not
                    # keep a large part's arrays (a shard's staged batch) until the next chunk
                    self.parts[0] = EventColumns.concat([rest]) if self.n - size < chunk else rest
                    need = 0
            accumulator.add_chunk(taken)
            self.n -= size
            added += size
        return added


class WindowAccumulator:
    """All per-feature, prediction and latency statistics of one window of one model/segment.

    ``prediction_label`` holds the canonical class labels (:func:`category_key`),
    ``prediction_value`` the regression value, else the score.
    """

    __slots__ = ("features", "latency", "n_events", "prediction_label", "prediction_value")
    stats_type: ClassVar[type[FeatureStats]] = FeatureStats
    """What each column's statistics are (a class attribute: no state to checkpoint)."""

    def __init__(self) -> None:
        self.n_events = 0
        self.features: dict[str, FeatureStats] = {}
        self.prediction_label = self.stats_type()
        self.prediction_value = self.stats_type()
        self.latency = self.stats_type()

    def add(
        self,
        features: Sequence[Mapping[str, FeatureValue]],
        predictions: Sequence[Prediction],
        latencies: Sequence[float | None],
    ) -> None:
        """Add a micro-batch of events (three parallel sequences, one entry per event)."""
        n = len(features)
        if len(predictions) != n or len(latencies) != n:
            raise ValueError("features, predictions and latencies must have one entry per event")
        if not n:
            return
        names: set[str] = set().union(*features)
        for name, known in self.features.items():
            if name not in names:
                known.add_missing(n)
        for name, column in _columns(features, sorted(names)):
            stats = self.features.get(name)
            if stats is None:
                # A feature first seen now was absent from every earlier event of the window.
                stats = self.features[name] = self.stats_type()
                stats.add_missing(self.n_events)
            stats.add(column)
        labels: list[Any] = [p.label for p in predictions]
        if int in set(map(type, labels)):  # integer class labels are categories, not numbers
            labels = [str(v) if type(v) is int else v for v in labels]
        self.prediction_label.add(labels)
        self.prediction_value.add([p.score if p.value is None else p.value for p in predictions])
        self.latency.add(latencies)
        self.n_events += n

    def add_chunk(self, chunk: Sequence[EventColumns]) -> None:
        """Add the events of ``chunk`` (column blocks, in order) at once: the same statistics, bit
        for bit, as one :meth:`add` of the same events as rows."""
        n = sum(part.n for part in chunk)
        if not n:
            return
        names = {name for part in chunk for name, block in part.features.items() if block.any_present()}
        for name, known in self.features.items():
            if name not in names:
                known.add_missing(n)
        for name in sorted(names):
            stats = self.features.get(name)
            if stats is None:
                stats = self.features[name] = self.stats_type()
                stats.add_missing(self.n_events)
            stats.add_column(_reduce([part.features.get(name) or ColumnBlock.absent(part.n)
                                      for part in chunk]))
        self.prediction_label.add_column(_reduce([part.label for part in chunk]))
        self.prediction_value.add_column(_reduce([part.value for part in chunk]))
        self.latency.add_column(_reduce([part.latency for part in chunk]))
        self.n_events += n

    def merge(self, other: WindowAccumulator, sketches: bool = True) -> None:
        """Add ``other`` (a later shard's partial) into this one; without ``sketches``, all but the
        quantile sketches (see :func:`merge_accumulators`)."""
        for name, stats in self.features.items():
            if name not in other.features:
                stats.add_missing(other.n_events)
        for name, theirs in other.features.items():
            mine = self.features.get(name)
            if mine is None:
                mine = self.features[name] = self.stats_type()
                mine.add_missing(self.n_events)
            mine.merge(theirs, sketches)
        self.prediction_label.merge(other.prediction_label, sketches)
        self.prediction_value.merge(other.prediction_value, sketches)
        self.latency.merge(other.latency, sketches)
        self.n_events += other.n_events

    def to_partial(self) -> dict[str, Any]:
        """JSON-able (plain dicts, lists, str, int, float, None) partial aggregate."""
        return {
            "n_events": self.n_events,
            "features": {name: self.features[name].to_dict() for name in sorted(self.features)},
            "prediction_label": self.prediction_label.to_dict(),
            "prediction_value": self.prediction_value.to_dict(),
            "latency": self.latency.to_dict(),
        }

    @classmethod
    def from_partial(cls, d: Mapping[str, Any]) -> WindowAccumulator:
        """The accumulator of :meth:`to_partial`; ValueError saying where ``d`` is malformed.

        >>> WindowAccumulator.from_partial({"n_events": 1, "features": {"x": {"count": 1}}})
        Traceback (most recent call last):
        ...
        ValueError: malformed window partial: feature 'x': KeyError: 'missing'
        """
        # every field is set below: no statistics (and sketches) made only to be replaced
        acc = cls.__new__(cls)
        acc.features = features = {}
        where, name = "n_events", None
        try:
            acc.n_events = int(d["n_events"])
            form = d.get("form")
            built: list[SketchValues] = []  # the values form's columns, their moments set at the end
            small: list[SketchValues] = []  # ... and those whose moments are set (a few values)
            if form is None:
                parse: Callable[[Mapping[str, Any]], FeatureStats] = FeatureStats.parse
            elif form == VALUES_FORM:
                parse = functools.partial(_values_stats, acc.n_events, built, small)
            else:
                raise ValueError(f"unknown form {form!r}")
            columns = d["features"].items()
            where = "feature"  # named on an error only: a partial has ~30 columns, most windows a few events
            for name, stats in columns:
                features[str(name)] = parse(stats)
            for where in ("prediction_label", "prediction_value", "latency"):
                setattr(acc, where, parse(d[where]))
            where = "values"
            _set_moments(built)
            _hold_as_rows(small)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            if where == "feature":
                where = f"feature {str(name)!r}"
            raise ValueError(f"malformed window partial: {where}: {type(err).__name__}: {err}") from None
        return acc


@dataclass
class MergedWindow:
    """One window's statistics over all shards, ready to score against a reference profile."""

    n_events: int
    features: dict[str, FeatureStats]
    prediction_label: FeatureStats
    prediction_value: FeatureStats
    latency: FeatureStats


def merge_partials(partials: Sequence[Mapping[str, Any]]) -> MergedWindow:
    """Merge partials in the given order (stage 2 passes shard order for deterministic floats)."""
    return merge_accumulators([WindowAccumulator.from_partial(partial) for partial in partials])


def merge_accumulators(parts: Sequence[WindowAccumulator], *, sketches: bool = True,
                       consume: bool = False) -> MergedWindow:
    """Merge parsed partials in the given order, as :func:`merge_partials` (``parts`` unchanged
    unless ``consume``).

    Without ``sketches`` the merged window's quantile sketches stay empty (everything else is
    merged): an under-filled window, whose quantiles and distribution statistics are not computed,
    skips merging a sketch per feature and shard. With ``consume`` too (the caller drops ``parts``)
    the later parts are merged into the first one itself: what merging it into an empty accumulator
    would copy, without a statistics object and a merge per column (stage 2 closes a window of a
    few events every few predictions with many models)."""
    if consume and not sketches and parts:
        acc, rest = parts[0], parts[1:]
        for stats in (*acc.features.values(), acc.prediction_label, acc.prediction_value, acc.latency):
            stats.sketch = _UNBUILT  # a shard's own sketch (more events than a values partial) unmerged
    else:
        acc, rest = WindowAccumulator(), parts
    for part in rest:
        acc.merge(part, sketches=False)
    if sketches:
        # each column's sketch from all parts at once (see merged_sketch), not merged part by part
        for name, stats in acc.features.items():
            stats.sketch = merged_sketch([part.features[name] for part in parts if name in part.features])
        for field in ("prediction_label", "prediction_value", "latency"):
            getattr(acc, field).sketch = merged_sketch([getattr(part, field) for part in parts])
    return MergedWindow(acc.n_events, acc.features, acc.prediction_label, acc.prediction_value, acc.latency)


def merged_sketch(columns: Sequence[FeatureStats]) -> QuantileSketch:
    """The quantile sketch of ``columns`` (one column's statistics from each shard) merged: the
    valid numbers of those that hold them (:class:`SketchValues`, a values-form partial's) in one
    :meth:`~QuantileSketch.add_many`, the others' sketches in one :meth:`~QuantileSketch.merge_all`.
    Sketch counts are integers, so this is the sketch merging them one by one gives, bucket for
    bucket; the columns are left as they are. A filled window of a quiet model reaches stage 2 as
    values-form partials: a sketch built and merged a shard and column was most of its close.

    >>> shards = [SketchValues(), SketchValues(), FeatureStats()]
    >>> for k, shard in enumerate(shards):
    ...     shard.add([0.5 * k, -3.0, 7.0 + k, None])
    >>> at_once = merged_sketch(shards)
    >>> shards[0].values.tolist()  # (left as it was)
    [0.0, -3.0, 7.0]
    >>> one_by_one = FeatureStats()
    >>> for shard in shards:
    ...     one_by_one.merge(shard)
    >>> at_once == one_by_one.sketch, at_once.count
    (True, 9)
    """
    values: list[FloatArray] = []
    sketches: list[QuantileSketch] = []
    for column in columns:
        if isinstance(column, SketchValues) and column.values is not None:  # not in its sketch yet
            values.append(np.asarray(column.values, dtype=np.float64))
        if not column.sketch.empty:  # (_UNBUILT is)
            sketches.append(column.sketch)
    sketch = QuantileSketch()
    if values:
        sketch.add_many(values[0] if len(values) == 1 else np.concatenate(values))
    if sketches:
        sketch.merge_all(sketches)
    return sketch
