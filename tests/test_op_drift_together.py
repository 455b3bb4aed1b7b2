"""Many features scored at once (score_features) equal each scored alone; a sketch's kept buckets."""

from __future__ import annotations

import pickle
from dataclasses import asdict

import numpy as np
import pytest

from driftline.config import DriftSettings
from driftline.operators.drift import (
    PreparedReference,
    Scored,
    js_distance,
    js_rows,
    psi,
    psi_rows,
    score_features,
)
from driftline.operators.profile import build_profile
from driftline.operators.sketch import QuantileSketch
from driftline.operators.window_stats import FeatureStats

KINDS = ("normal", "lognormal", "integer", "zeros", "categorical")


def _values(rng: np.random.Generator, kind: str, n: int, shift: float) -> list[object]:
    if kind == "normal":
        return rng.normal(shift, 1.0 + abs(shift) / 3, n).tolist()
    if kind == "lognormal":  # positive only: one store
        return rng.lognormal(shift / 3, 1.0, n).tolist()
    if kind == "integer":
        return (rng.integers(-3, 8, n) + round(shift)).astype(float).tolist()
    if kind == "zeros":  # negatives, zeros and positives: all three parts of a sketch
        values = rng.normal(shift, 5.0, n)
        values[rng.random(n) < 0.3] = 0.0
        return values.tolist()
    shares = np.r_[0.3, 0.2, [0.5 / 8] * 8]
    return [str(v) for v in rng.choice(list("abcdefghij"), n, p=shares)]


def _items(rng: np.random.Generator) -> tuple[list[Scored], DriftSettings]:
    """A random profile's features, each with 1-3 windows of 0-2,000 values, some shifted (some
    of them far outside the reference), referenced bare or prepared; a random min_count."""
    size = int(rng.integers(50, 2_000))
    features = int(rng.integers(1, 11))
    columns = {f"f{j}": _values(rng, KINDS[j % len(KINDS)], size, 0.0) for j in range(features)}
    profile = build_profile("m", "1", columns, label_column=None, prediction_column=None,
                            bins=int(rng.integers(2, 12)), top_k=int(rng.integers(2, 8)), created_at_ms=0)
    items: list[Scored] = []
    for name, fprofile in profile.features.items():
        kind = KINDS[int(name[1:]) % len(KINDS)]
        for _ in range(int(rng.integers(1, 4))):
            n = 0 if rng.random() < 0.1 else int(rng.integers(1, 2_000))
            shift = float(rng.normal(0.0, 4.0)) if rng.random() < 0.5 else 0.0
            stats = FeatureStats()
            stats.add([*_values(rng, kind, n, shift), *[None] * int(rng.integers(0, 3))])
            items.append((fprofile, stats, PreparedReference.of(fprofile) if rng.random() < 0.5 else None))
    return items, DriftSettings(min_count=int(rng.integers(1, 300)))


@pytest.mark.parametrize("seed", range(6))
def test_features_scored_together_equal_each_scored_alone(seed: int) -> None:
    """Every statistic, value for value (repr: NaN and the sign of zero count), whatever the order
    and mix of numeric and categorical features, empty windows and windows far from the reference;
    the stacked walk's segments must not leak into one another."""
    rng = np.random.default_rng(seed)
    for _ in range(8):
        items, cfg = _items(rng)
        order = rng.permutation(len(items)).tolist()
        together = score_features([items[i] for i in order], cfg)
        for score, i in zip(together, order, strict=True):
            alone = score_features([items[i]], cfg)[0]
            assert repr(asdict(score)) == repr(asdict(alone)), (seed, i)


def test_scored_together_reads_each_window_against_its_own_reference() -> None:
    """Two windows of one feature, one shifted: their scores differ as they do alone (a stacked
    walk that mixed their buckets would give both the same)."""
    rng = np.random.default_rng(3)
    profile = build_profile("m", "1", {"x": rng.normal(0, 1, 3_000).tolist()}, label_column=None,
                            prediction_column=None, bins=10, top_k=5, created_at_ms=0).features["x"]
    same, shifted = FeatureStats(), FeatureStats()
    same.add(rng.normal(0, 1, 500).tolist())
    shifted.add(rng.normal(2, 1, 500).tolist())
    a, b = score_features([(profile, same, None), (profile, shifted, None)], DriftSettings())
    assert a.ks_stat is not None and b.ks_stat is not None and a.ks_stat < 0.1 < 0.5 < b.ks_stat
    assert b.out_of_range > a.out_of_range
    assert b.wasserstein == pytest.approx(2.0, abs=0.1)


def test_rows_of_psi_and_js_are_each_rows_alone() -> None:
    rng = np.random.default_rng(8)
    for width in (1, 2, 7, 8, 9, 11, 16, 33):
        ref, cur = rng.random((40, width)) ** 3, rng.random((40, width)) ** 3
        cur[rng.random(cur.shape) < 0.3] = 0.0
        cur[5] = 0.0  # an empty window: NaN
        pairs = list(zip(ref, cur, strict=True))
        assert repr(psi_rows(ref, cur).tolist()) == repr([psi(r, c) for r, c in pairs])
        assert repr(js_rows(ref, cur).tolist()) == repr([js_distance(r, c) for r, c in pairs])


def test_a_sketch_keeps_its_buckets_until_it_changes_and_does_not_pickle_them() -> None:
    rng = np.random.default_rng(1)
    sketch = QuantileSketch()
    sketch.add_many(rng.normal(size=300))
    first = sketch.buckets()
    assert sketch.buckets() is first
    assert not first[0].flags.writeable  # shared: no caller may change them
    plain = len(pickle.dumps(sketch))
    restored = pickle.loads(pickle.dumps(sketch))
    assert restored.buckets()[2].tolist() == first[2].tolist()
    assert len(pickle.dumps(sketch)) == plain == len(pickle.dumps(restored))  # nothing derived pickled
    sketch.add_many(np.array([1e6, -1e6, 0.0]))
    added = sketch.buckets()
    assert added is not first and int(added[2].sum()) == 303
    other = QuantileSketch()
    other.add_many(np.array([5.0]))
    sketch.merge(other)
    assert int(sketch.buckets()[2].sum()) == 304
    assert sketch.quantile(1.0) == pytest.approx(1e6, rel=0.01)
