"""Stage-1 shards restored from a base snapshot plus delta checkpoints give the rows of an
uninterrupted run (the replay pipeline, two partitions, re-routing, labels minutes late)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from driftline.config import JoinSettings, Settings, TopicSettings, WindowSettings
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.pipeline.shard import ShardFactory, ShardProcessor
from driftline.pipeline.state import Incremental, StateRestoreError
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import CovariateDrift, LabelDelay, ModelSpec

START = (int(time.time()) // 86_400 - 1) * 86_400_000
BATCH = 500


def _settings() -> Settings:
    return Settings(
        topics=TopicSettings(partitions=2, model_events_partitions=2),
        windows=WindowSettings(sizes_s=[60], allowed_lateness_s=10, metrics_interval_s=60),
        join=JoinSettings(label_horizon_s=600),
    )


@pytest.fixture(scope="module")
def records() -> list[RawRecord]:
    scenario = Scenario(
        seed=9, start=START, duration_s=900, rate=20,
        models=[ModelSpec(model_id="m", n_numeric=4, n_categorical=1,
                          covariate_drift=[CovariateDrift(feature="x1", at_s=400, magnitude=2.0)])],
        label_delay=LabelDelay(median_s=120, max_s=500),
    )
    return logged_records(generate(scenario), _settings())


def _rows(pipeline: InProcessPipeline) -> dict[str, list[str]]:
    return {table: sorted(map(repr, rows)) for table, rows in pipeline.rows.items()}


def test_restore_from_base_and_deltas_equals_an_uninterrupted_run(records: list[RawRecord]) -> None:
    settings = _settings()
    clean = InProcessPipeline(settings, "r")
    for i in range(0, len(records), BATCH):
        clean.feed(records[i : i + BATCH])

    run = InProcessPipeline(settings, "r")
    for shard in run.shards:
        assert isinstance(shard, Incremental)
        shard.track_changes()
    chains: list[list[bytes]] = [[] for _ in run.shards]
    factory = ShardFactory(settings, "r")
    restores = deltas_applied = pending_at_restores = 0
    for n, i in enumerate(range(0, len(records), BATCH)):
        run.feed(records[i : i + BATCH])
        for p, shard in enumerate(run.shards):  # a base every 7th checkpoint, deltas between
            if n % 7 == 0:
                chains[p] = [shard.checkpoint(base=True)]
            else:
                chains[p].append(shard.checkpoint(base=False))
        if n % 5 == 4:  # a crash right after this checkpoint: restore every shard from its chain
            deltas_applied += sum(len(chain) - 1 for chain in chains)
            run.shards = [factory.restore(p, chain[0], chain[1:]) for p, chain in enumerate(chains)]
            pending_at_restores += sum(s.join.pending_count for s in run.shards)
            for shard in run.shards:
                shard.track_changes()
            restores += 1
    assert restores >= 5 and deltas_applied >= 10 and pending_at_restores > 1000
    assert sum(s.totals["joined"] for s in run.shards) > 0
    assert len(_rows(clean)["outcomes"]) > 1000 and _rows(clean)["feature_windows"]
    assert _rows(run) == _rows(clean)


def test_a_delta_is_much_smaller_than_the_base(records: list[RawRecord]) -> None:
    shard = ShardProcessor(0, _settings(), "r")
    shard.track_changes()
    own = [r for r in records if r.partition == 0]
    shard.process(own[:8000])
    base = shard.checkpoint(base=True)
    shard.process(own[8000:8100])
    delta = shard.checkpoint(base=False)
    assert shard.join.pending_count > 1000
    assert len(delta) * 5 < len(base), (len(delta), len(base))


def test_a_delta_in_place_of_a_base_and_a_base_in_place_of_a_delta_fail_with_one_line(
    records: list[RawRecord],
) -> None:
    shard = ShardProcessor(0, _settings(), "r")
    shard.track_changes()
    base = shard.checkpoint(base=True)
    delta = shard.checkpoint(base=False)
    factory = ShardFactory(_settings(), "r")
    cases: list[tuple[Any, ...]] = [(delta, ()), (base, (base,))]
    for blob, deltas in cases:
        with pytest.raises(StateRestoreError, match=r"stage-1 shard 0: .*delta"):
            factory.restore(0, blob, deltas)
