"""A feature with fewer than ``drift.min_count`` values is not tested: no p-value is computed for it.

With many models of little traffic most windows hold a few events, and the KS p-value's exact
small-sample branch was ~40 % of scoring such a window, for a p-value no verdict used. Everything
else a small window's score holds is unchanged, and so is every score of a window that is tested.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from driftline.config import DriftSettings
from driftline.operators.drift import FeatureScore, score_feature, verdicts
from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.operators.scorer import DriftScorer
from driftline.operators.window_stats import FeatureStats

CFG = DriftSettings()  # min_count 100
EVERY_WINDOW_TESTED = DriftSettings(min_count=1)  # what scores were before: p-values at any count


def _profile(rng: np.random.Generator) -> ReferenceProfile:
    columns = {"x": rng.normal(0, 1, 2_000).tolist(), "y": rng.lognormal(0, 1, 2_000).tolist(),
               "c": rng.choice(["a", "b", "c"], 2_000, p=[0.5, 0.3, 0.2]).tolist()}
    return build_profile("m", "1", columns, label_column=None, prediction_column=None, bins=10, top_k=10)


def _window(rng: np.random.Generator, n: int, shift: float) -> dict[str, FeatureStats]:
    x, y, c = FeatureStats(), FeatureStats(), FeatureStats()
    x.add_array(rng.normal(shift, 1, n))
    y.add_array(rng.lognormal(shift, 1, n))
    c.add(rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]).tolist())
    return {"x": x, "y": y, "c": c}


def _without_pvalues(score: FeatureScore) -> FeatureScore:
    return dataclasses.replace(score, ks_pvalue=None, chi2_pvalue=None)


def test_a_feature_below_min_count_has_its_statistics_but_no_pvalue() -> None:
    rng = np.random.default_rng(1)
    profile = _profile(rng)
    window = _window(rng, 20, shift=0.5)
    for name, fprofile in profile.features.items():
        score = score_feature(fprofile, window[name], CFG)
        assert score.count == 20 and score.pvalue is None, name
        assert score.psi is not None and score.js_distance is not None and score.effect is not None
        if fprofile.kind == "numeric":
            assert score.ks_stat is not None and score.wasserstein is not None
        else:
            assert score.chi2_stat is not None
    scores = {n: score_feature(f, window[n], CFG) for n, f in profile.features.items()}
    verdict = verdicts(scores, CFG)
    assert not verdict.drifted
    assert {v.reason for v in verdict.features.values()} == {"not tested: 20 values < min_count 100"}


@pytest.mark.parametrize("n", [1, 2, 3, 7, 30, 99, 100, 101, 400, 2_000])
def test_scores_equal_the_tested_ones_but_for_the_untested_pvalues(n: int) -> None:
    """A differential check against scoring with ``min_count=1`` (every window tested, as all
    were scored before): bit-equal at or above ``min_count``, equal without the p-values below."""
    rng = np.random.default_rng(n)
    profile = _profile(rng)
    for shift in (0.0, 0.3):
        window = _window(rng, n, shift)
        for name, fprofile in profile.features.items():
            got = score_feature(fprofile, window[name], CFG)
            full = score_feature(fprofile, window[name], EVERY_WINDOW_TESTED)
            if n >= CFG.min_count:
                assert got == full, name
            else:
                assert got == _without_pvalues(full), name
                assert full.pvalue is not None  # the check would pass vacuously otherwise


def test_the_batch_scorer_reports_no_pvalue_for_an_untested_column() -> None:
    rng = np.random.default_rng(3)
    scorer = DriftScorer.from_reference({"x": rng.normal(0, 1, 1_000)})
    small = scorer.score({"x": rng.normal(2, 1, 20)})["x"]
    assert small.ks is not None and small.ks_pvalue is None and small.p_adj is None
    assert small.reason == "not tested: 20 values < min_count 100"
    large = scorer.score({"x": rng.normal(2, 1, 200)})["x"]
    assert large.ks_pvalue is not None and large.drifted
