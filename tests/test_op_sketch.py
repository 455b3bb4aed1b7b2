"""QuantileSketch: accuracy guarantee, exact merges, collapsing, serialisation."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from driftline.operators.sketch import QuantileSketch
from driftline.operators.window_stats import FeatureStats
from driftline.pipeline.to_rows import value_columns

QS = np.linspace(0.0, 1.0, 101)


def _sketch(values: np.ndarray, relative_accuracy: float = 0.005, max_buckets: int = 2048) -> QuantileSketch:
    s = QuantileSketch(relative_accuracy, max_buckets)
    s.add_many(values)
    return s


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).lognormal(0.0, 2.0, 20_000),
        np.random.default_rng(2).normal(0.0, 1.0, 20_000),  # both signs
        np.concatenate([np.zeros(500), np.random.default_rng(3).normal(-5.0, 3.0, 5_000)]),
        np.random.default_rng(4).integers(-3, 4, 5_000).astype(float),
    ],
    ids=["lognormal", "normal", "zeros+negatives", "integers"],
)
def test_quantiles_within_relative_accuracy(values: np.ndarray) -> None:
    a = 0.005
    s = _sketch(values, relative_accuracy=a)
    exact = np.quantile(values, QS, method="lower")
    got = s.quantiles(QS)
    err = np.abs(got - exact)
    # 1e-12 absorbs float rounding of log() right at a bucket boundary.
    assert np.all(err <= a * np.abs(exact) * (1 + 1e-12) + 1e-300)
    assert s.quantile(0.5) == got[50]
    assert s.count == values.size


def test_merge_is_exact_and_order_independent() -> None:
    rng = np.random.default_rng(7)
    parts = [rng.normal(i, 1 + i, 3_000) for i in range(4)]
    sketches = [_sketch(p) for p in parts]
    forward, backward = QuantileSketch(), QuantileSketch()
    for s in sketches:
        forward.merge(s)
    for s in reversed(sketches):
        backward.merge(s)
    assert forward == backward == _sketch(np.concatenate(parts))
    a, b = sketches[0], sketches[1]
    ab = QuantileSketch.from_dict(a.to_dict())
    ab.merge(b)
    ba = QuantileSketch.from_dict(b.to_dict())
    ba.merge(a)
    assert ab == ba
    assert sketches[0] == _sketch(parts[0])  # merging did not alias or mutate the inputs


def test_collapsing_lowest_buckets_is_deterministic_and_order_independent() -> None:
    rng = np.random.default_rng(3)
    low = 10.0 ** rng.uniform(-8, 0, 2_000)
    high = 10.0 ** rng.uniform(0, 8, 2_000)
    one = _sketch(np.concatenate([low, high]), max_buckets=64)
    two = _sketch(high, max_buckets=64)
    two.merge(_sketch(low, max_buckets=64))
    three = _sketch(low, max_buckets=64)
    three.merge(_sketch(high, max_buckets=64))
    assert one == two == three
    d = one.to_dict()
    assert len(d["pos"]) - 1 <= 64
    assert one.count == 4_000
    # The top of the distribution keeps its accuracy; the collapsed bottom does not.
    top = np.quantile(np.concatenate([low, high]), 0.99, method="lower")
    assert abs(one.quantile(0.99) - top) <= 0.005 * top * (1 + 1e-12)


def test_dict_round_trip_through_json() -> None:
    s = _sketch(np.random.default_rng(5).normal(0, 10, 1_000))
    s.add_many(np.zeros(3))
    d = orjson.loads(orjson.dumps(s.to_dict()))
    assert all(type(x) is int for x in d["pos"] + d["neg"])
    t = QuantileSketch.from_dict(d)
    assert t == s and t.count == 1_003 and t.zero == 3


def test_cdf_and_histogram() -> None:
    values = np.repeat(np.arange(1.0, 11.0), 10)  # 1..10, ten of each
    s = _sketch(values)
    # Edges half-way between values: the sketch histogram equals the exact one.
    edges = np.array([2.5, 5.5, 8.5])
    assert s.histogram(edges).tolist() == [20, 30, 30, 20]
    assert s.histogram(edges).sum() == s.count
    np.testing.assert_allclose(s.cdf(np.array([0.0, 3.5, 10.5])), [0.0, 0.3, 1.0])
    assert np.all(np.diff(s.cdf(np.linspace(0, 11, 50))) >= 0)


def test_empty_sketch() -> None:
    s = QuantileSketch()
    s.add_many(np.array([]))
    assert s.count == 0
    assert np.isnan(s.quantile(0.5))
    assert np.isnan(s.cdf(np.array([1.0]))).all()
    assert s.histogram(np.array([0.0])).tolist() == [0, 0]
    assert QuantileSketch.from_dict(s.to_dict()) == s


def test_a_parsed_sketch_of_zero_counts_has_no_quantile_as_an_empty_one() -> None:
    """A partial's sketch may list buckets whose counts are all 0 (the check does not walk them):
    a count of 0, so its quantiles are NaN, not an error where its window's row is made."""
    wire = QuantileSketch().to_dict()
    wire["pos"], wire["neg"] = [3, 0, 0], [-2, 0]
    parsed = QuantileSketch.from_dict(wire)
    assert parsed.count == 0 and not parsed.empty
    assert np.isnan(parsed.quantiles(np.array([0.5, 0.9]))).all()
    stats = FeatureStats()
    stats.add([1.0, 2.0])
    stats.sketch = parsed
    assert value_columns(stats)[4:] == (None, None, None)


