"""Every shard of a worker builds a model's bank of monitors; after the first, a bank is a copy of the
process's fresh one. A copy watches exactly as a bank built from the profile does."""

from __future__ import annotations

import numpy as np

from driftline.operators import feature_watch
from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.profile import build_profile


def _profile(seed: int) -> object:
    rng = np.random.default_rng(seed)
    table = {"x": rng.normal(size=3000), "y": rng.exponential(size=3000),
             "c": rng.choice(["a", "b", "c"], 3000, p=[0.6, 0.3, 0.1]).tolist()}
    return build_profile("m", "1", table, label_column=None, prediction_column=None, bins=10, top_k=5,
                         created_at_ms=0)


def _stream(n: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(9)
    x = np.concatenate([rng.normal(size=n // 2), rng.normal(0.8, 1.0, n - n // 2)])
    c = rng.choice(["a", "b", "c", "d"], n, p=[0.3, 0.3, 0.2, 0.2])
    return [{"x": float(a), "y": float(b), "c": str(k)} for a, b, k in zip(x, rng.exponential(size=n), c,
                                                                            strict=True)]


def _reports(watch: FeatureWatch, events: list[dict[str, object]]) -> list[dict[str, object]]:
    n = len(events)
    return watch.observe("m", "1", list(range(n)), [f"p{i}" for i in range(n)], events)


def test_a_copied_bank_watches_as_a_built_one() -> None:
    feature_watch._FRESH_BANKS.clear()
    events = _stream(6000)
    built = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)
    built.add_profile(_profile(1))
    want = _reports(built, events)
    assert any(r["kind"] == "opened" for r in want)
    assert len(feature_watch._FRESH_BANKS) == 1
    copied = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)
    copied.add_profile(_profile(1).model_copy(deep=True))  # another shard's parse of the same profile
    got = _reports(copied, events)
    assert got == want
    banks = [watch._models[("m", "1")].bank for watch in (copied, built)]
    assert [(name, repr(m), m.episode) for b in banks[:1] if b for name, m in b.monitors.items()] == \
        [(name, repr(m), m.episode) for b in banks[1:] if b for name, m in b.monitors.items()]


def test_another_profile_or_setting_gets_its_own_bank() -> None:
    feature_watch._FRESH_BANKS.clear()
    for seed, per_million, learning in [(1, 1.0, 2000), (2, 1.0, 2000), (1, 10.0, 2000), (1, 1.0, 500)]:
        watch = FeatureWatch(false_alarms_per_million=per_million, status_grid_ms=1000, learning=learning)
        watch.add_profile(_profile(seed))
        _reports(watch, _stream(50))
    assert len(feature_watch._FRESH_BANKS) == 4
    # a copy of a profile with other features (as the multivariate watch's: the same profile id and,
    # here, the same names) does not get the kept bank
    profile = _profile(1)
    other = profile.model_copy(update={"features": {"x": profile.features["y"], "y": profile.features["x"],
                                                    "c": profile.features["c"]}})
    events = _stream(3000)
    swapped = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)
    swapped.add_profile(other)
    got = _reports(swapped, events)  # the original profile's bank is kept
    feature_watch._FRESH_BANKS.clear()
    fresh = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)
    fresh.add_profile(other)
    assert got == _reports(fresh, events)
    original = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)
    original.add_profile(profile)
    assert got != _reports(original, events)


def test_the_multivariate_watchs_copy_does_not_displace_the_shared_profile() -> None:
    """The multivariate watch registers a copy of each profile (same id, its reconstruction feature
    only): every shard's parse of the profile is still held once."""
    profile = _profile(3)
    parses = [profile.model_copy(deep=True) for _ in range(2)]
    shared = feature_watch.shared_profile(parses[0])
    reconstruction = profile.model_copy(update={"features": {"__reconstruction__": profile.features["x"]}})
    assert feature_watch.shared_profile(reconstruction) is reconstruction
    assert feature_watch.shared_profile(parses[1]) is shared


def test_a_banks_numeric_features_are_kept_out_of_its_checkpoint() -> None:
    """The bank's numeric feature names, asked for at every held or fed group, are derived once and
    not pickled: a checkpoint's bank is the same bytes whether they were asked for or not, and a
    restored bank derives them again."""
    import pickle

    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)
    watch.add_profile(_profile(3))
    _reports(watch, _stream(50))
    bank = watch._models[("m", "1")].bank
    assert bank is not None
    untouched = pickle.dumps(bank)
    assert bank.numeric == ["x", "y"]
    assert pickle.dumps(bank) == untouched
    restored = pickle.loads(untouched)
    assert "numeric" not in vars(restored)
    assert restored.numeric == ["x", "y"]


def test_a_watch_watches_once_a_model_has_a_profile() -> None:
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)
    assert not watch.watches_any() and watch.models == []
    watch.add_profile(_profile(1))
    assert watch.watches_any() and watch.models == [("m", "1")]
