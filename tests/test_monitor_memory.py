"""What a model's monitors hold per shard stays small (issue 19: 1,000 models on one worker): a
copied bank's arrays own their data (not views on a protocol-5 pickle's buffers, ~4x the bytes),
a restored detector's too, and the detectors on one reference share its labels, columns and thresholds."""

from __future__ import annotations

import pickle
import sys

import numpy as np

from driftline.operators import feature_watch
from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.profile import build_profile
from driftline.operators.sequential import CategoricalDetector, NumericDetector

MONITOR_ARRAYS = ("_opener_h", "_opener_inflation", "_ring")
DETECTOR_ARRAYS = ("_sums",)


def _profile() -> object:
    rng = np.random.default_rng(3)
    table = {"x": rng.normal(size=3000), "c": rng.choice(["a", "b", "c"], 3000, p=[0.6, 0.3, 0.1]).tolist()}
    return build_profile("m", "1", table, label_column=None, prediction_column=None, bins=10, top_k=5,
                         created_at_ms=0)


def test_a_copied_bank_owns_its_arrays() -> None:
    feature_watch._FRESH_BANKS.clear()
    profile = _profile()
    first = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)._bank(profile, 0)
    copied = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=1000)._bank(profile, 0)
    restored = pickle.loads(pickle.dumps(first.monitors, protocol=5))  # as a checkpoint holds them
    assert copied.monitors.keys() == first.monitors.keys() == restored.keys()
    for name, monitor in [*copied.monitors.items(), *restored.items()]:
        for attr in MONITOR_ARRAYS:
            assert getattr(monitor, attr).base is None, (name, attr)
        assert sys.getsizeof(monitor.__dict__) <= sys.getsizeof(first.monitors[name].__dict__)
        for attr in DETECTOR_ARRAYS:
            assert getattr(monitor._opener, attr).base is None, (name, attr)
        original = first.monitors[name]._opener
        assert monitor._opener._labels is original._labels  # one list per reference
        assert monitor._opener._columns is original._columns  # one view per reference
        assert monitor._opener._h is original._h  # the thresholds too, read-only
        assert not original._h.flags.writeable


def test_a_detector_restored_from_protocol_5_owns_its_arrays_and_runs_the_same() -> None:
    rng = np.random.default_rng(4)
    detectors = [NumericDetector.from_reference(rng.normal(size=4000), arl=1e4),
                 CategoricalDetector.from_reference(rng.choice(["a", "b", "c"], 4000).tolist(), arl=1e4)]
    streams = [np.concatenate([rng.normal(size=500), rng.normal(0.7, 1.0, 1500)]),
               rng.choice(["a", "b", "c", "c"], 2000).tolist()]
    for detector, stream in zip(detectors, streams, strict=True):
        detector.update_many(stream[:300])
        restored = pickle.loads(pickle.dumps(detector, protocol=5))
        for attr in DETECTOR_ARRAYS:
            assert getattr(restored, attr).base is None, attr
        assert restored._labels is detector._labels and restored._h is detector._h
        # its attributes set one by one: a dict sharing the class's keys, as the built one's
        assert sys.getsizeof(restored.__dict__) <= sys.getsizeof(detector.__dict__)
        want = [(a.index, a.component) for a in detector.update_many(stream[300:])]
        got = [(a.index, a.component) for a in restored.update_many(stream[300:])]
        assert want and got == want
        assert np.array_equal(restored._S, detector._S)
