"""A numeric feature's detector reads the values the window statistics read as numbers.

numpy converts "3.5" and True to floats; the windows count such values as invalid (not numbers),
so the sequential detector must not see them either: a stream of numeric strings and bools on a
numeric feature opens no episode, whatever their values, and the numbers beside them are watched.
"""

from __future__ import annotations

import numpy as np

from driftline.operators.episodes import EpisodeMonitor
from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.profile import build_profile
from driftline.operators.sequential import feature_arl


def _watch() -> FeatureWatch:
    rng = np.random.default_rng(3)
    profile = build_profile("m", "1", {"x": rng.normal(size=5000), "y": rng.normal(size=5000)},
                            label_column=None, prediction_column=None, bins=10, top_k=5, created_at_ms=0)
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)
    watch.add_profile(profile)
    return watch


def _opened(reports: list[dict[str, object]]) -> list[str]:
    return [str(r["feature"]) for r in reports if r["kind"] == "opened"]


def test_strings_and_bools_on_a_numeric_feature_are_not_numbers() -> None:
    rng = np.random.default_rng(4)
    n = 4000
    # x arrives as far-off numeric strings and bools (numpy would read 9.0 and 1.0), y as numbers
    # shifted by 1 sd: only y may open an episode, in one batch and in batches of one alike
    x = [("9.0" if i % 3 else True) for i in range(n)]
    y = rng.normal(1.0, 1.0, n).tolist()
    features = [{"x": a, "y": b} for a, b in zip(x, y, strict=True)]
    times = list(range(n))
    ids = [f"p{i}" for i in range(n)]
    whole = _watch().observe("m", "1", times, ids, features)
    assert set(_opened(whole)) == {"y"}, _opened(whole)
    one_by_one = _watch()
    reports: list[dict[str, object]] = []
    for i in range(n):
        reports += one_by_one.observe("m", "1", times[i:i + 1], ids[i:i + 1], features[i:i + 1])
    assert reports == whole


def test_a_mixed_column_keeps_its_numbers() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    shifted = rng.normal(1.0, 1.0, n).tolist()
    # x shifts by 1 sd; every tenth value is a string, which must not hide the numbers around it
    features = [{"x": ("bad" if i % 10 == 0 else v), "y": 0.0 + rng.normal()} for i, v in enumerate(shifted)]
    reports = _watch().observe("m", "1", list(range(n)), [f"p{i}" for i in range(n)], features)
    assert "x" in _opened(reports)


def test_a_categorical_batch_of_strings_counts_as_values_one_by_one() -> None:
    """A batch whose categorical values are all strings is mapped in one call (each string its own
    key); the events are those of the monitor fed value by value, unseen categories included."""
    rng = np.random.default_rng(6)
    table = {"c": rng.choice(["a", "b", "c", "d"], 5000, p=[0.4, 0.3, 0.2, 0.1]).tolist()}
    profile = build_profile("m", "1", table, label_column=None, prediction_column=None, bins=10, top_k=5,
                            created_at_ms=0)
    n = 6000
    values = rng.choice(["a", "b", "c", "d"], n, p=[0.4, 0.3, 0.2, 0.1]).tolist()
    values[2000:] = rng.choice(["a", "b", "zz", "true"], n - 2000, p=[0.2, 0.2, 0.5, 0.1]).tolist()
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=10**9)
    watch.add_profile(profile)
    reports = watch.observe("m", "1", list(range(n)), [f"p{i}" for i in range(n)], [{"c": v} for v in values])
    reference = EpisodeMonitor.for_profile(profile.features["c"], arl=feature_arl(watch.model_arl, 1),
                                           min_effect=watch.min_effect_sd, learning=watch.learning)
    events = [e for v in values if (e := reference.update(v)) is not None]
    assert events and [(r["kind"], r["count"], r["magnitude"]) for r in reports] == [
        (e.kind, e.index + 1, e.magnitude) for e in events]


def test_values_beyond_the_bound_either_side_are_not_watched_in_any_group_size() -> None:
    """A few events (the list path) and many (the array path) drop the same values: NaN, either
    infinity and numbers beyond MAX_ABS_VALUE below as above, so the monitors count the same
    values and report the same (a far-off value either side, if watched, would open an episode)."""
    rng = np.random.default_rng(7)
    n = 3000
    x = rng.normal(size=n)
    x[rng.choice(n, 300, replace=False)] = rng.choice([np.nan, np.inf, -np.inf, 1e101, -1e101, -2e300], 300)
    features = [{"x": v, "y": float(rng.normal())} for v in x.tolist()]
    times, ids = list(range(n)), [f"p{i}" for i in range(n)]
    whole_watch = _watch()
    whole = whole_watch.observe("m", "1", times, ids, features)
    assert "x" not in _opened(whole)
    few, reports, lo = _watch(), [], 0
    while lo < n:
        hi = min(n, lo + int(rng.integers(1, 8)))
        reports += few.observe("m", "1", times[lo:hi], ids[lo:hi], features[lo:hi])
        lo = hi
    assert reports == whole
    banks = [next(iter(w._models.values())).bank for w in (whole_watch, few)]
    assert [[m.n for m in b.monitors.values()] for b in banks if b is not None] == [[n - 300, n]] * 2
