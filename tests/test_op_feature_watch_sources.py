"""FeatureWatch reads a feature's values from where the caller has them: a stage-1 shard hands it
the batch's value rows (FeatureRows, no map per event), float64 columns of its all-float features
and value lists of the others; a test hands it a dict per event. Either way the watch must count
the same values, so every report of every call is the same, in the same order: many models under
Zipf traffic in random batches, events held and fed later, numbers arriving as ints, None and
odd values beside floats, a feature the events carry and the profile lacks, and one the profile
has and no event carries (bench_models' ``__score__``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftline.operators.feature_rows import FeatureRows
from driftline.operators.feature_watch import FeatureWatch
from driftline.operators.profile import ReferenceProfile, build_profile

MODELS = 5
EVENTS = 6000
GRID_MS = 20_000
STEP_MS = 100
LAYOUT = ("x", "e", "n", "c")  # as events carry them: "e" is in no profile, profiles' "s" in no event


def _profile(model: int) -> ReferenceProfile:
    rng = np.random.default_rng(40 + model)
    table = {"x": rng.normal(size=3000), "n": rng.integers(0, 20, 3000).astype(float),
             "s": rng.normal(size=3000), "c": rng.choice(["a", "b", "c"], 3000, p=[0.6, 0.3, 0.1]).tolist()}
    return build_profile(f"m{model}", "1", table, label_column=None, prediction_column=None, bins=10, top_k=5,
                         created_at_ms=0, source="training")


def _stream(seed: int) -> tuple[list[int], list[int], list[str], list[tuple[Any, ...]]]:
    """(model, time, id, values in LAYOUT order) per event: x shifts on even models halfway, n
    comes as ints (a float now and then, None missing, odd values a numeric feature must skip)."""
    rng = np.random.default_rng(seed)
    share = np.arange(1, MODELS + 1) ** -1.1
    models = rng.choice(MODELS, size=EVENTS, p=share / share.sum()).tolist()
    times = (np.arange(EVENTS) * STEP_MS + rng.integers(0, 1000, EVENTS)).tolist()
    shifted = (np.arange(EVENTS) > EVENTS // 2) & (np.asarray(models) % 2 == 0)
    x = rng.normal(np.where(shifted, 2.0, 0.0)).tolist()
    n: list[Any] = rng.integers(0, 20, EVENTS).tolist()
    c = rng.choice(["a", "b", "c", "zz"], EVENTS, p=[0.5, 0.3, 0.1, 0.1]).tolist()
    odd: list[Any] = [None, 2.5, None, "3.5", True, 2**1100, float("nan")]
    for i in range(0, EVENTS, 29):
        n[i] = odd[i % len(odd)]
    for i in range(3, EVENTS, 97):
        x[i] = [None, float("inf"), "x"][i % 3]
    rows = [(x[i], i % 7, n[i], c[i]) for i in range(EVENTS)]
    return models, times, [f"p{i}" for i in range(EVENTS)], rows


def _as_shard(rows: list[tuple[Any, ...]], members: list[int], give: int
              ) -> tuple[FeatureRows, dict[str, Any] | None, dict[str, list[Any]] | None]:
    """A group as a shard hands it over: value rows, and (``give`` 1, 2) the batch's all-float
    columns, (2) the others' values."""
    batch = FeatureRows(LAYOUT, rows)
    group = batch.take(members)
    if not give:
        return group, None, None
    columns: dict[str, Any] = {}
    values: dict[str, list[Any]] = {}
    for at, name in enumerate(LAYOUT):
        column = [rows[i][at] for i in members]
        if all(type(v) is float for v in column):
            columns[name] = np.asarray(column, dtype=np.float64)
        else:
            values[name] = column
    return group, columns, values if give == 2 else None


@pytest.mark.parametrize("seed", [1, 2])
def test_every_report_is_the_same_whatever_the_values_come_as(seed: int) -> None:
    models, times, ids, rows = _stream(seed)
    watches = [FeatureWatch(false_alarms_per_million=1.0, status_grid_ms=GRID_MS, batch_events=24)
               for _ in range(2)]  # 0: a dict per event; 1: as a shard hands them over
    for watch in watches:
        for m in range(MODELS):
            watch.add_profile(_profile(m))
    rng = np.random.default_rng(seed)
    got: list[list[Any]] = [[], []]
    lo, watermark = 0, -(2**62)
    while lo < EVENTS:
        hi = min(EVENTS, lo + int(rng.choice([1, 4, 30, 200])))
        batch = rows[lo:hi]
        by_model: dict[int, list[int]] = {}
        for i in range(lo, hi):
            by_model.setdefault(models[i], []).append(i - lo)
            watermark = max(watermark, times[i] - 1000)
        give = int(rng.integers(3))
        for m, members in sorted(by_model.items()):
            at = [lo + i for i in members]
            args = ([times[i] for i in at], [ids[i] for i in at])
            got[0].append(watches[0].observe(f"m{m}", "1", *args, [dict(zip(LAYOUT, rows[i], strict=True))
                                                                   for i in at]))
            got[1].append(watches[1].observe(f"m{m}", "1", *args, *_as_shard(batch, members, give)))
        for k, watch in enumerate(watches):
            got[k].append(watch.flush_due(watermark))
        lo = hi
    for k, watch in enumerate(watches):
        got[k].append(watch.flush())
    reports = [r for call in got[0] for r in (call if isinstance(call, list) else
                                              [x for fed in call.values() for x in fed])]
    assert {"opened", "status"} <= {r["kind"] for r in reports}
    assert "x" in {r["feature"] for r in reports if r["kind"] == "opened"}
    assert got[1] == got[0]
    assert [w.monitor_count() for w in watches] == [MODELS * 4] * 2