def test_merge_rejects_different_accuracy() -> None:
    with pytest.raises(ValueError, match="relative_accuracy"):
        QuantileSketch(0.01).merge(QuantileSketch(0.005))


@pytest.mark.parametrize("max_buckets", [2048, 64])
def test_merge_all_is_each_merged_in_turn_and_leaves_them_as_they_were(max_buckets: int) -> None:
    """Stage 2 merges a window's shards' sketches at once: the same buckets as one merge a shard,
    past the bucket cap too (the collapsed keys depend on the highest key only), into a sketch
    that holds counts already or none; the merged sketches are not changed."""
    rng = np.random.default_rng(7)
    for trial in range(30):
        parts = []
        for _ in range(int(rng.integers(0, 6))):
            kind = int(rng.integers(0, 4))
            n = int(rng.integers(0, 300))
            values = {0: rng.lognormal(0.0, 3.0, n), 1: rng.normal(0.0, 10.0, n),
                      2: rng.integers(-2, 3, n).astype(float), 3: 10.0 ** rng.uniform(-9, 9, n)}[kind]
            parts.append(_sketch(values, max_buckets=max_buckets))
        start = rng.normal(0.0, 1.0, int(rng.integers(0, 2)) * 50)
        at_once, each = _sketch(start, max_buckets=max_buckets), _sketch(start, max_buckets=max_buckets)
        before = [part.to_dict() for part in parts]
        at_once.merge_all(parts)
        for part in parts:
            each.merge(part)
        assert at_once.to_dict() == each.to_dict(), trial
        assert [part.to_dict() for part in parts] == before
    with pytest.raises(ValueError, match="different relative_accuracy"):
        QuantileSketch().merge_all([QuantileSketch(), QuantileSketch(0.01)])


def test_buckets_found_at_once_are_each_sketch_s_own_to_the_bit() -> None:
    """A scored window finds its features' buckets in one pass: every sketch keeps exactly what it
    finds alone (ordinals, representatives' bits, counts), whatever its stores hold: nothing, a
    zero count only, one sign, both, a collapsed store; sketches that kept buckets keep theirs."""
    rng = np.random.default_rng(11)
    for trial in range(40):
        sketches = []
        for _ in range(int(rng.integers(0, 12))):
            kind = int(rng.integers(0, 6))
            n = int(rng.integers(1, 400))
            rounded = rng.normal(0.0, 5.0, n).round(int(rng.integers(0, 3)))  # zeros among both signs
            values = {0: np.zeros(0), 1: np.zeros(n), 2: rng.lognormal(0.0, 2.0, n),
                      3: -rng.lognormal(0.0, 2.0, n), 4: rounded,
                      5: 10.0 ** rng.uniform(-9, 9, n) * rng.choice([-1.0, 1.0], n)}[kind]
            sketches.append(_sketch(values, max_buckets=64 if kind == 5 else 2048))
        kept = [sketch for sketch in sketches if rng.random() < 0.2]
        before = {id(sketch): sketch.buckets() for sketch in kept}
        alone = [QuantileSketch.from_dict(sketch.to_dict())._find_buckets() for sketch in sketches]
        QuantileSketch.find_buckets(sketches)
        for sketch, expected in zip(sketches, alone, strict=True):
            got = sketch.buckets()
            if id(sketch) in before:
                assert got is before[id(sketch)]
            for a, b in zip(got, expected, strict=True):
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), trial
                assert not a.flags.writeable
