"""Multivariate drift operators: a correlation change no single feature shows.

Two correlated features (rho = 0.8) are rotated by 90 degrees, ``(a, b) -> (-b, a)``: both
marginals stay N(0, 1), the correlation becomes -0.8. The univariate ``DriftScorer`` and the
per-feature sequential detectors stay silent; the reconstruction-error detector alarms within
hundreds of events and the domain classifier's AUC crosses its calibrated threshold. A clean window
(same joint law) stays silent in both. All draws are seeded.
"""

from __future__ import annotations

import csv
import pickle
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import ndtri

from driftline.operators import watch_native
from driftline.operators.compiled_paths import reference_paths
from driftline.operators.multivariate import (
    DomainClassifierDrift,
    NormalScores,
    ReconstructionDrift,
    _FlatScores,
    auc_score,
    numeric_matrix,
)
from driftline.operators.scorer import DriftScorer
from driftline.operators.sequential import NumericDetector, feature_arl

RHO = 0.8
NATIVE_ONLY = pytest.mark.skipif(watch_native._watch is None, reason="the C watch was not built")


def _table(rng: np.random.Generator, n: int, *, rotated: bool = False) -> dict[str, Any]:
    a = rng.normal(size=n)
    b = RHO * a + np.sqrt(1 - RHO**2) * rng.normal(size=n)
    if rotated:
        a, b = -b, a
    return {"a": a, "b": b, "c": rng.normal(size=n), "d": rng.exponential(size=n)}


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return _table(np.random.default_rng(11), 20_000)


@pytest.fixture(scope="module")
def domain(reference: dict[str, Any]) -> DomainClassifierDrift:
    return DomainClassifierDrift(reference, sample_size=500, null_runs=4, max_iter=30, seed=3)


def test_univariate_tests_stay_silent_on_rotation(reference: dict[str, Any]) -> None:
    rng = np.random.default_rng(12)
    window = _table(rng, 5_000, rotated=True)
    assert DriftScorer.from_reference(reference).score(window).drifted_features == []
    arl = feature_arl(1_000_000, n_features=4)
    for name in reference:
        detector = NumericDetector.from_reference(reference[name], arl=arl)
        assert detector.update_many(window[name]) == [], name


def test_reconstruction_drift_catches_rotation_and_keeps_quiet(reference: dict[str, Any]) -> None:
    rng = np.random.default_rng(13)
    monitor = ReconstructionDrift.from_reference(reference, arl=1_000_000)
    assert monitor.features == ["a", "b", "c", "d"] and monitor.components == 3
    assert monitor.update_many(_table(rng, 50_000)) == []
    clean = monitor.summarize(_table(rng, 5_000))
    assert abs(clean.share_above_p99 - 0.01) < 0.006
    rotated = _table(rng, 2_000, rotated=True)
    alarms = monitor.update_many(rotated)
    assert alarms and alarms[0].offset < 300
    assert alarms[0].index == 50_000 + alarms[0].offset
    assert monitor.summarize(rotated).share_above_p99 > 0.3


def test_reconstruction_drift_is_exact_and_pickles(reference: dict[str, Any]) -> None:
    rng = np.random.default_rng(14)
    stream = _table(rng, 4_000, rotated=True)
    whole = ReconstructionDrift.from_reference(reference, arl=1e4)
    chunked = pickle.loads(pickle.dumps(ReconstructionDrift.from_reference(reference, arl=1e4)))
    expected = whole.update_many(stream)
    got = []
    for start in range(0, 4_000, 700):
        got += chunked.update_many({k: v[start:start + 700] for k, v in stream.items()})
    assert [(a.index, a.component) for a in got] == [(a.index, a.component) for a in expected]


def test_domain_classifier_fires_on_rotation_not_on_clean(
        reference: dict[str, Any], domain: DomainClassifierDrift) -> None:
    rng = np.random.default_rng(15)
    assert domain.inflation >= 1.0 and 0.5 < domain.threshold(500, 500) < 0.65
    clean = domain.score(_table(rng, 2_000), ordinal=1)
    assert not clean.drifted and clean.auc < clean.threshold
    rotated = domain.score(_table(rng, 2_000, rotated=True), ordinal=2)
    assert rotated.drifted and rotated.auc > 0.75
    assert {name for name, _ in rotated.top_features[:2]} == {"a", "b"}
    assert rotated.n_reference == rotated.n_window == 500


