"""Outlier scorer: robust Mahalanobis distance on normal scores against the reference's 99.9 %."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from driftline.operators.outliers import OutlierScorer


def _reference(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    a = rng.normal(size=n)
    return {"a": a, "b": 0.9 * a + 0.3 * rng.normal(size=n), "c": rng.lognormal(size=n),
            "k": rng.integers(0, 5, n).astype(np.float64)}


@pytest.fixture(scope="module")
def scorer() -> OutlierScorer:
    return OutlierScorer.from_reference(_reference(np.random.default_rng(21), 50_000))


def test_clean_windows_keep_the_reference_rate(scorer: OutlierScorer) -> None:
    rng = np.random.default_rng(22)
    shares = [scorer.window(_reference(rng, 20_000)) for _ in range(5)]
    assert all(not w.significant for w in shares)
    pooled = sum(w.outliers for w in shares) / 100_000
    assert 0.0003 < pooled < 0.002
    assert shares[0].expected == pytest.approx(0.001)


def test_broken_relation_and_wild_values_are_outliers(scorer: OutlierScorer) -> None:
    rng = np.random.default_rng(23)
    window = _reference(rng, 2_000)
    window["b"] = -window["b"]
    result = scorer.window(window)
    assert result.significant and result.share > 0.3 and result.p_value < 1e-12
    assert scorer.is_outlier({"a": 0.0, "b": 0.0, "c": 1e9, "k": 2.0})
    assert not scorer.is_outlier({"a": 0.1, "b": 0.1, "c": 1.0, "k": 2.0})


def test_one_event_matches_the_batch_and_pickles(scorer: OutlierScorer) -> None:
    table = _reference(np.random.default_rng(24), 50)
    table["c"][3] = np.nan
    table["a"][4], table["c"][5], table["k"][6] = -40.0, 1e6, 7.0  # beyond the reference's range
    batch = scorer.score_many(table)
    restored = pickle.loads(pickle.dumps(scorer))
    for i in range(50):
        event = {name: float(values[i]) for name, values in table.items()}
        assert restored.score(event) == pytest.approx(batch[i], rel=1e-12, abs=1e-12)
    assert scorer.score({"a": 0.0, "b": 0.0, "k": 2.0}) == pytest.approx(
        float(scorer.score_many({"a": [0.0], "b": [0.0], "c": [None], "k": [2.0]})[0]))


def test_a_small_window_is_not_significant_by_one_outlier(scorer: OutlierScorer) -> None:
    window = {"a": [0.0, 0.0], "b": [0.0, 5.0], "c": [1.0, 1.0], "k": [1.0, 1.0]}
    result = scorer.window(window)
    assert result.outliers == 1 and not result.significant
    empty = scorer.window({"a": [], "b": [], "c": [], "k": []})
    assert empty.n == 0 and empty.p_value == 1.0


def test_a_wild_value_in_one_feature_is_an_outlier_beyond_the_reference_ranks() -> None:
    """Ranks alone would cap the score at the reference's extreme (here kept as 8,192 order
    statistics of 200,000 values); the linear extension beyond the range keeps growing."""
    rng = np.random.default_rng(25)
    scorer = OutlierScorer.from_reference({"a": rng.normal(size=200_000), "b": rng.normal(size=200_000)})
    assert not scorer.is_outlier({"a": 3.0, "b": 0.0})
    distances = [scorer.score({"a": a, "b": 0.0}) for a in (4.5, 6.0, 10.0, 1e6)]
    assert distances == sorted(distances) and scorer.threshold < distances[1]
