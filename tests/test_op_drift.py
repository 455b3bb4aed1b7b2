"""Drift statistics against scipy, feature scores and the per-model verdict."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from driftline.config import DriftSettings
from driftline.operators.drift import (
    FeatureScore,
    benjamini_hochberg,
    chi_square,
    js_distance,
    kolmogorov_sf,
    ks_from_sketches,
    psi,
    score_feature,
    verdicts,
    wasserstein_from_sketches,
)
from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.operators.sketch import QuantileSketch
from driftline.operators.window_stats import FeatureStats, WindowAccumulator, merge_partials
from driftline.schemas.events import Prediction

A = 0.005
CFG = DriftSettings()


def _sketch(values: np.ndarray) -> QuantileSketch:
    s = QuantileSketch(A)
    s.add_many(values)
    return s


def _random_props(rng: np.random.Generator, k: int) -> np.ndarray:
    p = rng.random(k) + 0.01  # no share below PSI's floor
    return p / p.sum()


def test_psi_is_symmetric_kl_of_floored_shares() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        p, q = _random_props(rng, 10), _random_props(rng, 10)
        assert psi(p, q) == pytest.approx(np.sum(rel_entr(p, q) + rel_entr(q, p)), rel=1e-12)
    p, q = np.array([0.5, 0.5, 0.0]), np.array([0.4, 0.4, 0.2])
    floored = np.array([0.5, 0.5, 1e-4])
    assert psi(p, q, eps=1e-4) == pytest.approx(np.sum((q - floored) * np.log(q / floored)), rel=1e-12)
    assert psi(np.array([3, 1]), np.array([30, 10])) == 0.0  # counts are normalised
    assert np.isnan(psi(p, np.zeros(3)))


def test_js_distance_equals_scipy() -> None:
    rng = np.random.default_rng(1)
    for k in (2, 5, 11):
        p, q = rng.random(k), rng.random(k)
        p[0] = 0.0
        assert js_distance(p, q) == jensenshannon(p, q, base=2)
    assert js_distance(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == 0.0


def test_chi_square_equals_scipy() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        props = _random_props(rng, 6)
        observed = rng.multinomial(500, _random_props(rng, 6))
        expected = props * observed.sum()
        ref = sps.chisquare(observed, expected)
        stat, p = chi_square(observed, props)
        assert stat == pytest.approx(ref.statistic, rel=1e-12)
        assert p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)


def test_chi_square_zero_expected_bins() -> None:
    observed = np.array([40, 60, 0])
    props = np.array([0.5, 0.5, 0.0])
    # A bin empty on both sides is dropped: same as scipy on the remaining bins, one dof less.
    ref = sps.chisquare([40, 60], [50, 50])
    assert chi_square(observed, props) == pytest.approx((ref.statistic, ref.pvalue), rel=1e-12)
    # Observations in a bin the reference never saw: large but finite, p ~ 0.
    stat, p = chi_square(np.array([40, 55, 5]), props)
    assert np.isfinite(stat) and stat > 1e4 and p < 1e-12
    assert np.isnan(chi_square(np.array([5, 0]), np.array([1.0, 0.0]))[1])  # one bin: no test


def test_benjamini_hochberg_equals_scipy() -> None:
    rng = np.random.default_rng(3)
    for m in (1, 2, 7, 50):
        ps = rng.random(m) ** 3
        ps[: m // 3] = ps[0]  # ties
        np.testing.assert_array_equal(benjamini_hochberg(ps), sps.false_discovery_control(ps, method="bh"))
    ps = np.array([0.01, np.nan, 0.04, 0.03])
    adj = benjamini_hochberg(ps)
    assert np.isnan(adj[1])
    np.testing.assert_array_equal(adj[[0, 2, 3]], sps.false_discovery_control(ps[[0, 2, 3]]))


def test_ks_from_sketches_vs_scipy_on_continuous_data() -> None:
    rng = np.random.default_rng(4)
    for shift in (0.0, 0.05, 0.3):
        x, y = rng.normal(0, 1, 10_000), rng.normal(shift, 1, 8_000)
        d, p = ks_from_sketches(_sketch(x), _sketch(y))
        exact = sps.ks_2samp(x, y, method="asymp")
        # Sup over bucket boundaries: never above the exact statistic, at most one bucket's mass below.
        assert d <= exact.statistic + 1e-12
        assert exact.statistic - d <= 0.01
        en = round(10_000 * 8_000 / 18_000)
        assert p == pytest.approx(kolmogorov_sf(d, en), rel=1e-15)


@pytest.mark.parametrize("n", [20, 140, 999, 1_000, 4_444, 8_333, 40_000])
def test_kolmogorov_sf_vs_scipy_kstwo(n: int) -> None:
    """Where a verdict can turn on it (p below ~0.025) the p-value is scipy's to 1e-9; above, 1 %."""
    for z in np.linspace(0.2, 6.0, 59):
        d = z / np.sqrt(n)
        expected = sps.kstwo.sf(d, n)
        got = kolmogorov_sf(d, n)
        if n < 1_000 or n * d * d >= 2.2:
            assert got == pytest.approx(expected, rel=1e-9, abs=1e-300)
        else:
            assert got == pytest.approx(expected, rel=0.01)
    assert (kolmogorov_sf(0.0, n), kolmogorov_sf(1.0, n)) == (1.0, 0.0)
    assert np.isnan(kolmogorov_sf(0.1, 0))


