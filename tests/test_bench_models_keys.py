"""bench_models' ``--key-by model_id``: each model's predictions on one partition, labels keyed by
their prediction id as before, and the pipeline's joins and windows the same as keyed by id."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from types import ModuleType

import orjson
import pytest

from driftline.config import Settings
from driftline.pipeline.local import InProcessPipeline


@pytest.fixture
def bench_models(bench_module: Callable[[str], ModuleType]) -> ModuleType:
    return bench_module("bench_models")


def _tables(settings: Settings, profiles: list, records: list) -> dict[str, Counter]:
    pipeline = InProcessPipeline(settings, profiles=[p.model_dump_json().encode() for p in profiles])
    batch = 500
    for i in range(0, len(records), batch):
        pipeline.feed(records[i: i + batch])
    # keyed by model, 3 models leave a partition without predictions: its watermark would hold every
    # window open, so the input's end closes them (as a worker's idle-partition timer would)
    pipeline.finish(max(r.timestamp_ms for r in records) + 7_200_000)
    outcomes = Counter((r["model_id"], r["prediction_id"], r["label"]) for r in pipeline.rows["outcomes"])
    counts = Counter((r["model_id"], r["window_start"], r["window_size_s"], r["feature"], r["count"])
                     for r in pipeline.rows["feature_windows"])
    return {"outcomes": outcomes, "feature_windows": counts}


def test_predictions_keyed_by_model_share_a_partition_and_join_alike(bench_models: ModuleType) -> None:
    from common import bench_settings

    settings = bench_settings("127.0.0.1:9", "bmk")
    specs = bench_models.model_specs(3)
    by_id, warm = bench_models.traffic(specs, 600, settings)
    by_model, warm_keyed = bench_models.traffic(specs, 600, settings, key_by="model_id")
    assert warm_keyed == warm and len(by_model) == len(by_id)
    partitions: dict[str, dict[str, set[int]]] = {"id": defaultdict(set), "model": defaultdict(set)}
    for name, records in (("id", by_id), ("model", by_model)):
        for r in records:
            if r.topic == settings.topics.predictions:
                partitions[name][orjson.loads(r.value)["model_id"]].add(r.partition)
    assert all(len(p) == 1 for p in partitions["model"].values())
    assert any(len(p) > 1 for p in partitions["id"].values())
    labels = [r for r in by_id if r.topic == settings.topics.labels]
    assert labels == [r for r in by_model if r.topic == settings.topics.labels]
    profiles = bench_models.profiles_of(specs, 300, settings)
    keyed_by_id = _tables(settings, profiles, by_id)
    keyed_by_model = _tables(settings, profiles, by_model)
    assert sum(keyed_by_id["outcomes"].values()) > 500 and len(keyed_by_id["feature_windows"]) > 50
    assert keyed_by_model == keyed_by_id
