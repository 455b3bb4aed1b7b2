"""A model's few events take FeatureWatch's list path, many its numpy path: the reports are the
same however a stream is cut into groups (sizes 1-7 take the list path), with invalid values,
out-of-order times, status grid crossings and a newer profile taking over mid-stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.profile import ReferenceProfile, build_profile

FeatureMaps = Callable[[list[Any], list[Any], list[Any], list[Any]], list[dict[str, Any]]]  # conftest's
N = 3000
SWITCH_MS = 1_400_000  # the second profile's effective_from


def _profiles() -> list[ReferenceProfile]:
    rng = np.random.default_rng(11)
    out = []
    for effective, seed in ((0, 1), (SWITCH_MS, 2)):
        table = {"x": rng.normal(size=4000), "y": rng.exponential(size=4000),
                 "c": rng.choice(["a", "b", "c"], 4000, p=[0.6, 0.3, 0.1]).tolist()}
        out.append(build_profile("m", "1", table, label_column=None, prediction_column=None, bins=10,
                                 top_k=5, created_at_ms=seed, effective_from_ms=effective, source="training"))
    return out


def _stream(feature_maps: FeatureMaps) -> tuple[list[int], list[str], list[dict[str, Any]]]:
    rng = np.random.default_rng(12)
    times = (np.arange(N) * 600 + rng.integers(-2000, 2000, N)).tolist()  # out of order by up to 4 s
    x = rng.normal(np.where(np.arange(N) > N // 3, 1.5, 0.0)).tolist()  # shifts: episodes open
    y = rng.exponential(size=N).tolist()
    c = rng.choice(["a", "b", "c", "zz"], N, p=[0.3, 0.3, 0.1, 0.3]).tolist()
    odd: list[Any] = [None, float("nan"), float("inf"), 1e101, "3.5", True]
    return times, [f"p{i}" for i in range(N)], feature_maps(x, y, c, odd)


def _watch() -> FeatureWatch:
    watch = FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=30_000)
    for profile in _profiles():
        watch.add_profile(profile)
    return watch


def _observe(watch: FeatureWatch, times: list[int], ids: list[str], features: list[dict[str, Any]],
             as_columns: bool | str, split: Callable[..., Any]) -> list[dict[str, Any]]:
    group, columns, values = split(features, as_columns)
    return watch.observe("m", "1", times, ids, group, columns, values)


@pytest.mark.parametrize("as_columns", [False, True, "block"])
@pytest.mark.parametrize("largest", [1, 3, 7, 20])
def test_reports_do_not_depend_on_group_sizes(largest: int, as_columns: bool | str,
                                               watch_feature_maps: FeatureMaps,
                                               shard_feature_split: Callable[..., Any]) -> None:
    times, ids, features = _stream(watch_feature_maps)
    whole = _observe(_watch(), times, ids, features, as_columns, shard_feature_split)
    kinds = {r["kind"] for r in whole}
    assert {"opened", "status", "closed"} <= kinds, kinds  # the stream exercises every report
    rng = np.random.default_rng(largest)
    watch, reports, lo = _watch(), [], 0
    while lo < N:
        hi = min(N, lo + int(rng.integers(1, largest + 1)))
        reports += _observe(watch, times[lo:hi], ids[lo:hi], features[lo:hi], as_columns, shard_feature_split)
        lo = hi
    assert _by_feature(reports) == _by_feature(whole)  # a call's reports are in order per feature


def _by_feature(reports: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        out.setdefault(report["feature"], []).append(report)
    return out