def test_ks_from_sketches_exact_on_few_distinct_values() -> None:
    rng = np.random.default_rng(5)
    x = rng.choice([-2.0, 0.0, 1.0, 3.5, 7.0], 5_000, p=[0.1, 0.2, 0.3, 0.2, 0.2])
    y = rng.choice([-2.0, 0.0, 1.0, 3.5, 7.0], 4_000, p=[0.15, 0.2, 0.3, 0.2, 0.15])
    d, p = ks_from_sketches(_sketch(x), _sketch(y))
    exact = sps.ks_2samp(x, y, method="asymp")
    assert d == pytest.approx(exact.statistic, abs=1e-15)
    assert p == pytest.approx(exact.pvalue, rel=1e-9)
    assert np.isnan(ks_from_sketches(_sketch(x), QuantileSketch(A))[0])


def test_wasserstein_from_sketches_vs_scipy() -> None:
    rng = np.random.default_rng(6)
    for shift in (0.0, 0.5, 3.0):
        x, y = rng.normal(2, 1, 10_000), rng.normal(2 + shift, 2, 10_000)
        w = wasserstein_from_sketches(_sketch(x), _sketch(y))
        bound = A * (np.abs(x).mean() + np.abs(y).mean())
        assert abs(w - sps.wasserstein_distance(x, y)) <= bound
    # Values that are bucket representatives move nowhere: exact.
    _, reps, _ = _sketch(rng.uniform(-5, 5, 200)).buckets()
    x, y = rng.choice(reps, 3_000), rng.choice(reps[::2], 2_000)
    w = wasserstein_from_sketches(_sketch(x), _sketch(y))
    assert w == pytest.approx(sps.wasserstein_distance(x, y), rel=1e-9)


def _window(columns: dict[str, np.ndarray]) -> dict[str, FeatureStats]:
    n = len(next(iter(columns.values())))
    names = list(columns)
    rows = np.column_stack([columns[c] for c in names]).tolist()
    acc = WindowAccumulator()
    acc.add([dict(zip(names, r, strict=True)) for r in rows], [Prediction(value=0.0)] * n, [None] * n)
    return merge_partials([acc.to_partial()]).features


def _profile(columns: dict[str, np.ndarray]) -> ReferenceProfile:
    cols = {k: v.tolist() for k, v in columns.items()}
    return build_profile("m", "1", cols, label_column=None, prediction_column=None, bins=10, top_k=10)


def _scores(profile: ReferenceProfile, window: dict[str, FeatureStats]) -> dict[str, FeatureScore]:
    return {name: score_feature(profile.features[name], window[name], CFG) for name in profile.features}


def test_three_shifted_features_of_twenty_drift_and_nothing_else() -> None:
    rng = np.random.default_rng(42)
    names = [f"f{i:02d}" for i in range(20)]
    shifted = {"f03", "f11", "f17"}
    reference = {n: rng.normal(i, 1 + i % 3, 20_000) for i, n in enumerate(names)}
    profile = _profile(reference)
    same = _window({n: rng.normal(i, 1 + i % 3, 5_000) for i, n in enumerate(names)})
    # Shift by 0.6 standard deviations: PSI ~0.3 against ~0.005 for the unshifted features.
    shift = {n: 0.6 * (1 + i % 3) if n in shifted else 0.0 for i, n in enumerate(names)}
    moved = _window({n: rng.normal(i + shift[n], 1 + i % 3, 5_000) for i, n in enumerate(names)})
    calm = verdicts(_scores(profile, same), CFG)
    assert calm.drifted_features == [] and not calm.drifted and calm.n_features == 20
    alarm = verdicts(_scores(profile, moved), CFG)
    assert alarm.drifted_features == sorted(shifted)
    assert alarm.drifted and alarm.n_drifted == 3
    for name in shifted:
        v = alarm.features[name]
        assert v.drifted and v.drifted_by[0] == "ks" and "psi" in v.drifted_by
        assert v.p_adj is not None and v.p_adj < CFG.fdr_q


