"""What a feature monitor holds: reference-derived state shared per process, per-shard state small.

Byte counts here are exact sizes of arrays (deterministic), not timings or allocator figures.
bench/bench_models.py measures the RSS of 1,000 models on one worker.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from driftline.operators.episodes import RING_FIRST, EpisodeMonitor
from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.profile import ReferenceProfile, build_profile
from driftline.operators.sequential import NumericDetector, SequentialDetector

ARL = 25e6


def _profile(seed: int = 0, rows: int = 5_000) -> ReferenceProfile:
    rng = np.random.default_rng(seed)
    shares = [0.4, 0.3, 0.2, 0.1]
    columns: dict[str, Any] = {"x": rng.normal(size=rows), "y": rng.lognormal(size=rows),
                               "c": rng.choice(["a", "b", "c", "d"], size=rows, p=shares).tolist()}
    return build_profile("m", "1", columns, label_column=None, prediction_column=None, bins=10, top_k=20)


def _own_bytes(monitor: EpisodeMonitor) -> int:
    """Bytes of the arrays a monitor holds that no other monitor on its reference holds."""
    tables = monitor._opener._tables
    shared = {id(v) for v in tables.reference.values()}
    shared |= {id(tables.table), id(getattr(tables, "edges", None))}  # the symbol edges: numeric only
    parts = [*monitor.__dict__.values(), *monitor._opener.__dict__.values()]
    return sum(v.nbytes for v in parts if isinstance(v, np.ndarray) and id(_memory_of(v)) not in shared)


def _memory_of(array: np.ndarray) -> object:
    """The array that owns ``array``'s memory (a view, such as the table's transpose the batch step
    reads, holds none of its own)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def _feed(watch: FeatureWatch, rows: list[dict[str, Any]], times: list[int],
          batch: int) -> list[dict[str, Any]]:
    reports = []
    for i in range(0, len(rows), batch):
        ids = [f"p{j}" for j in range(i, min(i + batch, len(rows)))]
        reports += watch.observe("m", "1", times[i : i + batch], ids, rows[i : i + batch])
    return reports


def test_shards_watching_one_profile_share_what_the_reference_determines() -> None:
    profile = _profile()
    shards = [FeatureWatch(1.0, status_grid_ms=1000) for _ in range(2)]
    for watch in shards:
        watch.add_profile(profile)
        watch.observe("m", "1", [0], ["p0"], [{"x": 0.1, "y": 1.0, "c": "a"}])
    banks = [w._models[("m", "1")].bank for w in shards]
    assert banks[0] is not None and banks[1] is not None
    for name in ("x", "y", "c"):
        one, two = banks[0].monitors[name], banks[1].monitors[name]
        assert one is not two and one._opener._tables is two._opener._tables
        assert one._opener._table is two._opener._table and not one._opener._table.flags.writeable
        for attr in one._opener._REFERENCE:
            assert getattr(one._opener, attr) is getattr(two._opener, attr)
        assert one._ring is not two._ring and one._opener._sums is not two._opener._sums


def test_a_monitor_holds_its_cusums_and_recent_symbols_only() -> None:
    profile = _profile()
    numeric = EpisodeMonitor.for_profile(profile.features["x"], arl=ARL)
    categorical = EpisodeMonitor.for_profile(profile.features["c"], arl=ARL)
    det = numeric._opener
    symbols, cusums = det._table.shape
    assert det._table.dtype == np.int32 and symbols == 2 * det._lo.size + 1
    # recent symbols (RING_FIRST slots until more values come, int16 for >256 symbols, uint8
    # below), thresholds and sums, the opener's calibrated thresholds and serial-dependence
    # factors: no learning sample yet
    assert numeric._learned is None and categorical._learned is None
    assert _own_bytes(numeric) == RING_FIRST * 2 + 4 * 8 * cusums
    cat_cusums = len(categorical._opener.components)
    assert _own_bytes(categorical) == RING_FIRST * 1 + 4 * 8 * cat_cusums
    as_reference = list("aaaabbbccd")  # the reference's shares: no episode (no learning sample)
    categorical.update_many(as_reference * 10)
    assert _own_bytes(categorical) == 100 * 1 + 4 * 8 * cat_cusums  # grown to hold 100
    categorical.update_many(as_reference * 300)
    assert _own_bytes(categorical) == 2_000 * 1 + 4 * 8 * cat_cusums  # at most `learning`
    # batches and a few values stepped one by one build the reach only (one int per symbol and
    # reference: a quiet batch waits on its bound), update() of a value also the bounds
    numeric.update_many(np.zeros(10))
    assert det._tables.per_value is not None and len(det._tables.per_value[0]) == symbols
    numeric.update_each(np.zeros(3))
    assert det._tables.bounds is None
    numeric.update(0.0)
    assert det._tables.bounds is not None and len(det._tables.bounds[1]) == det._hi.size


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_ring_grown_as_values_come_reports_as_a_full_one(seed: int) -> None:
    # the same stream (shifts that open, escalate and close episodes, NaN skipped) through one
    # monitor whose ring starts with RING_FIRST slots and one given all `learning` slots up front,
    # in random pieces by update, update_each and update_many: same events, same recent symbols
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=20_000)
    stream = np.concatenate((rng.normal(size=700), rng.normal(1.2, 1.0, size=2_500),
                             rng.normal(size=4_000), rng.normal(-0.8, 1.0, size=3_000)))
    stream[rng.random(stream.size) < 0.01] = np.nan
    grown = EpisodeMonitor.from_reference(reference, arl=1e5, learning=300)
    full = EpisodeMonitor.from_reference(reference, arl=1e5, learning=300)
    full._ring = np.zeros(full.learning, dtype=full._ring.dtype)
    assert grown._ring.size == RING_FIRST
    events: dict[int, list[Any]] = {id(grown): [], id(full): []}
    start = 0
    while start < stream.size:
        size = int(rng.choice([1, 2, 5, 40, 333, 1_000]))
        piece = stream[start : start + size]
        way = int(rng.integers(3)) if size < 50 else 2
        for monitor in (grown, full):
            if way == 0:
                events[id(monitor)] += [e for v in piece.tolist() if (e := monitor.update(v)) is not None]
            elif way == 1:
                events[id(monitor)] += [e for _, e in monitor.update_each(piece)]
            else:
                events[id(monitor)] += monitor.update_many(piece)
        assert grown._recent(np.zeros(0, dtype=np.int64)).tolist() == full._recent(
            np.zeros(0, dtype=np.int64)).tolist()
        start += size
    assert {e.kind for e in events[id(full)]} >= {"opened", "closed"}
    assert events[id(grown)] == events[id(full)] and grown._ring.size == grown.learning


