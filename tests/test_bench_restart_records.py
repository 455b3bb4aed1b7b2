"""bench_restart's cheap producer: its records are the simulator's predictions (ids, event times,
everything but which features they carry), and its join settings keep every one pending."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import orjson
import pytest


@pytest.fixture
def bench_restart(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("bench_restart")


def test_reused_features_keep_the_simulators_ids_and_event_times(bench_restart: ModuleType,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    common = importlib.import_module("common")
    settings = common.bench_settings("localhost:1", "restart")
    monkeypatch.setattr(bench_restart, "POOL", 7)  # 120 records: the pool reused 17 times
    made = list(bench_restart.pending_records(120, settings, seed=1, start_ms=common.START_MS))
    drawn = list(bench_restart.generate(
        bench_restart.scenario(120, seed=1, start_ms=common.START_MS, labelled=False).resolved()))
    assert len(made) == len(drawn) == 120
    for i, (record, event) in enumerate(zip(made, drawn, strict=True)):
        ours, theirs = orjson.loads(record.value), orjson.loads(event.value)
        assert record.topic == settings.topics.predictions
        assert (record.key, record.timestamp_ms) == (event.key, event.timestamp_ms), i
        pooled = orjson.loads(drawn[i % 7].value)
        # everything the simulator wrote, with the pooled prediction's features and score
        assert ours == theirs | {k: pooled[k] for k in pooled if k not in ("prediction_id", "timestamp")}, i
    assert len({r.key for r in made}) == 120


def test_every_prediction_stays_pending(bench_restart: ModuleType, tmp_path: Path) -> None:
    """The join's default bound (2M a shard) would evict at 10M over 4 shards."""
    default = bench_restart.Settings().join.max_pending
    assert bench_restart.join_section(10_000, 0.0, tmp_path) == {"max_pending": default}
    section = bench_restart.join_section(10_000_000, 64.0, tmp_path)
    assert section == {"max_pending": 10_000_000, "memory_budget_mb": 64.0, "spill_dir": str(tmp_path)}


def test_a_run_below_10m_has_no_verdict(bench_restart: ModuleType) -> None:
    """Issue 19's targets are for 10M pending: a 2M run that restarts in 52 s has not met them."""
    assert bench_restart.at_target_scale(2_000_000, 52.2, 60.0) is None
    assert bench_restart.at_target_scale(10_000_000, 52.2, 60.0) is True
    assert bench_restart.at_target_scale(10_000_000, 61.0, 60.0) is False
