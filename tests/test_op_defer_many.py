"""update_each_quiet / defer_each_many: many monitors' few values bounded in one numpy pass (a flush
of many quiet models' held events), against each monitor's own update_each, value for value: the
same events and the same state (differential, on random streams with drift that opens and closes
episodes, skipped and out-of-range values, categorical features); and in a FeatureWatch, a stream
fed with the pass and without it gives the same reports and monitor states."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import load_module

from driftline.operators import feature_watch
from driftline.operators.episodes import EpisodeMonitor, update_each_quiet
from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.sequential import NumericDetector, defer_each_many

_held = load_module(Path(__file__).with_name("test_feature_watch_held.py"), "held_tests_defer_many")
_plain = _held._plain


def _monitors(rng: np.random.Generator) -> list[EpisodeMonitor]:
    """Numeric monitors (two sharing a reference, as shards do) and categorical ones."""
    numeric = [EpisodeMonitor.from_reference(rng.normal(size=3_000), arl=2e4, learning=200) for _ in range(4)]
    numeric.append(pickle.loads(pickle.dumps(numeric[0])))
    categorical = [EpisodeMonitor.from_categories(rng.choice(["a", "b", "c"], 2_000, p=[0.6, 0.3, 0.1]),
                                                  arl=2e4, learning=200) for _ in range(2)]
    return numeric + categorical


def _values(monitor: EpisodeMonitor, rng: np.random.Generator, count: int, shifted: bool) -> list[Any]:
    if monitor.kind == "numeric":
        xs = rng.normal(1.5 if shifted else 0.0, 1.0, size=count).tolist()
        odd = rng.random(count)
        return [float("nan") if o < 0.03 else float("inf") if o < 0.05 else 1e6 if o < 0.06 else x
                for x, o in zip(xs, odd, strict=True)]
    p = [0.2, 0.3, 0.5] if shifted else [0.6, 0.3, 0.1]
    return rng.choice(["a", "b", "c", "zz"], count, p=[*p[:2], p[2] - 0.05, 0.05]).tolist()


def test_monitors_counted_at_once_are_the_monitors_counted_value_by_value() -> None:
    rng = np.random.default_rng(19)
    new = _monitors(rng)
    old = [pickle.loads(pickle.dumps(m)) for m in new]
    kinds: set[str] = set()
    counted_at_once = by_value = 0
    for step in range(1_500):
        shifted = [(step // 150 + j) % 4 == 0 for j in range(len(new))]  # drift on, then off again
        values = [_values(m, rng, int(rng.choice([0, 1, 2, 3, 7, 23])), s)
                  for m, s in zip(new, shifted, strict=True)]
        expected = [m.update_each(xs) for m, xs in zip(old, values, strict=True)]
        done = update_each_quiet(new, values)
        got = [[] if ok else m.update_each(xs) for m, xs, ok in zip(new, values, done, strict=True)]
        assert got == expected, step
        counted_at_once += sum(done)
        by_value += done.count(False)
        kinds |= {event.kind for events in expected for _, event in events}
        if step % 50 == 0:
            assert [_plain(m) for m in new] == [_plain(m) for m in old], step
    assert [_plain(m) for m in new] == [_plain(m) for m in old]
    assert {"opened", "closed"} <= kinds, kinds
    assert counted_at_once > 1_500 and by_value > 1_500, (counted_at_once, by_value)  # both ways taken


@pytest.mark.parametrize("seed", [1, 2])
def test_a_watch_with_the_pass_reports_and_leaves_what_one_without_it_does(
        seed: int, monkeypatch: pytest.MonkeyPatch, watch_feature_maps: Any,
        shard_feature_split: Any) -> None:
    """The held-events test's stream (Zipf over models, shifts, odd values, profiles switching
    mid-stream, grid lines among held runs) through a watch counting with update_each_quiet and
    one whose monitors count every value by update_each (as before the pass)."""
    models, times, ids, features = _held._stream(watch_feature_maps)
    profiles = [_held._profile(m, 10 + m, 0) for m in range(_held.MODELS)]
    profiles += [_held._profile(m, 20 + m, _held.SWITCH_MS) for m in (2, 3)]
    watches = {quiet: FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=_held.GRID_MS // 4,
                                   batch_events=64) for quiet in (True, False)}
    for watch in watches.values():
        for profile in profiles:
            watch.add_profile(profile)
    got: dict[bool, list[Any]] = {quiet: [] for quiet in watches}
    passed = [0]

    def counted_none(monitors: list[EpisodeMonitor], values: list[Any]) -> list[bool]:
        return [False] * len(monitors)

    def counting(monitors: list[EpisodeMonitor], values: list[Any]) -> list[bool]:
        done = update_each_quiet(monitors, values)
        passed[0] += sum(done)
        return done

    rng = np.random.default_rng(seed)
    lo = 0
    while lo < _held.EVENTS:
        hi = min(_held.EVENTS, lo + int(rng.choice([1, 2, 5, 9, 30])))
        by_model: dict[int, list[int]] = {}
        for i in range(lo, hi):
            by_model.setdefault(models[i], []).append(i)
        as_columns = bool(rng.integers(2))
        for quiet, watch in watches.items():
            monkeypatch.setattr(feature_watch, "update_each_quiet", counting if quiet else counted_none)
            for m, rows in sorted(by_model.items()):
                group, columns, values = shard_feature_split([features[i] for i in rows], as_columns)
                got[quiet] += watch.observe(f"m{m}", "1", [times[i] for i in rows], [ids[i] for i in rows],
                                            group, columns, values)
            got[quiet] += [r for reports in watch.flush_due(times[hi - 1] - _held.LATENESS_MS).values()
                           for r in reports]
        lo = hi
    for quiet, watch in watches.items():
        monkeypatch.setattr(feature_watch, "update_each_quiet", counting if quiet else counted_none)
        got[quiet] += [r for reports in watch.flush().values() for r in reports]
    assert passed[0] > 1_000
    assert {"opened", "status", "closed"} <= {r["kind"] for r in got[False]}
    assert got[True] == got[False]
    assert _held._state(watches[True]) == _held._state(watches[False])


def test_a_detector_stops_where_defer_each_stops_at_the_bounds_edge() -> None:
    """A group's rise reaching its slack exactly, or the values reaching the due point exactly:
    defer_each_many counts what defer_each counts (all of them, or nothing changed), both sides."""
    rng = np.random.default_rng(7)
    det = NumericDetector.from_reference(rng.normal(size=3_000), arl=1e5)
    det.update(0.0)  # the first per-value step builds the bound per group
    assert det._lanes is not None
    cases = 0
    for _ in range(400):
        syms = det._symbol_list(rng.normal(0.5, 1.5, size=int(rng.integers(1, 24))).tolist())[0]
        rises = [int(r) for r in rng.integers(0, 2**24, size=4)]
        a, b = pickle.loads(pickle.dumps(det)), pickle.loads(pickle.dumps(det))
        for d in (a, b):  # a state defer_each can be in: the rises below the slacks
            d._rises, d._slacks = list(rises), [2**40] * 4
        path, at = list(rises), int(rng.integers(len(syms)))
        for sym in syms[: at + 1]:  # the rises defer_each steps through
            path = [max(0, r + int(s)) for r, s in zip(path, a._lanes.table[sym], strict=True)]
        lane = int(rng.integers(4))
        edge = [path[lane], path[lane] + 1][int(rng.integers(2))]  # reached exactly, or missed by one
        if edge <= rises[lane]:
            continue
        due = rng.random() < 0.3  # or the due point at the same value
        for d in (a, b):
            d._slacks[lane] = edge
            if due:
                d._due = d.n + 1 + at
        counted = a.defer_each(list(syms))
        done = defer_each_many([b], [list(syms)])[0]
        assert done == (counted == len(syms))
        if done:
            assert (a.n, a._rises, a._pending) == (b.n, b._rises, b._pending)
        else:
            assert (b.n, b._rises) == (det.n, rises)
        cases += 1
    assert cases > 200
