"""The domain classifier's own bin thresholds and bins equal scikit-learn's, and so do its verdicts."""

from __future__ import annotations

import pickle
from collections.abc import Iterator

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper

from driftline.operators import multivariate
from driftline.operators.multivariate import DomainClassifierDrift, quantile_bins


def tables() -> Iterator[np.ndarray]:
    rng = np.random.default_rng(11)
    n = 1_000
    yield rng.normal(size=(n, 25))
    yield np.column_stack([rng.lognormal(size=n), rng.standard_cauchy(size=n) * 1e200,
                           rng.normal(size=n).round(2), np.linspace(-1.0, 1.0, n)])
    tied = rng.normal(size=(n, 3))
    tied[: n // 2, 1] = 0.5  # half the rows one value: repeated quantiles
    yield tied
    yield np.column_stack([rng.normal(size=n), rng.integers(0, 10, n).astype(float)])  # few values
    with_nan = rng.normal(size=(n, 2))
    with_nan[3, 0] = np.nan
    yield with_nan
    yield np.column_stack([rng.normal(size=n), np.where(rng.random(n) < 0.5, -0.0, 0.0) + rng.normal(size=n)])
    yield np.column_stack([rng.normal(size=n), np.full(n, np.inf)])
    wild = rng.normal(size=(n, 2))  # infinite values far from every quantile: bins 0 and 62
    wild[:2, 0] = [np.inf, -np.inf]
    yield wild
    small = rng.normal(size=(70, 2))  # an infinite value next to the top quantile: NaN there
    small[:3, 1] = np.inf
    small[3:5, 0] = -np.inf
    yield small


@pytest.mark.parametrize("max_bins", [63, 255, 15])
def test_quantile_bins_are_the_librarys_or_none(max_bins: int) -> None:
    taken = 0
    for x in tables():
        ours = quantile_bins(x, max_bins)
        mapper = _BinMapper(n_bins=max_bins + 1, random_state=0, n_threads=1).fit(x)
        if ours is None:
            continue
        taken += 1
        thresholds, binned = ours
        assert len(thresholds) == len(mapper.bin_thresholds_)
        for mine, library in zip(thresholds, mapper.bin_thresholds_, strict=True):
            assert mine.dtype == library.dtype
            assert np.array_equal(mine, library)
        library_bins = mapper.transform(x)
        assert binned.dtype == library_bins.dtype and binned.flags.f_contiguous
        assert np.array_equal(binned, library_bins)
    assert taken >= 3  # the common case (continuous columns) is taken


def test_domain_classifier_verdicts_equal_with_the_librarys_binning() -> None:
    rng = np.random.default_rng(5)

    def table(n: int, rotated: bool = False) -> dict[str, np.ndarray]:
        a = rng.normal(size=n)
        b = 0.8 * a + 0.6 * rng.normal(size=n)
        if rotated:
            a, b = -b, a
        out = {"a": a, "b": b, "plan": rng.integers(0, 5, n).astype(float)}
        out.update({f"x{j}": rng.lognormal(size=n) for j in range(6)})
        out["kind"] = np.array(["a", "b", "c"])[rng.integers(0, 3, n)]  # categorical: the library bins
        return out

    reference = table(3_000)
    windows = [table(1_000, rotated=bool(i % 2)) for i in range(4)]

    def verdicts() -> list[object]:
        out: list[object] = []
        for features in (None, ["a", "b", *[f"x{j}" for j in range(6)]]):
            classifier = DomainClassifierDrift(reference, features=features, folds=2, max_iter=10,
                                               null_runs=3, seed=1, rank_quiet=False)
            out.append(classifier.inflation)
            out.extend(classifier.score(w, ordinal=i) for i, w in enumerate(windows))
            copy = pickle.loads(pickle.dumps(classifier))  # no local class held: it pickles
            assert copy.score(windows[1], ordinal=1) == out[-3]
        return out

    classifier_class = multivariate._binned_classifier()
    agrees = classifier_class.agrees
    try:
        ours = verdicts()
        assert classifier_class.agrees is True
        classifier_class.agrees = False  # the library's binning for every fit
        assert verdicts() == ours
    finally:
        classifier_class.agrees = agrees


def test_sorted_percentiles_are_numpys() -> None:
    rng = np.random.default_rng(3)
    for trial in range(60):
        n, d = int(rng.integers(64, 2_500)), int(rng.integers(1, 30))
        laws = (rng.normal(size=(n, d)), rng.lognormal(size=(n, d)) * 1e5,
                np.round(rng.normal(size=(n, d)), 2), rng.standard_cauchy(size=(n, d)))
        ordered = np.sort(laws[trial % 4], axis=0)
        percentiles = np.linspace(0, 100, num=int(rng.choice([15, 63, 255])) + 1)[1:-1]
        agree = multivariate._SORTED_PERCENTILES_AGREE
        try:
            multivariate._SORTED_PERCENTILES_AGREE = True  # our arithmetic, not the check's
            ours = multivariate._sorted_percentiles(ordered, percentiles)
        finally:
            multivariate._SORTED_PERCENTILES_AGREE = agree
        theirs = np.percentile(ordered, percentiles, axis=0, method="averaged_inverted_cdf")
        assert np.array_equal(ours, theirs)
