"""Stage-2 shards checkpoint incrementally: restored from a base and the deltas after it (bases
written from a copy while batches go on, as the runner writes them), they give the rows and
triggers of an uninterrupted run; a delta carries what the outcome buckets gained, not the
buckets, and names the reference profiles its chain holds."""

from __future__ import annotations

import time
import weakref
from pathlib import Path
from typing import Any, cast

import pytest

from driftline.config import (
    ComparisonSettings,
    JoinSettings,
    MultivariateSettings,
    Settings,
    TopicSettings,
    WindowSettings,
)
from driftline.demo.training import training_profiles
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.pipeline.model import ModelFactory, ModelProcessor
from driftline.pipeline.records import Outcomes
from driftline.pipeline.shard import ShardFactory, ShardProcessor
from driftline.pipeline.state import BaseCopy, Incremental, StateRestoreError, delta_records
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import ConceptDrift, CovariateDrift, LabelDelay, ModelSpec
from driftline.streams.checkpoint import CheckpointStore
from driftline.streams.runner import RestoreCosts, StageRunner

START = (int(time.time()) // 86_400 - 1) * 86_400_000
BATCH = 400


def _settings() -> Settings:
    return Settings(
        topics=TopicSettings(partitions=2, model_events_partitions=2),
        windows=WindowSettings(sizes_s=[60], allowed_lateness_s=10, metrics_interval_s=60),
        join=JoinSettings(label_horizon_s=300),
        comparison=ComparisonSettings(champions={"m": "1"}, min_events=50),
        multivariate=MultivariateSettings(domain_every=10),  # its classifier is most of the CPU otherwise
    )


def _scenario() -> Scenario:
    return Scenario(
        seed=4, start=START, duration_s=1200, rate=15, label_coverage=0.85, malformed_rate=0.01,
        models=[
            ModelSpec(model_id="m", n_numeric=3, n_categorical=1, challenger=True,
                      concept_drift=ConceptDrift(at_s=500, magnitude=0.5)),
            ModelSpec(model_id="n", n_numeric=2, n_categorical=1, traffic_share=0.5,
                      covariate_drift=[CovariateDrift(feature="x1", at_s=600, magnitude=2.0)]),
        ],
        label_delay=LabelDelay(median_s=90, max_s=280),
    )


@pytest.fixture(scope="module")
def records() -> list[RawRecord]:
    events = list(generate(_scenario()))
    resent = [e for i, e in enumerate(events) for _ in range(2 if i % 97 == 0 else 1)]  # exact re-sends
    return logged_records(resent, _settings())


@pytest.fixture(scope="module")
def profiles() -> list[bytes]:
    settings = _settings()
    return [p.model_dump_json().encode() for p in training_profiles(
        _scenario(), settings.drift.bins, settings.drift.top_k, effective_from_ms=0)]


def _outputs(pipeline: InProcessPipeline) -> dict[str, list[str]]:
    out = {table: sorted(map(repr, rows)) for table, rows in pipeline.rows.items()}
    out["triggers"] = sorted(map(repr, pipeline.triggers))
    return out


def test_restore_from_base_and_deltas_equals_an_uninterrupted_run(
    records: list[RawRecord], profiles: list[bytes]
) -> None:
    settings = _settings()
    clean = InProcessPipeline(settings, "r", profiles)
    for i in range(0, len(records), BATCH):
        clean.feed(records[i : i + BATCH])

    run = InProcessPipeline(settings, "r", profiles)
    for model in run.models:
        assert isinstance(model, Incremental)
        model.track_changes()
    chains: list[list[bytes]] = [[] for _ in run.models]
    copies: list[BaseCopy | None] = [None for _ in run.models]
    factory = ModelFactory(settings, "r")
    restores = deltas_applied = held_at_restores = delta_entries = 0
    for n, i in enumerate(range(0, len(records), BATCH)):
        run.feed(records[i : i + BATCH])
        for q, model in enumerate(run.models):
            copy = copies[q]
            if copy is not None:  # a base copied a batch ago, pickled while that batch went on
                chains[q] = [copy.dump()]
                copy.release()
                copies[q] = None
            if n % 6 == 0:
                copies[q] = model.base_copy()  # the next delta follows the copy
            elif n % 6 == 3:
                chains[q] = [model.checkpoint(base=True)]
            else:
                delta = model.checkpoint(base=False)
                delta_entries += delta_records(delta) or 0
                chains[q].append(delta)
        if n % 5 == 4:  # a crash right after this checkpoint: restore every model shard from its chain
            for q, copy in enumerate(copies):  # (a runner restores the previous chain until a base is
                if copy is not None:            # acknowledged; here the copy's base is written first)
                    chains[q] = [copy.dump()]
                    copies[q] = None
            deltas_applied += sum(len(chain) - 1 for chain in chains)
            run.models = [factory.restore(q, chain[0], chain[1:]) for q, chain in enumerate(chains)]
            held_at_restores += sum(len(b.outcomes) for m in run.models
                                    for by_start in m.outcomes.buckets.values() for b in by_start.values())
            for model in run.models:
                model.track_changes()
            restores += 1
    assert restores >= 5 and deltas_applied >= 10 and held_at_restores > 300 and delta_entries > 1000
    outputs = _outputs(clean)
    assert len(outputs["model_metrics"]) > 100 and outputs["unjoined_events"]
    assert outputs["version_comparison"] and outputs["triggers"] and outputs["drift_episodes"]
    assert _outputs(run) == outputs


def _holding(n: int, interval_ms: int = 60_000) -> ModelProcessor:
    model = ModelProcessor(0, _settings(), "r")
    model.track_changes()
    start = START // interval_ms * interval_ms
    ids = [f"p{i:07d}" for i in range(n)]
    times = [start + i % interval_ms for i in range(n)]
    model.outcomes.add_outcomes(Outcomes(0, "m", "1", ids, [""] * n, times, [1_000] * n,
                                         [i % 2 for i in range(n)], [None] * n, [0] * n))
    return model


def test_a_delta_carries_what_the_buckets_gained() -> None:
    model = _holding(20_000)
    assert {g.name: g.value for g in model.gauges()}["open_outcomes"] == 20_000  # what deltas grow with
    base = model.checkpoint(base=True)
    assert model.changed_records() == 0
    more = _holding(20_100)
    model.outcomes.buckets = more.outcomes.buckets  # another dict of buckets: every bucket whole
    model.track_changes()
    bucket = next(iter(model.outcomes.buckets[("m", "1")].values()))
    bucket.expired["gone"] = "region=eu"
    bucket.given_up_at["gone"] = START
    bucket.rerouted.add("p0000001")
    assert model.changed_records() == 3
    delta = model.checkpoint(base=False)
    assert delta_records(delta) == 3 and len(delta) * 20 < len(base), (len(delta), len(base))
    restored = ModelFactory(_settings(), "r").restore(0, model.snapshot(), [])
    assert restored.outcomes.buckets == model.outcomes.buckets


def test_a_closed_bucket_is_freed_with_its_interval_not_kept_for_the_next_delta() -> None:
    model = _holding(1_000)
    base = model.checkpoint(base=True)  # marks the open bucket
    (bucket,) = model.outcomes.buckets[("m", "1")].values()
    held = weakref.ref(bucket)
    del bucket
    model.outcomes.progress = [START + 10 * 60_000] * len(model.outcomes.progress)
    rows, _ = model.outcomes.close()
    assert rows["model_metrics"] and held() is None  # its 1,000 outcomes went with the close
    restored = ModelFactory(_settings(), "r").restore(0, base, [model.checkpoint(base=False)])
    assert not any(restored.outcomes.buckets.values())  # the delta says it closed


def test_a_base_copy_keeps_the_buckets_as_they_were_while_batches_go_on() -> None:
    model = _holding(1_000)
    before = ModelFactory(_settings(), "r").restore(0, model.snapshot()).outcomes.buckets
    copy = model.base_copy()
    bucket = next(iter(model.outcomes.buckets[("m", "1")].values()))
    bucket.outcomes["late"] = ("", START, 1, 1, None)  # a batch goes on while the copy is pickled
    bucket.expired["gone"] = "region=eu"
    bucket.rerouted.add("p0000001")
    model.outcomes.buckets[("m", "1")].clear()  # and closes the interval
    copied = ModelFactory(_settings(), "r").restore(0, copy.dump()).outcomes.buckets
    assert copied == before and sum(len(b.outcomes) for b in copied[("m", "1")].values()) == 1_000


def test_a_delta_names_the_profiles_its_chain_holds(profiles: list[bytes]) -> None:
    model = ModelProcessor(0, _settings(), "r")
    model.track_changes()
    base = model.checkpoint(base=True)  # before any profile
    model.process([RawRecord(_settings().topics.profiles, 0, i, 0, None, p) for i, p in enumerate(profiles)])
    carrying = model.checkpoint(base=False)
    naming = model.checkpoint(base=False)
    assert len(naming) * 5 < len(carrying), (len(naming), len(carrying))
    factory = ModelFactory(_settings(), "r")
    restored = factory.restore(0, base, [carrying, naming])
    assert restored.profiles.by_model.keys() == model.profiles.by_model.keys()
    with pytest.raises(StateRestoreError, match="stage-2 shard 0: a delta names a shared object"):
        factory.restore(0, base, [naming])  # the delta that carried them lost


def test_a_stage_2_runner_prices_a_changed_entry_at_stage_2_s_cost(tmp_path: Path) -> None:
    """Before any restore measured it, the restore bound prices a stage-2 delta's entry at what
    applying one costs (~1 us), not at a stage-1 join record's (8 us)."""
    def made(factory: Any) -> StageRunner:
        return StageRunner(Settings(home=tmp_path), "s", "g", ["p"], factory, producer=cast(Any, None),
                           checkpoints=cast(CheckpointStore, None))

    model, shard = made(ModelFactory(_settings())), made(ShardFactory(_settings()))
    assert model.restore_costs.change_s == ModelFactory.restore_change_s < shard.restore_costs.change_s / 2
    assert shard.restore_costs == RestoreCosts()


def test_a_stage_1_delta_or_a_base_in_a_delta_s_place_fails_with_one_line() -> None:
    model = ModelProcessor(0, _settings(), "r")
    model.track_changes()
    base = model.checkpoint(base=True)
    shard = ShardProcessor(0, _settings(), "r")
    shard.track_changes()
    shard.checkpoint(base=True)
    cases: list[tuple[Any, str]] = [(shard.checkpoint(base=False), "not a ModelDelta"), (base, "not a delta")]
    for blob, why in cases:
        with pytest.raises(StateRestoreError, match=f"stage-2 shard 0: .*{why}"):
            ModelFactory(_settings(), "r").restore(0, base, [blob])