def test_large_window_trivial_shift_is_significant_but_not_drift() -> None:
    rng = np.random.default_rng(7)
    profile = _profile({"x": rng.normal(0, 1, 200_000)})
    window = _window({"x": rng.normal(0.05, 1, 200_000)})
    scores = _scores(profile, window)
    assert scores["x"].ks_pvalue is not None and scores["x"].ks_pvalue < 1e-6
    assert scores["x"].psi is not None and scores["x"].psi < CFG.psi_threshold
    assert verdicts(scores, CFG).drifted_features == []


def test_numeric_score_fields() -> None:
    rng = np.random.default_rng(8)
    profile = _profile({"x": rng.uniform(0, 10, 10_000)})
    window = _window({"x": np.concatenate([rng.uniform(0, 10, 970), [-5.0] * 10, [20.0] * 20])})
    s = score_feature(profile.features["x"], window["x"], CFG)
    assert s.kind == "numeric" and s.count == 1_000 and s.out_of_range == 30
    assert sum(s.histogram) == pytest.approx(1.0) and sum(s.reference_histogram) == pytest.approx(1.0)
    assert len(s.histogram) == len(s.bin_labels) == len(s.bin_edges) + 1
    assert s.chi2_stat is None and s.wasserstein is not None and s.pvalue == s.ks_pvalue


def test_categorical_drift_and_min_count() -> None:
    rng = np.random.default_rng(9)
    cats = np.array(["a", "b", "c", "d"])
    profile = _profile({"c": rng.choice(cats, 10_000, p=[0.4, 0.3, 0.2, 0.1])})
    window = _window({"c": rng.choice(np.append(cats, "new"), 2_000, p=[0.1, 0.2, 0.2, 0.1, 0.4])})
    s = score_feature(profile.features["c"], window["c"], CFG)
    assert s.kind == "categorical" and s.ks_stat is None and s.bin_labels[-1] == "__other__"
    assert s.histogram[-1] == pytest.approx(0.4, abs=0.05)  # the new category lands in "other"
    v = verdicts({"c": s}, CFG)
    assert v.drifted_features == ["c"] and v.features["c"].drifted_by[0] == "chi2"
    small = _window({"c": rng.choice(np.append(cats, "new"), 50, p=[0.1, 0.2, 0.2, 0.1, 0.4])})
    few = score_feature(profile.features["c"], small["c"], CFG)
    assert few.psi is not None and few.psi > CFG.psi_threshold  # scored ...
    verdict = verdicts({"c": few}, CFG)
    assert not verdict.drifted and verdict.features["c"].p_adj is None  # ... but never a verdict


def test_empty_window_scores_nothing() -> None:
    rng = np.random.default_rng(10)
    profile = _profile({"x": rng.normal(0, 1, 1_000)})
    s = score_feature(profile.features["x"], FeatureStats(), CFG)
    assert s.count == 0 and s.psi is None and s.ks_pvalue is None and s.histogram == [0.0] * 10
    assert not verdicts({"x": s}, CFG).drifted


def test_kolmogorov_sf_is_quiet_and_finite_where_the_last_term_rounds_to_zero() -> None:
    """Real-data windows (elec2 against its preceding rows) met (n, d) where n * (1 - d) is an
    integer up to rounding: the last Birnbaum-Tingey term rounded to log1p(-1) and numpy warned on
    every score. These are the (n, d) met there."""
    import warnings

    from driftline.operators.drift import kolmogorov_sf

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for n, d in ((1600, 0.31625), (1600, 0.300625), (1600, 0.14437499999999998)):
            p = kolmogorov_sf(d, n)
            assert p == pytest.approx(sps.kstwo.sf(d, n), rel=1e-6, abs=1e-300)