def test_the_learning_sample_exists_while_an_episode_does() -> None:
    rng = np.random.default_rng(1)
    monitor = EpisodeMonitor.from_reference(rng.normal(size=20_000), arl=1e6)
    monitor.update_many(rng.normal(size=5_000))
    assert monitor._learned is None and monitor._sample.size == 0
    opened = monitor.update_many(rng.normal(1.0, 1.0, size=3_000))
    assert opened and monitor._learned is not None and monitor._learned.dtype == np.int16
    closed = monitor.update_many(rng.normal(size=10_000))
    assert closed[-1].kind == "closed" and monitor._learned is None


@pytest.mark.parametrize("cut", [3_000, 6_000, 9_000])  # no episode, learning, watching the regime
def test_a_monitor_pickles_mid_episode_and_from_the_older_layout(cut: int) -> None:
    rng = np.random.default_rng(2)
    stream = np.concatenate((rng.normal(size=5_000), rng.normal(0.6, 1.0, size=8_000)))
    reference = rng.normal(size=20_000)
    whole = EpisodeMonitor.from_reference(reference, arl=1e6)
    events = whole.update_many(stream)
    first = EpisodeMonitor.from_reference(reference, arl=1e6)
    half = first.update_many(stream[:cut])
    state = pickle.loads(pickle.dumps(first))
    # the layout before the sample was allocated on first use: always an array named _sample
    older = dict(first.__dict__)
    learned = older.pop("_learned")
    older["_sample"] = learned if learned is not None else np.zeros(first.learning, dtype=np.int16)
    upgraded = EpisodeMonitor.__new__(EpisodeMonitor)
    upgraded.__setstate__(pickle.loads(pickle.dumps(older)))
    for restored in (state, upgraded):
        assert half + restored.update_many(stream[cut:]) == events
        assert restored.episode == whole.episode


def test_detector_restored_shares_tables_again() -> None:
    rng = np.random.default_rng(3)
    det = NumericDetector.from_reference(rng.normal(size=10_000), arl=1e6)
    det.update_many(rng.normal(size=1_000))
    copy: SequentialDetector = pickle.loads(pickle.dumps(det))
    assert copy._tables is det._tables and copy._S.tolist() == det._S.tolist()
    assert len(pickle.dumps(det)) < det._table.nbytes  # the table is rebuilt (or found) on load


@pytest.mark.parametrize("batch", [1, 3, 7])  # below PER_VALUE_BELOW: value by value
def test_a_few_rows_at_a_time_report_as_one_batch_does(batch: int) -> None:
    rng = np.random.default_rng(4)
    n = 9_000
    x = np.concatenate((rng.normal(size=n // 2), rng.normal(0.8, 1.0, size=n - n // 2)))
    rows = [{"x": float(v), "y": None if i % 50 == 0 else float(w), "c": "abcd"[i % 4] if i % 7 else "z"}
            for i, (v, w) in enumerate(zip(x, rng.lognormal(size=n), strict=True))]
    times = [i * 37 for i in range(n)]
    reports = {}
    for size in (batch, n):
        watch = FeatureWatch(1.0, status_grid_ms=1000)
        watch.add_profile(_profile())
        reports[size] = _feed(watch, rows, times, size)
    assert any(r["kind"] == "opened" for r in reports[n])
    assert sorted(map(repr, reports[batch])) == sorted(map(repr, reports[n]))


def test_update_each_is_update_per_value_with_positions() -> None:
    rng = np.random.default_rng(7)
    ref = rng.normal(size=20_000)
    values = np.concatenate([rng.normal(size=3_000), rng.normal(1.5, 1.0, size=3_000)])
    values[::97] = np.nan  # skipped, as update() skips them
    one, each = EpisodeMonitor.from_reference(ref, arl=1e5), EpisodeMonitor.from_reference(ref, arl=1e5)
    expected = [(i, e) for i, v in enumerate(values.tolist()) if (e := one.update(v)) is not None]
    got = []
    for start in range(0, values.size, 5):  # a few at a time, as FeatureWatch feeds quiet models
        got += [(start + i, e) for i, e in each.update_each(values[start : start + 5])]
    assert expected and got == expected
    assert each.n == one.n and each.episode == one.episode