def test_domain_classifier_replays_identically(
        reference: dict[str, Any], domain: DomainClassifierDrift) -> None:
    window = _table(np.random.default_rng(16), 800, rotated=True)
    assert domain.score(window, ordinal=7) == domain.score(window, ordinal=7)


def test_tables_and_helpers() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"x": pd.array([1.0, None, 3.0], dtype="Float64"), "y": [1, 2, 3]})
    assert np.isnan(numeric_matrix(frame, ["x", "y"])[1, 0])
    with pytest.raises(ValueError, match="lacks feature"):
        numeric_matrix({"x": [1.0]}, ["z"])
    scores = NormalScores.fit({"x": [1.0, 2.0, 3.0, 4.0]}, ["x"])
    assert scores.transform({"x": [None]})[0, 0] == 0.0
    assert auc_score(np.array([0, 1]), np.array([0.2, 0.2])) == 0.5
    with pytest.raises(ValueError, match="at least 2 numeric"):
        ReconstructionDrift.from_reference({"x": [1.0, 2.0]})


def test_domain_classifier_without_scikit_learn_names_the_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "sklearn", None)
    with pytest.raises(ModuleNotFoundError, match=r"\[multivariate\] extra.*driftline\[multivariate\]"):
        DomainClassifierDrift({"x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})


def test_domain_classifier_splits_categorical_features() -> None:
    """A category that went with high values now goes with low ones: both marginals unchanged."""
    rng = np.random.default_rng(17)

    def table(n: int, flipped: bool) -> dict[str, Any]:
        x = rng.normal(size=n)
        high = (x > 0) != flipped
        noise = rng.random(n) < 0.1
        return {"x": x, "plan": np.where(high != noise, "pro", "free").tolist(),
                "active": (rng.random(n) < 0.5).tolist()}

    domain = DomainClassifierDrift(table(10_000, False), sample_size=500, null_runs=3, max_iter=30)
    assert domain.features == ["x", "plan", "active"]
    assert not domain.score(table(2_000, False), ordinal=1).drifted
    flipped = domain.score(table(2_000, True), ordinal=2)
    assert flipped.drifted and {name for name, _ in flipped.top_features[:2]} == {"x", "plan"}
    unseen = table(500, False)
    unseen["plan"] = ["enterprise"] * 500  # a category the reference never saw: "other"
    assert domain.score(unseen, ordinal=3).top_features[0][0] == "plan"


def test_the_grid_started_search_counts_like_searchsorted() -> None:
    """count_below starts each value's bisection in its grid cell: the count is searchsorted's
    (side "left") for ties, NaN (0), +-inf, values beyond the reference, a feature with one value
    and one whose last point is far out (most points share a cell: the full bisection)."""
    rng = np.random.default_rng(11)
    for trial in range(40):
        d = int(rng.integers(1, 6))
        refs = _references(rng, trial, d)
        flat = _FlatScores.of(refs, [(float(r[0]), float(r[-1]), 0.0, 0.0, 1.0, 1.0) for r in refs])
        n = 500
        columns = np.empty((d, n))
        for j, ref in enumerate(refs):
            values = np.concatenate([rng.choice(ref, n // 2), rng.normal(scale=3, size=n // 2)])
            values[rng.integers(0, n, 10)] = rng.choice([np.nan, np.inf, -np.inf, 1e308, -1e308, 0.0], 10)
            columns[j] = values
        counts = flat.count_below(columns)
        for j, ref in enumerate(refs):
            expected = np.where(np.isnan(columns[j]), 0, np.searchsorted(ref, columns[j], side="left"))
            assert counts[j].tolist() == expected.tolist(), (trial, j)


def _references(rng: np.random.Generator, trial: int, d: int) -> list[np.ndarray]:
    refs = []
    for j in range(d):
        size = int(rng.integers(2, 300))
        kind = (trial + j) % 6
        if kind == 0:
            ref = rng.normal(size=size)
        elif kind == 1:
            ref = np.round(rng.lognormal(size=size), 1)  # many ties
        elif kind == 2:
            ref = np.full(size, 3.5)  # no spread: one cell
        elif kind == 3:
            ref = np.append(rng.normal(size=size - 1), 1e300)  # one far point
        elif kind == 4:
            ref = np.concatenate([rng.integers(-2, 3, size).astype(np.float64), [-0.0, np.inf, np.inf]])
        else:
            ref = rng.integers(0, 4, size).astype(np.float64)
        refs.append(np.sort(ref))
    return refs


def test_tied_values_count_the_points_at_most_them_like_searchsorted() -> None:
    """count_at_most (the tied values' second count) is searchsorted's side "right": repeated
    points, signed zeros, +inf points (equal to the row's +inf padding), one far point."""
    rng = np.random.default_rng(12)
    for trial in range(40):
        d = int(rng.integers(1, 6))
        refs = _references(rng, trial, d)
        flat = _FlatScores.of(refs, [(float(r[0]), float(r[-1]), 0.0, 0.0, 1.0, 1.0) for r in refs])
        features = rng.integers(0, d, 600)
        values = np.array([rng.choice(refs[j]) if rng.random() < 0.7 else rng.normal(scale=3)
                           for j in features.tolist()])
        values[rng.integers(0, values.size, 10)] = rng.choice([np.inf, -np.inf, 0.0, -0.0, 1e308], 10)
        expected = [int(np.searchsorted(refs[j], v, side="right"))
                    for j, v in zip(features.tolist(), values.tolist(), strict=True)]
        assert flat.count_at_most(values, features).tolist() == expected, trial


def test_scores_with_ties_are_the_mid_rank_scores() -> None:
    """scores_by_feature's ranks, ``left + right + 1`` per value, from searchsorted per feature."""
    rng = np.random.default_rng(13)
    refs = _references(rng, 0, 6)
    scores = NormalScores([f"f{j}" for j in range(6)], refs)
    x = np.stack([np.concatenate([rng.choice(ref, 700), rng.normal(size=300)]) for ref in refs], axis=1)
    x[rng.integers(0, 1000, 20), rng.integers(0, 6, 20)] = np.nan
    with np.errstate(invalid="ignore"):  # inf - inf beyond a reference with +inf points
        u = scores.scores_by_feature(x)
    for j, ref in enumerate(refs):
        inside = (x[:, j] >= scores.tails[j][0]) & (x[:, j] <= scores.tails[j][1])
        ranks = np.searchsorted(ref, x[:, j], side="left") + np.searchsorted(ref, x[:, j], side="right") + 1
        expected = ndtri(ranks / (2.0 * (ref.size + 1)))
        assert u[j][inside].tolist() == expected[inside].tolist(), j
        assert (np.isnan(x[:, j]) <= (u[j] == 0.0)).all()


REAL_STREAMS = [Path("/work/shared/data/elec2.csv"), Path("/work/shared/data/noaa_weather.csv")]


def test_real_streams_score_their_mid_ranks_in_c_and_numpy() -> None:
    """Elec2 and NOAA weather (many tied values, a stream that drifts away from its first 5,000
    rows): every feature's scores, by the C loop and by the numpy steps, are ``ndtri`` of the
    mid-rank ``searchsorted`` finds in the reference, where the value is inside its range (the
    tables' layout plays no part in that reference), and the two paths agree bit for bit."""
    if not all(path.exists() for path in REAL_STREAMS):
        pytest.skip("needs the streams in /work/shared/data")
    for path in REAL_STREAMS:
        with path.open() as f:
            rows = list(csv.DictReader(f))
        names = [name for name in rows[0] if name not in ("class", "target")]
        x = np.array([[float(row[name]) for name in names] for row in rows])
        scores = NormalScores.fit({name: x[:5_000, j] for j, name in enumerate(names)}, names)
        with_c = scores.scores_by_feature(x[5_000:])
        with reference_paths():
            without = scores.scores_by_feature(x[5_000:])
        assert with_c.tobytes() == without.tobytes(), path.name
        for j, ref in enumerate(scores.sorted_reference):
            values = x[5_000:, j]
            inside = (values >= ref[0]) & (values <= ref[-1])
            ranks = np.searchsorted(ref, values, side="left") + np.searchsorted(ref, values, side="right") + 1
            expected = ndtri(ranks / (2.0 * (ref.size + 1)))
            assert with_c[j][inside].tobytes() == expected[inside].tobytes(), (path.name, names[j])


def test_the_flat_tables_are_built_again_after_a_pickle_not_carried_in_it() -> None:
    """A pickled NormalScores leaves its flat tables out (their layout is this code's, not the
    pickle's), and one pickled with tables of an older layout (no even-rank offsets) builds them
    anew on its first transform: the same scores."""
    rng = np.random.default_rng(7)
    scores = NormalScores(["a", "b"], [np.sort(rng.normal(size=40)), np.sort(rng.integers(0, 5, 60) * 1.0)])
    x = np.stack([rng.normal(size=200), rng.integers(0, 6, 200) * 1.0], axis=1)  # ties: even ranks
    u = scores.scores_by_feature(x)
    assert scores._flat_scores is not None
    loaded = pickle.loads(pickle.dumps(scores))
    assert loaded._flat_scores is None
    assert loaded.scores_by_feature(x).tobytes() == u.tobytes()
    old = scores.__dict__.copy()  # as an older release pickled it: its tables in the state
    old["_flat_scores"] = object()
    stale = NormalScores.__new__(NormalScores)
    stale.__setstate__(old)
    assert stale.scores_by_feature(x).tobytes() == u.tobytes()


@NATIVE_ONLY
@settings(max_examples=150, deadline=None)
@given(st.integers(0, 300), st.integers(1, 7), st.integers(0, 5), st.booleans(), st.integers(0, 2**32 - 1))
def test_c_normal_scores_are_numpy_s_bit_for_bit(n: int, d: int, trial: int, fortran: bool,
                                                 seed: int) -> None:
    """The C loop (``_watch.normal_scores``) against the numpy steps: ties (the second count), NaN,
    +-inf, values beyond the tails, a reference of one value, one with a far point (the full
    bisection) or +inf points, any layout of x."""
    rng = np.random.default_rng(seed)
    refs = _references(rng, trial, d)
    scores = NormalScores([f"f{j}" for j in range(d)], refs)
    x = np.stack([np.concatenate([rng.choice(ref, n // 2), rng.normal(scale=3, size=n - n // 2)])
                  for ref in refs], axis=1)
    if x.size:
        picks = rng.integers(0, x.size, size=max(1, x.size // 9))
        wild = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e308, -1e308, 5e-324]
        x.flat[picks] = rng.choice(wild, size=picks.size)
    x = np.asfortranarray(x) if fortran else x
    assert scores._flat().native_scores(x, np.empty((d, n)))  # (the C path takes any float64 x)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf beyond a reference with +inf points
        with_c = scores.scores_by_feature(x)
        with reference_paths():
            without = scores.scores_by_feature(x)
    assert with_c.shape == without.shape == (d, n) and with_c.dtype == without.dtype
    assert (np.isnan(with_c) == np.isnan(without)).all()
    assert np.where(np.isnan(with_c), np.nan, with_c).tobytes() == np.where(np.isnan(without), np.nan,
                                                                             without).tobytes()


@NATIVE_ONLY
def test_normal_scores_take_the_c_path_and_leave_others_to_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    native = watch_native._watch

    class Counting:
        def normal_scores(self, *args: object) -> bool:
            took = native.normal_scores(*args)
            calls.append(took)
            return bool(took)

    monkeypatch.setattr(watch_native, "NATIVE", Counting())
    rng = np.random.default_rng(5)
    scores = NormalScores(["a", "b"], [np.sort(rng.normal(size=50)), np.sort(rng.normal(size=80))])
    x = rng.normal(size=(30, 2))
    u = scores.scores_by_feature(x)
    ints = scores.scores_by_feature(np.arange(6).reshape(3, 2))  # not float64: numpy's steps
    assert calls == [True, False]
    with reference_paths():
        assert u.tolist() == scores.scores_by_feature(x).tolist()
        assert ints.tolist() == scores.scores_by_feature(np.arange(6).reshape(3, 2)).tolist()
    flat, out = scores._flat(), np.empty((2, 30))
    assert not replace(flat, padded=flat.padded[:3]).native_scores(x, out)  # a probe would leave the table
    assert not replace(flat, width=0).native_scores(x, out)
    assert not flat.native_scores(x, np.empty((3, 30)))  # out of another shape
    with pytest.raises(TypeError):
        native.normal_scores(x, x)
