"""Champion / challenger comparison: window intervals and the always-valid sequential test."""

from __future__ import annotations

import numpy as np
import pytest

from driftline.operators.comparison import SequentialComparison, compare_window


def _shadow(rng: np.random.Generator, n: int, p_champion: float,
            p_challenger: float) -> tuple[np.ndarray, np.ndarray]:
    """Paired 0/1 errors on the same requests: hard requests are hard for both versions."""
    hard = rng.random(n) < 0.2
    u = rng.random(n)
    scale = np.where(hard, 3.0, 0.5)
    return (u < p_champion * scale).astype(float), (u < p_challenger * scale).astype(float)


def test_no_difference_rarely_decides_however_often_looked_at() -> None:
    rng = np.random.default_rng(41)
    decided = 0
    for _ in range(100):
        test = SequentialComparison(paired=True, alpha=0.05)
        for _ in range(30):  # 30 looks of 500 paired events each
            if test.update(*_shadow(rng, 500, 0.1, 0.1)):
                decided += 1
                break
    assert decided <= 8  # alpha 0.05 over 100 runs: 5 expected at most


def test_decides_the_right_way_paired_and_split() -> None:
    rng = np.random.default_rng(42)
    better = SequentialComparison(paired=True)
    decisions = [better.update(*_shadow(rng, 1_000, 0.10, 0.08)) for _ in range(30)]
    assert better.decision == "challenger_better" and decisions.count("challenger_better") == 1
    assert better.p_value <= 0.01 and better.difference > 0
    assert better.update(*_shadow(rng, 1_000, 0.10, 0.08)) is None  # stopped after deciding
    worse = SequentialComparison(paired=False, effect=0.5)
    for _ in range(30):  # a regressor's absolute errors on split traffic: MAE 1.0 vs 1.15
        if worse.update(np.abs(rng.normal(0, 1.25, 1_000)), np.abs(rng.normal(0, 1.44, 1_000))):
            break
    assert worse.decision == "challenger_worse"
    worse.reset()
    assert worse.decision is None and worse.n == 0 and worse.p_value == 1.0


def test_nothing_is_decided_before_min_events() -> None:
    test = SequentialComparison(paired=True, min_events=500)
    assert test.update(np.ones(400), np.zeros(400)) is None
    assert test.likelihood_ratio == 1.0
    assert test.update(np.ones(200), np.zeros(200)) == "challenger_better"


def test_window_interval_covers_the_true_difference() -> None:
    rng = np.random.default_rng(43)
    covered = 0
    for _ in range(200):
        result = compare_window(*_shadow(rng, 2_000, 0.10, 0.08), paired=True)
        covered += result.low <= 0.02 * (0.2 * 3.0 + 0.8 * 0.5) <= result.high
    assert covered >= 180  # a 95 % interval
    split = compare_window([1.0, 2.0, np.nan, 3.0], [1.0, 1.0], paired=False)
    assert (split.n_champion, split.n_challenger, split.difference) == (3, 2, 1.0)
    with pytest.raises(ValueError, match="paired"):
        compare_window([1.0], [1.0, 2.0], paired=True)
