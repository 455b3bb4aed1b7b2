"""Feature sources: endless ``(features, label)`` rows for one simulated model.

- ``gaussian``: N numeric features (each its own mean and scale) and M categorical ones (skewed
  category weights); the label is a noisy linear rule evaluated *after* covariate drift, so a
  shifted feature changes the class balance the way real covariate shift does.
- ``agrawal`` / ``hyperplane`` / ``sea``: River's synthetic generators (``river.datasets.synth``).
- ``csv``: rows of a dataset (e.g. /work/shared/data/elec2.csv) in file order, cycling.
"""

from __future__ import annotations

import csv
import functools
import itertools
import math
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from driftline.simulate.scenario import ModelSpec

Row = tuple[dict[str, Any], Any]
REFERENCE_ROWS = 2000
_CHUNK = 1024


class Source(Protocol):
    feature_kinds: dict[str, str]  # name -> 'numeric' | 'categorical'
    classes: list[Any]

    def rows(self) -> Iterator[Row]: ...

    def relabel(self, features: dict[str, Any], label: Any) -> Any:
        """The label of (possibly drifted) features; sources with fixed labels return ``label``."""
        ...


class GaussianSource:
    def __init__(self, spec: ModelSpec, seed: int) -> None:
        rng = np.random.default_rng([seed, 1])
        self._seed = seed
        n, m = spec.n_numeric, spec.n_categorical
        self._numeric = [f"x{j}" for j in range(n)]
        self._categorical = [f"c{k}" for k in range(m)]
        self._means = np.round(rng.uniform(-5, 50, n), 2)
        self._scales = np.round(rng.uniform(0.5, 10, n), 2)
        self._weights = rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 1.5, n)
        self._categories = [chr(ord("a") + i) for i in range(spec.n_categories)]
        skew = 1.0 / np.arange(1, spec.n_categories + 1)
        self._category_p = skew / skew.sum()
        self._effects = [
            dict(zip(self._categories, rng.normal(0, 0.5, spec.n_categories).tolist(), strict=True))
            for _ in range(m)
        ]
        self._noise = random.Random(seed * 7919 + 3)
        self.feature_kinds = {**dict.fromkeys(self._numeric, "numeric"),
                              **dict.fromkeys(self._categorical, "categorical")}
        self.classes: list[Any] = [0, 1]

    def rows(self) -> Iterator[Row]:
        rng = np.random.default_rng([self._seed, 2])
        names = self._numeric + self._categorical
        while True:
            shape = (_CHUNK, len(self._numeric))
            numeric = np.round(rng.normal(self._means, self._scales, shape), 4).tolist()
            cats = [rng.choice(self._categories, _CHUNK, p=self._category_p).tolist()
                    for _ in self._categorical]
            for i in range(_CHUNK):
                yield dict(zip(names, numeric[i] + [c[i] for c in cats], strict=True)), None

    def relabel(self, features: dict[str, Any], label: Any) -> Any:
        score = self._noise.gauss(0.0, 0.3)
        for j, name in enumerate(self._numeric):
            score += self._weights[j] * (features[name] - self._means[j]) / self._scales[j]
        for k, name in enumerate(self._categorical):
            score += self._effects[k].get(features[name], 0.0)
        return int(score > 0)


class RiverSource:
    def __init__(self, spec: ModelSpec, seed: int) -> None:
        from river.datasets import synth

        self._factory = functools.partial(
            {"agrawal": synth.Agrawal, "hyperplane": synth.Hyperplane, "sea": synth.SEA}[spec.source],
            seed=seed, **({"n_features": max(spec.n_numeric, 2)} if spec.source == "hyperplane" else {}),
        )
        first, _ = next(self.rows())
        self.feature_kinds = {k: "categorical" if isinstance(v, str) else "numeric" for k, v in first.items()}
        self.classes = [0, 1]

    def rows(self) -> Iterator[Row]:
        for x, y in self._factory():
            yield {k if isinstance(k, str) else f"x{k}": v for k, v in x.items()}, int(y)

    def relabel(self, features: dict[str, Any], label: Any) -> Any:
        return label


@functools.lru_cache(maxsize=8)
def _read_csv(path: Path, label_column: str) -> tuple[tuple[str, ...], tuple[tuple[Any, ...], ...],
                                                     tuple[str, ...]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or label_column not in reader.fieldnames:
            raise ValueError(f"{path}: no column {label_column!r} (columns: {reader.fieldnames})")
        raw = list(reader)
    if not raw:
        raise ValueError(f"{path}: no rows")
    names = tuple(c for c in raw[0] if c != label_column)

    def numeric(column: str) -> bool:
        try:
            return all(math.isfinite(float(r[column])) for r in raw[:200])
        except ValueError:
            return False

    kinds = {c: numeric(c) for c in names}
    rows = tuple(tuple(float(r[c]) if kinds[c] else r[c] for c in names) for r in raw)
    return names, rows, tuple(r[label_column] for r in raw)


class CsvSource:
    def __init__(self, spec: ModelSpec, seed: int) -> None:
        assert spec.csv_path is not None and spec.label_column is not None
        self._names, self._rows, self._labels = _read_csv(spec.csv_path.resolve(), spec.label_column)
        first = self._rows[0]
        self.feature_kinds = {n: "numeric" if isinstance(v, float) else "categorical"
                              for n, v in zip(self._names, first, strict=True)}
        self.classes = sorted(set(self._labels))

    def rows(self) -> Iterator[Row]:
        for values, label in itertools.cycle(zip(self._rows, self._labels, strict=True)):
            yield dict(zip(self._names, values, strict=True)), label

    def relabel(self, features: dict[str, Any], label: Any) -> Any:
        return label


def make_source(spec: ModelSpec, seed: int) -> Source:
    if spec.source == "gaussian":
        return GaussianSource(spec, seed)
    if spec.source == "csv":
        return CsvSource(spec, seed)
    return RiverSource(spec, seed)


@dataclass(frozen=True)
class Reference:
    """Statistics of a source's first rows (the undrifted reference traffic)."""

    mean: dict[str, float]
    std: dict[str, float]
    quantiles: dict[str, list[float]]  # numeric: 101 percentiles
    frequencies: dict[str, dict[str, float]]  # categorical: value -> share

    def quantile(self, feature: str, q: float) -> float:
        return self.quantiles[feature][round(q * 100)]


def reference_of(source: Source, n: int = REFERENCE_ROWS) -> Reference:
    sample = [x for x, _ in itertools.islice(source.rows(), n)]
    mean, std, quantiles, freqs = {}, {}, {}, {}
    for name, kind in source.feature_kinds.items():
        values = [x[name] for x in sample]
        if kind == "numeric":
            arr = np.asarray(values, dtype=float)
            mean[name], std[name] = float(arr.mean()), float(arr.std())
            quantiles[name] = np.percentile(arr, np.arange(101)).tolist()
        else:
            counts = Counter(str(v) for v in values)
            freqs[name] = {k: c / len(values) for k, c in sorted(counts.items())}
    return Reference(mean, std, quantiles, freqs)