def _pomeranz_pairs(rng: np.random.Generator, count: int) -> list[tuple[float, int]]:
    """(d, n) where scipy's kstwo.sf takes Pomeranz's recursion (n <= 140, 0.754693 < n d^2 <= 4),
    half of them gaps between two empirical CDFs (what windows give), half anywhere in the range."""
    pairs: list[tuple[float, int]] = []
    while len(pairs) < count:
        n = int(rng.integers(2, 141))
        if len(pairs) % 2:
            a, b = int(rng.integers(1, 2_000)), int(rng.integers(1, 300))
            d = abs(int(rng.integers(0, a + 1)) / a - int(rng.integers(0, b + 1)) / b)
        else:
            d = float(np.sqrt(rng.uniform(0.754693, 4.0) / n))
        t = n * d
        if 1.0 < t < n - 1 and d < 0.5 and 0.754693 < t * d <= 4.0:
            pairs.append((d, n))
    return pairs


def test_kstwo_sf_on_pomeranz_branch_is_scipys_to_the_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the C extension the p-value below KS_EXACT_BELOW runs its own copy of scipy's
    Pomeranz recursion: it must give scipy's bits (the cdf is a long double there: the sf is taken
    before rounding)."""
    from scipy.stats._ksstats import kolmogn

    from driftline.operators import ks_native
    from driftline.operators.drift import _kstwo_sf

    monkeypatch.setattr(ks_native, "NATIVE", None)
    _kstwo_sf.cache_clear()
    try:
        for d, n in _pomeranz_pairs(np.random.default_rng(19), 200):
            expected = float(np.clip(kolmogn(n, d, cdf=False), 0.0, 1.0))
            assert _kstwo_sf(d, n) == expected, (d, n)
            assert kolmogorov_sf(d, n) == expected
    finally:
        _kstwo_sf.cache_clear()


def test_kstwo_sf_on_pomeranz_branch_in_c_is_scipys_within_1e_11() -> None:
    """The C recursion (_ks.c) takes the same steps but adds a row's products in index order where
    numpy hands them to BLAS: scipy's p-value within 1e-11 relative, on windows' gaps and across
    the branch's range; and it runs for every pair of the branch (None would mean the numpy path)."""
    from scipy.stats._ksstats import kolmogn

    from driftline.operators import ks_native
    from driftline.operators.drift import _kstwo_sf

    if ks_native.NATIVE is None:
        pytest.skip("the _ks extension is not built here")
    _kstwo_sf.cache_clear()
    try:
        for d, n in _pomeranz_pairs(np.random.default_rng(23), 600):
            expected = float(np.clip(kolmogn(n, d, cdf=False), 0.0, 1.0))
            native = ks_native.NATIVE.pomeranz_sf(n, d)
            assert native is not None, (d, n)
            assert native == pytest.approx(expected, rel=1e-11, abs=1e-300), (d, n)
            assert _kstwo_sf(d, n) == native
    finally:
        _kstwo_sf.cache_clear()
    with pytest.raises(ValueError, match="0 < x < 1"):
        ks_native.NATIVE.pomeranz_sf(10, 1.5)


