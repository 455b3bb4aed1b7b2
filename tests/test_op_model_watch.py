"""The stage-1 multivariate state: exact under any batching and any split of a model's traffic."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftline.operators.model_watch import (
    RECONSTRUCTION_FEATURE,
    MultivariateReference,
    MultivariateWatch,
    merge_windows,
    multivariate_section,
)
from driftline.operators.profile import ReferenceProfile, build_profile

WINDOW_MS = 60_000


def _table(rng: np.random.Generator, n: int, rho: float) -> dict[str, np.ndarray]:
    a = rng.normal(size=n)
    return {"a": a, "b": rho * a + np.sqrt(1 - rho**2) * rng.normal(size=n), "c": rng.lognormal(size=n)}


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    rng = np.random.default_rng(1)
    table = {k: v.tolist() for k, v in _table(rng, 5_000, 0.8).items()}
    scores = 1 / (1 + np.exp(-3 * np.asarray(table["a"])))
    labels = rng.random(scores.size) < 1 / (1 + np.exp(-2 * np.asarray(table["a"])))
    section = multivariate_section(table, scores=scores.tolist(), labels=labels.tolist(), sample_size=300)
    made = build_profile("m", "1", table, label_column=None, prediction_column=None, bins=10, top_k=5,
                         created_at_ms=0, multivariate=section)
    return ReferenceProfile.model_validate_json(made.model_dump_json())  # as the topic carries it


def _events(n: int, rho: float) -> tuple[list[int], list[str], list[dict[str, Any]], list[float | None]]:
    rng = np.random.default_rng(2)
    table = _table(rng, n, rho)
    features: list[dict[str, Any]] = [{k: float(v[i]) for k, v in table.items()} for i in range(n)]
    features[3]["b"] = None  # a missing value scores as the median
    features[4]["c"] = "text"  # not a number: missing too
    scores: list[float | None] = [float(1 / (1 + np.exp(-3 * f["a"]))) for f in features]
    scores[5] = None  # no score: not in the estimate
    return list(range(0, n * 37, 37)), [f"p{i}" for i in range(n)], features, scores


def _watch(profile: ReferenceProfile) -> MultivariateWatch:
    watch = MultivariateWatch(1.0, status_grid_ms=10_000, min_effect_sd=0.0, learning=200, sample_size=300)
    assert watch.add_profile(profile) and not watch.add_profile(profile)
    return watch


def _feed(watch: MultivariateWatch, rows: list[int], batch: int, events: Any) -> list[dict[str, Any]]:
    times, ids, features, scores = events
    reports = []
    for lo in range(0, len(rows), batch):
        part = rows[lo : lo + batch]
        reports += watch.observe("m", "1", [times[i] for i in part], [ids[i] for i in part],
                                 [features[i] for i in part], [scores[i] for i in part], [WINDOW_MS])
    return reports


def _windows(watches: list[MultivariateWatch], k: int) -> dict[int, Any]:
    starts = sorted({start for w in watches for (_, start, _, _) in w.windows})
    out = {}
    for start in starts:
        parts = [p for w in watches if (p := w.take(WINDOW_MS, start, "m", "1")) is not None]
        merged = merge_windows(parts, k=k)
        out[start] = (merged.sums, merged.sample.tobytes(), merged.estimate())
    return out


def test_windows_are_identical_under_any_batching_and_split(profile: ReferenceProfile) -> None:
    events = _events(6_000, 0.8)
    whole = _watch(profile)
    _feed(whole, list(range(6_000)), 6_000, events)
    small = _watch(profile)
    _feed(small, list(range(6_000)), 97, events)
    # two shards, each seeing its events in order
    shards = [_watch(profile), _watch(profile)]
    for s, watch in enumerate(shards):
        _feed(watch, [i for i in range(6_000) if i % 2 == s], 500, events)
    expected = _windows([whole], 300)
    assert _windows([small], 300) == expected
    assert _windows(shards, 300) == expected
    sums, _, estimate = next(iter(expected.values()))
    assert sums["n"] == 60_000 // 37 + 1 and sums["n_scored"] == sums["n"] - 1  # one event without a score
    assert estimate is not None and 0.5 < estimate.accuracy < 1


def test_a_rotation_opens_a_reconstruction_episode(profile: ReferenceProfile) -> None:
    watch = _watch(profile)
    assert _feed(watch, list(range(3_000)), 1_000, _events(3_000, 0.8)) == []
    times, ids, features, scores = _events(3_000, -0.8)
    rotated = ([t + 200_000 for t in times], [f"r{i}" for i in ids], features, scores)
    reports = _feed(watch, list(range(3_000)), 1_000, rotated)
    opened = [r for r in reports if r["kind"] == "opened"]
    assert len(opened) == 1 and opened[0]["feature"] == RECONSTRUCTION_FEATURE
    assert opened[0]["reference_id"] == profile.profile_id
    assert opened[0]["event_time"] < 200_000 + 300 * 37  # within a few hundred events
    quiet = _watch(profile)
    quiet.episodes_enabled = False  # sequential.enabled off: window sums only
    assert _feed(quiet, list(range(3_000)), 1_000, rotated) == [] and quiet.windows


def test_the_section_round_trips_and_a_profile_without_it_keeps_its_id(profile: ReferenceProfile) -> None:
    assert profile.multivariate is not None
    reference = MultivariateReference.from_section(profile.multivariate)
    assert reference.features == ["a", "b", "c"] and reference.estimator is not None
    plain = build_profile("m", "1", {"x": [1.0, 2.0, 3.0]}, label_column=None, prediction_column=None,
                          bins=2, top_k=1, created_at_ms=0)
    # the id of a profile without the section hashes what it hashed before the section existed
    assert plain.multivariate is None and "multivariate" not in plain.model_dump(exclude_none=True)
    assert plain.profile_id == "6f41bf287a4bce40"  # as built before the section existed
    assert multivariate_section({"x": [1.0] * 1_000}) is None  # one numeric feature: no section


def test_wild_values_are_huge_errors_and_outliers_not_overflows(profile: ReferenceProfile) -> None:
    assert profile.multivariate is not None
    reference = MultivariateReference.from_section(profile.multivariate)
    x = reference.matrix([{"a": 1e308, "b": -1e308, "c": 1.0}, {"a": float("inf"), "b": 0.0, "c": 1.0},
                          {"a": 10**400, "b": -(10**400), "c": 1}])  # JSON ints have no bound
    assert x[2].tolist() == [float("inf"), float("-inf"), 1.0]
    assert np.isnan(reference.matrix([{"a": True, "b": "1", "c": None}])).all()  # not numbers
    errors, distances = reference.errors_and_distances(x)
    assert np.all(np.isfinite(errors)) and np.all(errors > 100 * reference.reconstruction.p99)
    assert np.all(distances > reference.outliers.threshold)


def test_the_merged_roc_auc_matches_the_library_on_the_same_scores(profile: ReferenceProfile) -> None:
    """The pipeline's ROC-AUC comes from integer counts per calibration segment, merged over
    shards; the library's from every score. They differ only inside rising segments (pairs there
    count as ties), and agree exactly on scores where the calibration is flat."""
    assert profile.multivariate is not None
    estimator = MultivariateReference.from_section(profile.multivariate).estimator
    assert estimator is not None
    times, ids, features, scores = events = _events(6_000, 0.8)
    shards = [_watch(profile), _watch(profile)]
    for s, watch in enumerate(shards):
        _feed(watch, [i for i in range(6_000) if i % 2 == s], 700, events)
    merged = _windows(shards, 300)
    for start, (_, _, estimate) in merged.items():
        library = estimator.estimate(_scores_of_window(times, scores, start))
        assert estimate.n == library.n and 0.6 < library.roc_auc < 1
        assert estimate.roc_auc == pytest.approx(library.roc_auc, abs=0.002), start
    # scores only on the calibration's knots: every segment holds equal scores, so no approximation
    knots = estimator.calibrations[0].knots
    on_knots: list[float | None] = [float(knots[(i * 7) % knots.size]) for i in range(len(scores))]
    exact = _watch(profile)
    _feed(exact, list(range(6_000)), 1_000, (times, ids, features, on_knots))
    for start, (_, _, estimate) in _windows([exact], 300).items():
        library = estimator.estimate(_scores_of_window(times, on_knots, start))
        assert estimate.roc_auc == pytest.approx(library.roc_auc, abs=1e-9)


def _scores_of_window(times: list[int], scores: list[float | None], start: int) -> list[float]:
    return [v for t, v in zip(times, scores, strict=True) if t - t % WINDOW_MS == start and v is not None]


def _three_class(rng: np.random.Generator, n: int, shift: float) -> tuple[dict[str, np.ndarray], np.ndarray,
                                                                        np.ndarray, np.ndarray]:
    """A 3-class model over-confident about a fixed concept: features, prediction, confidence, label."""
    a = rng.normal(shift, 1.0, n)
    table = {"a": a, "b": 0.5 * a + rng.normal(size=n), "c": rng.normal(size=n)}
    logits = np.column_stack([2 * a, np.zeros(n), -2 * a])
    truth = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    model = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    return table, model.argmax(axis=1), model.max(axis=1), labels


@pytest.fixture(scope="module")
def confidence_profile() -> ReferenceProfile:
    table, predicted, confidence, labels = _three_class(np.random.default_rng(3), 8_000, 0.0)
    section = multivariate_section({k: v.tolist() for k, v in table.items()}, scores=confidence.tolist(),
                                   labels=[str(y) for y in labels], predictions=[str(p) for p in predicted],
                                   score_kind="confidence", sample_size=300)
    assert section is not None and section["score_kind"] == "confidence"
    made = build_profile("m", "1", {k: v.tolist() for k, v in table.items()}, label_column=None,
                         prediction_column=None, bins=10, top_k=5, created_at_ms=0, multivariate=section)
    return ReferenceProfile.model_validate_json(made.model_dump_json())


def test_confidence_scores_estimate_multiclass_accuracy_exactly_under_any_split(
    confidence_profile: ReferenceProfile, profile: ReferenceProfile
) -> None:
    assert confidence_profile.multivariate is not None and profile.multivariate is not None
    assert MultivariateReference.from_section(confidence_profile.multivariate).score_kind == "confidence"
    assert "score_kind" not in profile.multivariate  # a positive-score section is as before
    assert MultivariateReference.from_section(profile.multivariate).score_kind == "positive"
    n = 6_000
    table, predicted, confidence, labels = _three_class(np.random.default_rng(4), n, 1.0)  # inputs moved
    features: list[dict[str, Any]] = [{k: float(v[i]) for k, v in table.items()} for i in range(n)]
    scores: list[float | None] = confidence.tolist()
    events = ([i * 20 for i in range(n)], [f"p{i}" for i in range(n)], features, scores)
    whole = _watch(confidence_profile)
    _feed(whole, list(range(n)), n, events)
    shards = [_watch(confidence_profile) for _ in range(3)]
    for s, watch in enumerate(shards):
        _feed(watch, [i for i in range(n) if i % 3 == s], 211 + s, events)  # odd batches
    expected = _windows([whole], 300)
    assert _windows(shards, 300) == expected
    correct = predicted == labels
    assert len(expected) == 2
    for start, (sums, _, estimate) in expected.items():
        assert sums["tp"] == sums["fp"] == sums["fn"] == 0
        assert estimate is not None and np.isnan(estimate.f1) and np.isnan(estimate.roc_auc)
        realized = float(correct[start // 20 : (start + WINDOW_MS) // 20].mean())
        assert abs(estimate.accuracy - realized) < 0.03, (estimate, realized)
        assert estimate.low < estimate.accuracy < estimate.high
    reference = float(np.mean(_three_class(np.random.default_rng(3), 8_000, 0.0)[1]
                              == _three_class(np.random.default_rng(3), 8_000, 0.0)[3]))
    assert abs(float(correct.mean()) - reference) > 0.05  # the shift moved the accuracy


def _mid_rank_scores(ref: np.ndarray, tails: tuple[float, ...], column: np.ndarray) -> np.ndarray:
    """The normal score by its definition, one feature at a time (what the bisection must equal)."""
    from scipy.special import ndtri

    left = np.searchsorted(ref, column, side="left")
    right = np.searchsorted(ref, column, side="right")
    u = ndtri((left + right + 1) / (2.0 * (ref.size + 1)))
    low, high, u_low, u_high, slope_low, slope_high = tails
    u = np.where(column > high, u_high + (column - high) * slope_high, u)
    u = np.where(column < low, u_low - (low - column) * slope_low, u)
    return np.where(np.isnan(column), 0.0, u)


def test_normal_scores_equal_their_definition_bit_for_bit_under_any_batching() -> None:
    from driftline.operators.multivariate import NormalScores

    rng = np.random.default_rng(5)
    # ties (an integer feature, a mostly constant one), different reference sizes (padding)
    reference = {"a": rng.normal(size=3_000), "k": rng.integers(0, 6, 3_000).astype(float),
                 "z": np.r_[np.zeros(40), np.ones(2_960)],
                 "s": np.r_[rng.lognormal(size=700), [np.nan] * 2_300]}
    for points in (1_024, 300):
        scores = NormalScores.fit(reference, list(reference), max_points=points)
        x = np.column_stack([rng.normal(size=5_000) * 4, rng.integers(-2, 9, 5_000).astype(float),
                             rng.integers(-1, 3, 5_000).astype(float), rng.lognormal(size=5_000) * 3])
        for wild in (np.nan, np.inf, -np.inf, 1e300, -1e300):
            x[rng.random(x.shape) < 0.01] = wild
        x[0] = [ref[0] for ref in scores.sorted_reference]  # the reference's extremes
        x[1] = [ref[-1] for ref in scores.sorted_reference]
        expected = np.column_stack([_mid_rank_scores(ref, scores.tails[j], x[:, j])
                                    for j, ref in enumerate(scores.sorted_reference)])
        whole = scores.transform_matrix(x)
        assert whole.tobytes() == expected.tobytes()
        parts = np.vstack([scores.transform_matrix(x[lo : lo + 333]) for lo in range(0, 5_000, 333)])
        assert parts.tobytes() == whole.tobytes()


def test_a_batch_out_of_time_order_across_windows_equals_events_one_at_a_time(
        profile: ReferenceProfile) -> None:
    times, ids, features, scores = _events(3_000, 0.8)
    rng = np.random.default_rng(9)
    times = [t + int(rng.integers(-20_000, 1)) for t in times]  # late within the lateness: out of order
    for i in range(0, 3_000, 7):
        features[i] = {**features[i], "c": int(i % 4)}  # integers take the slow path of the matrix
    events = (times, ids, features, scores)
    batched, single = _watch(profile), _watch(profile)
    reports = _feed(batched, list(range(3_000)), 1_500, events)
    assert reports == _feed(single, list(range(3_000)), 1, events)
    assert len(batched.windows) > 1 and _windows([batched], 300) == _windows([single], 300)


def _float_columns(features: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """What the decoder carries: a float64 column per feature whose every value is a JSON float."""
    names = sorted({name for f in features for name in f})
    columns = {name: [f.get(name) for f in features] for name in names}
    return {name: np.array(values, dtype=np.float64) for name, values in columns.items()
            if all(type(v) is float for v in values)}


def test_float_columns_give_the_state_and_reports_of_the_feature_maps(profile: ReferenceProfile) -> None:
    """Stage 1 hands the decoder's columns over: the same windows, samples and episode reports as
    from each event's features, with a second profile taking effect mid-batch and batches where a
    feature is missing, None, text or an integer (read from the maps)."""
    quiet, rotated = _events(2_000, 0.8), _events(2_000, -0.8)
    times = quiet[0] + [t + 100_000 for t in rotated[0]]
    ids = quiet[1] + [f"r{i}" for i in rotated[1]]
    features, scores = quiet[2] + rotated[2], quiet[3] + rotated[3]
    for i in range(2_500, 4_000, 11):
        features[i] = {**features[i], "c": int(i % 4)}
    newer = profile.model_copy(update={"profile_id": f"{profile.profile_id}-2",
                                       "effective_from_ms": times[2_700]})
    by_maps, by_columns = _watch(profile), _watch(profile)
    assert by_maps.add_profile(newer) and by_columns.add_profile(newer)
    reports: list[list[dict[str, Any]]] = [[], []]
    given: set[tuple[str, ...]] = set()
    for lo in range(0, 4_000, 600):
        part = slice(lo, lo + 600)
        batch = (times[part], ids[part], features[part], scores[part], [WINDOW_MS])
        reports[0] += by_maps.observe("m", "1", *batch)
        columns = _float_columns(features[part])
        given.add(tuple(sorted(columns)))
        reports[1] += by_columns.observe("m", "1", *batch, columns)
    assert given == {("a", "b", "c"), ("a",), ("a", "b")}  # all, some or one from the columns
    assert reports[0] == reports[1] and any(r["kind"] == "opened" for r in reports[0])
    assert sorted(by_maps.windows) == sorted(by_columns.windows)
    assert _windows([by_maps], 300) == _windows([by_columns], 300)
