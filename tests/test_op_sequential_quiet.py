"""count_quiet: a bank's batch counted in one step where no alarm is among it, the state per-detector
calls leave (sequential), and a monitor's ring grown as the calls its caller would have made
(episodes)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from harness import load_module

from driftline.operators import episodes, sequential
from driftline.operators.episodes import EpisodeMonitor
from driftline.operators.sequential import CategoricalDetector, NumericDetector, SequentialDetector


def _clone(x: Any) -> Any:
    return pickle.loads(pickle.dumps(x))


# a state as plain values (arrays by dtype, shape and bytes): the held-events tests' helper
_plain = load_module(Path(__file__).with_name("test_feature_watch_held.py"), "held_tests_quiet")._plain


def _bank() -> tuple[list[SequentialDetector], list[Any]]:
    """Detectors (one with int64 increments) and each one's stream: quiet, then shifted, then quiet."""
    rng = np.random.default_rng(81)
    dets: list[SequentialDetector] = [NumericDetector.from_reference(rng.normal(size=4_000), arl=1e4)
                                      for _ in range(3)]
    wide = _clone(dets[2])
    wide._columns = np.ascontiguousarray(wide._columns, dtype=np.int64)  # a table beyond int32's range
    dets.append(wide)
    dets.append(CategoricalDetector.from_counts(["a", "b", "c"], [500, 300, 150, 50], arl=1e4))
    streams: list[Any] = []
    for j, det in enumerate(dets):
        if det.kind == "numeric":
            shift = np.zeros(30_000)
            shift[5_000 + 5_000 * j : 6_000 + 5_000 * j] = 1.0
            streams.append(det._symbols(rng.normal(shift)))
        else:
            p = [[0.5, 0.3, 0.15, 0.05]] * 20 + [[0.2, 0.3, 0.2, 0.3]] * 2 + [[0.5, 0.3, 0.15, 0.05]] * 28
            streams.append(det._symbols(np.concatenate([rng.choice(["a", "b", "c", "d"], 600, p=q)
                                                        for q in p]).tolist()))
    return dets, streams


def test_a_bank_counts_only_batches_without_an_alarm_and_leaves_the_calls_state() -> None:
    dets, streams = _bank()
    reference = [_clone(det) for det in dets]
    rng = np.random.default_rng(82)
    at = [0] * len(dets)
    counted = refused_with_alarm = refused_quiet = 0
    for step in range(400):
        # most batches of one size for every detector, some of another size for one of them
        size = int(rng.choice([1, 7, 40, 120, 300, 700, 2_500]))
        sizes = [size] * len(dets)
        sizes[step % len(dets)] = int(rng.integers(1, 900)) if step % 3 == 0 else size
        parts = [stream[a : a + s] for stream, a, s in zip(streams, at, sizes, strict=True)]
        for det, part in zip(dets, parts, strict=True):
            if step % 5 == 0 and part.size:  # a value waiting in the per-value path's queue first
                det.update_symbol(int(part[0]))
        for ref, part in zip(reference, parts, strict=True):
            if step % 5 == 0 and part.size:
                ref.update_symbol(int(part[0]))
        parts = [part[1:] if step % 5 == 0 else part for part in parts]
        done = sequential.count_quiet(dets, parts)
        for det, ref, part, ok in zip(dets, reference, parts, done, strict=True):
            alarms = ref.run_symbols(part)[0]
            if ok:
                assert not alarms
                counted += 1
            else:
                assert det.run_symbols(part)[0] == alarms
                refused_with_alarm += bool(alarms)
                refused_quiet += not alarms and part.size > 0
            state = (det.n, det.alarms_total, det._sums.tolist(), det._slack)
            assert state == (ref.n, ref.alarms_total, ref._sums.tolist(), ref._slack)
        at = [a + s for a, s in zip(at, sizes, strict=True)]
        if min(a >= stream.size for a, stream in zip(at, streams, strict=True)):
            break
    assert counted >= 200 and refused_with_alarm >= 10, (counted, refused_with_alarm)
    assert refused_quiet <= counted // 10  # the bound turns few quiet batches away


def _monitors() -> list[EpisodeMonitor]:
    rng = np.random.default_rng(83)
    return [EpisodeMonitor(NumericDetector.from_reference(rng.normal(size=4_000), arl=1e6), min_effect=0.1),
            EpisodeMonitor(CategoricalDetector.from_counts(["a", "b"], [600, 390, 10], arl=1e6),
                           min_effect=0.01)]


def test_a_monitor_counted_at_once_is_the_monitor_counted_in_parts() -> None:
    """The ring of recent symbols grows with how values are counted (doubling one by one, to the
    count in a batch): count_quiet grows it as the parts it is told of would have."""
    rng = np.random.default_rng(84)
    for parts in ([(3, True), (50, False), (5, True), (400, False)], [(7, True), (9, False)],
                  [(1_500, False), (6, True), (900, False)], [(40, False), (30, True)],
                  [(33, False), (33, False)], None):
        sizes = [size for size, _ in parts] if parts is not None else [120]
        categories = rng.choice(["a", "b", "z"], sum(sizes), p=[0.6, 0.39, 0.01]).tolist()
        values = [rng.normal(size=sum(sizes)), categories]
        together, apart = _monitors(), _monitors()
        done = episodes.count_quiet(together, [m.symbols(v) for m, v in zip(together, values, strict=True)],
                                    [parts, parts])
        assert done == [True, True]
        for monitor, xs in zip(apart, values, strict=True):
            lo = 0
            for size, one_by_one in parts or [(120, False)]:
                assert not (monitor.update_each(xs[lo : lo + size]) if one_by_one
                            else monitor.update_many(xs[lo : lo + size]))
                lo += size
        assert [_plain(m) for m in together] == [_plain(m) for m in apart]


def test_a_monitor_in_an_episode_is_left_to_update_many() -> None:
    monitor, other = _monitors()
    rng = np.random.default_rng(85)
    assert monitor.update_many(rng.normal(2.0, 1.0, size=2_000))  # opened: learning its regime
    before = _plain(monitor)
    values = rng.normal(size=300)
    quiet = rng.choice(["a", "b", "z"], 300, p=[0.6, 0.39, 0.01]).tolist()
    assert episodes.count_quiet([monitor, other], [monitor.symbols(values), other.symbols(quiet)]) \
        == [False, True]
    assert _plain(monitor) == before