def test_kstwo_sf_on_pelz_good_branch_in_c_is_scipys_within_1e_13(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where scipy sums the Pelz-Good series (n > 140, n d^2 < 2.2, n d^1.5 > 1.4: most features of a
    window without drift) the C extension computes it term for term: scipy's value within 1e-13
    (libm's exp and pow where numpy may use its own), on windows' effective sizes below
    KS_EXACT_BELOW and on the series' whole range; without it, scipy's own value."""
    from scipy.stats._ksstats import kolmogn

    from driftline.operators import drift, ks_native
    from driftline.operators.drift import _kstwo_sf

    if ks_native.NATIVE is None:
        pytest.skip("the _ks extension is not built here")
    rng = np.random.default_rng(29)
    taken = 0
    for _ in range(3_000):
        n = int(rng.integers(141, 1_000)) if taken % 2 else int(rng.integers(141, 100_001))
        d = float(np.sqrt(rng.uniform(0.0, 2.2) / n))
        if n * d**1.5 <= 1.4 or n * d <= 1.0:  # Durbin's matrix or Ruben-Gambino: not the series
            continue
        taken += 1
        expected = float(np.clip(kolmogn(n, d, cdf=False), 0.0, 1.0))
        native = ks_native.NATIVE.pelz_good_sf(n, d)
        assert native == pytest.approx(expected, rel=1e-13, abs=1e-300), (d, n)
        if n < drift.KS_EXACT_BELOW:
            _kstwo_sf.cache_clear()
            assert _kstwo_sf(d, n) == native
            monkeypatch.setattr(ks_native, "NATIVE", None)
            _kstwo_sf.cache_clear()
            assert _kstwo_sf(d, n) == expected  # scipy's, where the extension is not built
            monkeypatch.undo()
    _kstwo_sf.cache_clear()
    assert taken > 2_000


def test_kstwo_sf_on_durbins_branch_in_c_is_scipys_within_1e_12() -> None:
    """Where scipy takes Durbin's matrix (n <= 140 with n d^2 <= 0.754693, above where n d^1.5 <=
    1.4: a small window's features without drift) the C extension multiplies the same matrices:
    scipy's value within 1e-12, and the p-value below KS_EXACT_BELOW is the extension's."""
    from scipy.stats._ksstats import kolmogn

    from driftline.operators import ks_native
    from driftline.operators.drift import _kstwo_sf

    if ks_native.NATIVE is None:
        pytest.skip("the _ks extension is not built here")
    rng = np.random.default_rng(31)
    taken = 0
    while taken < 400:
        n = int(rng.integers(2, 1_000))
        if n <= 140:
            d = float(np.sqrt(rng.uniform(0.0, 0.754693) / n))
        else:
            d = (1.4 / n) ** (2 / 3) * float(rng.uniform(0.05, 1.0))
        if not (1.0 < n * d < n - 1 and d < 0.5):
            continue
        taken += 1
        expected = float(np.clip(kolmogn(n, d, cdf=False), 0.0, 1.0))
        native = ks_native.NATIVE.durbin_sf(n, d)
        assert native == pytest.approx(expected, rel=1e-12, abs=1e-300), (d, n)
        _kstwo_sf.cache_clear()
        assert _kstwo_sf(d, n) == native
    _kstwo_sf.cache_clear()


def test_score_feature_with_a_prepared_reference_equals_one_without() -> None:
    """The scorer prepares each profile once (bin shares, labels, the sketch's buckets): scores are
    those of score_feature on the bare profile, numeric and categorical, empty windows too, and
    each score owns its lists."""
    from dataclasses import asdict

    from driftline.operators.drift import PreparedReference

    rng = np.random.default_rng(20)
    cats = np.array(["a", "b", "c"])
    profile = _profile({"x": rng.normal(0, 1, 3_000), "c": rng.choice(cats, 3_000)})
    prepared = {name: PreparedReference.of(f) for name, f in profile.features.items()}
    for size in (0, 1, 7, 60, 500):
        window = _window({"x": rng.normal(0.3, 1, size), "c": rng.choice(cats, size)}) if size else {
            "x": FeatureStats(), "c": FeatureStats()}
        for name, fprofile in profile.features.items():
            bare = score_feature(fprofile, window[name], CFG)
            with_sketch = score_feature(fprofile, window[name], CFG, fprofile.reference_sketch()
                                        if fprofile.kind == "numeric" else None)
            got = score_feature(fprofile, window[name], CFG, prepared[name])
            assert repr(asdict(got)) == repr(asdict(bare)) == repr(asdict(with_sketch))
            got.reference_histogram.append(9.0)
            got.bin_labels.append("x")
            assert score_feature(fprofile, window[name], CFG, prepared[name]) == bare


def test_a_prepared_reference_decodes_its_sketch_only_to_score(monkeypatch: pytest.MonkeyPatch) -> None:
    """Preparing a numeric profile decodes no sketch, nor does counting an under-filled window
    (count_feature: with many small models most models' windows are that); the first score
    decodes it, once, and later scores reuse its buckets."""
    from driftline.operators.drift import PreparedReference, count_feature
    from driftline.operators.profile import FeatureProfile

    decoded: list[str] = []
    decode = FeatureProfile.reference_sketch
    monkeypatch.setattr(FeatureProfile, "reference_sketch",
                        lambda self: decoded.append("x") or decode(self))
    rng = np.random.default_rng(21)
    fprofile = _profile({"x": rng.normal(0, 1, 3_000)}).features["x"]
    window = _window({"x": rng.normal(0.3, 1, 7)})["x"]
    prepared = PreparedReference.of(fprofile)
    count_feature(fprofile, window, prepared)
    assert decoded == []
    first = score_feature(fprofile, window, CFG, prepared)
    assert score_feature(fprofile, window, CFG, prepared) == first == score_feature(fprofile, window, CFG)
    assert decoded == ["x", "x"]  # the prepared reference's one decode, and the bare call's own
