"""The feature watch's columns of each model of a batch of many (``_GroupedColumns``: the batch's
columns gathered once for all models) are what picking the model's rows alone gives."""

from __future__ import annotations

import numpy as np

from driftline.operators.columns import FeatureColumns
from driftline.pipeline import shard as shard_module


def test_grouped_columns_are_each_groups_picked_columns() -> None:
    n = 9
    floats = [np.arange(n, dtype=np.float64) * 1.5, np.linspace(-1.0, 1.0, n)]
    features = FeatureColumns(("x", "c", "y"), [floats[0].tolist(), list("abcabcabc"), floats[1].tolist()],
                              [floats[0], None, floats[1]])
    groups = {("m1", "1"): [0, 4, 5, 8], ("m0", "1"): [1, 2], ("m0", "2"): [3, 6, 7]}
    grouped = shard_module._GroupedColumns(features, groups)
    for key in [("m0", "2"), ("m1", "1"), ("m0", "1")]:  # in any order
        rows = groups[key]
        (got_floats, got_others) = grouped.of(key)
        want_floats, want_others = shard_module._split_columns(
            shard_module._picked_features(features, rows, False))
        assert list(got_floats) == list(want_floats) == ["x", "y"]
        for name, column in want_floats.items():
            assert got_floats[name].dtype == np.float64
            assert got_floats[name].tolist() == column.tolist()
            assert got_floats[name].base is None or got_floats[name].base.shape[-1] == len(rows)  # its own
        assert got_others == want_others == {"c": [features.columns[1][i] for i in rows]}
    assert shard_module._GroupedColumns(None, groups).of(("m1", "1")) == ({}, {})


def test_a_batch_of_floats_only_or_no_floats() -> None:
    groups = {("a", "1"): [1], ("b", "1"): [0, 2]}
    only = FeatureColumns(("x",), [[1.0, 2.0, 3.0]], [np.array([1.0, 2.0, 3.0])])
    floats, others = shard_module._GroupedColumns(only, groups).of(("b", "1"))
    assert (floats["x"].tolist(), others) == ([1.0, 3.0], {})
    none = FeatureColumns(("c",), [["p", "q", "r"]], [None])
    assert shard_module._GroupedColumns(none, groups).of(("b", "1")) == ({}, {"c": ["p", "r"]})
