"""Stage-1 deltas name the reference profiles their chain holds instead of pickling them again
(``ChainShared``): shards with sequential and multivariate detectors, restored from a base and
deltas, a profile arriving mid-chain, give the rows of an uninterrupted run."""

from __future__ import annotations

import copy
import io
import pickle
import time

import pytest

from driftline.config import JoinSettings, Settings, TopicSettings, WindowSettings
from driftline.demo.training import training_profiles
from driftline.operators.model_watch import _ModelProfiles
from driftline.operators.validate import RawRecord
from driftline.operators.window_stats import WindowAccumulator, WindowBuffer
from driftline.pipeline import state
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.pipeline.shard import _ITEMS, ACCUMULATE_CHUNK, ShardDelta, ShardFactory, _at
from driftline.pipeline.state import ItemChanges, load_delta
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import CovariateDrift, LabelDelay, ModelSpec
from driftline.streams.runner import BYTES_PER_CHANGE, chain_records

START = (int(time.time()) // 86_400 - 1) * 86_400_000
BATCH = 400
LATE_PROFILE_AT = 3  # the batch before which model b's profile arrives


def _settings() -> Settings:
    return Settings(
        topics=TopicSettings(partitions=2, model_events_partitions=2),
        windows=WindowSettings(sizes_s=[60], allowed_lateness_s=10, metrics_interval_s=60),
        join=JoinSettings(label_horizon_s=600),
    )


def _scenario() -> Scenario:
    drift = [CovariateDrift(feature="x1", at_s=300, magnitude=2.0)]
    return Scenario(
        seed=4, start=START, duration_s=600, rate=16,
        models=[ModelSpec(model_id=m, n_numeric=3, n_categorical=1, covariate_drift=drift) for m in "ab"],
        label_delay=LabelDelay(median_s=60, max_s=300),
    )


@pytest.fixture(scope="module")
def inputs() -> tuple[list[RawRecord], dict[str, bytes]]:
    settings = _settings()
    scenario = _scenario()
    profiles = {p.model_id: p.model_dump_json().encode()
                for p in training_profiles(scenario, settings.drift.bins, settings.drift.top_k, 0)}
    return logged_records(generate(scenario), settings), profiles


def _batches(records: list[RawRecord], late_profile: bytes, partitions: int) -> list[list[RawRecord]]:
    """The input in batches; model b's profile reaches every shard with batch LATE_PROFILE_AT."""
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    topic = _settings().topics.profiles
    batches[LATE_PROFILE_AT] = [RawRecord(topic, p, 1, 0, None, late_profile) for p in range(partitions)] + \
        batches[LATE_PROFILE_AT]
    return batches


def _rows(pipeline: InProcessPipeline) -> dict[str, list[str]]:
    return {table: sorted(map(repr, rows)) for table, rows in pipeline.rows.items()}


def test_restore_with_profiles_named_in_deltas_equals_an_uninterrupted_run(
    inputs: tuple[list[RawRecord], dict[str, bytes]],
) -> None:
    records, profiles = inputs
    settings = _settings()
    batches = _batches(records, profiles["b"], settings.topics.partitions)
    clean = InProcessPipeline(settings, "r", profiles=[profiles["a"]])
    for batch in batches:
        clean.feed(batch)

    run = InProcessPipeline(settings, "r", profiles=[profiles["a"]])
    for shard in run.shards:
        shard.track_changes()
    factory = ShardFactory(settings, "r")
    chains: list[list[bytes]] = [[] for _ in run.shards]
    carried: list[tuple[int, int]] = []  # (batch, shard) of each delta carrying a profile whole
    restores = 0
    for n, batch in enumerate(batches):
        run.feed(batch)
        for p, shard in enumerate(run.shards):  # a base every 6th checkpoint, deltas between
            if n % 6 == 0:
                chains[p] = [shard.checkpoint(base=True)]
                continue
            chains[p].append(shard.checkpoint(base=False))
            delta = load_delta(chains[p][-1], "test")
            assert isinstance(delta, ShardDelta) and isinstance(delta.rest, bytes)
            if delta.profiles:
                carried.append((n, p))
        if n % 4 == 2:  # a crash right after this checkpoint: every shard from its chain
            run.shards = [factory.restore(p, chain[0], chain[1:]) for p, chain in enumerate(chains)]
            for shard in run.shards:
                shard.track_changes()
            restores += 1
    # b's profile (and the multivariate watch's copy of it) travels once, in the delta after it came
    assert carried == [(LATE_PROFILE_AT, 0), (LATE_PROFILE_AT, 1)]
    assert restores >= 3
    watched = {m for s in run.shards if s.watch is not None for m, _ in s.watch.models}
    assert watched == {"a", "b"}
    rows = _rows(clean)
    assert rows["outcomes"] and rows["feature_windows"]
    assert any(table for table in rows if "episode" in table), sorted(rows)
    assert _rows(run) == rows


def test_a_delta_after_a_restore_names_the_base_profiles(
    inputs: tuple[list[RawRecord], dict[str, bytes]],
) -> None:
    records, profiles = inputs
    settings = _settings()
    pipeline = InProcessPipeline(settings, "r", profiles=[profiles["a"], profiles["b"]])
    shard = pipeline.shards[0]
    shard.track_changes()
    own = [r for r in records if r.partition == 0]
    shard.process(own[:1000])
    base = shard.checkpoint(base=True)
    shard.process(own[1000:1100])
    first = shard.checkpoint(base=False)
    restored = ShardFactory(settings, "r").restore(0, base, [first])
    restored.track_changes()
    for live in (shard, restored):
        live.process(own[1100:1200])
    second = restored.checkpoint(base=False)
    assert load_delta(first, "test").profiles == b"" and load_delta(second, "test").profiles == b""
    # ...and the chain restores to a shard that goes on as the live one does
    again = ShardFactory(settings, "r").restore(0, base, [first, second])
    following = own[1200:3000]
    out = again.process(following)
    assert out and out == shard.process(following)


@pytest.mark.parametrize("codec", ["lz4", "zlib"])
def test_the_restore_estimate_counts_a_chains_changed_records_whatever_the_codec(
    inputs: tuple[list[RawRecord], dict[str, bytes]], codec: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The runner's restore estimate (``chain_records``) is the records the shard counted into
    each delta, not a guess from the delta's bytes, which the codec changes."""
    if codec == "lz4":
        pytest.importorskip("lz4.frame")
    else:
        monkeypatch.setattr(state, "_lz4_frame", lambda: None)
    records, profiles = inputs
    settings = _settings()
    shard = InProcessPipeline(settings, "r", profiles=[profiles["a"], profiles["b"]]).shards[0]
    shard.track_changes()
    own = [r for r in records if r.partition == 0]
    shard.process(own[:500])
    base = shard.checkpoint(base=True)
    deltas, counted = [], 0
    for start in range(500, 2500, 500):
        shard.process(own[start : start + 500])
        counted += shard.changed_records()
        deltas.append(shard.checkpoint(base=False))
    assert counted > 0 and [state.delta_records(d) is not None for d in deltas] == [True] * 4
    assert chain_records(deltas) == counted
    assert chain_records(deltas) != sum(len(d) // BYTES_PER_CHANGE for d in deltas)  # what it guessed
    ShardFactory(settings, "r").restore(0, base, deltas)  # and they restore


def test_deltas_carry_only_the_models_that_moved_and_restore_to_an_uninterrupted_run() -> None:
    """Many models under Zipf traffic, a checkpoint every small batch: most deltas carry the
    windows and detectors of some models only (``ItemChanges``), and say which windows closed; a
    shard restored from a base and such deltas (again and again) emits what an uninterrupted one
    does, and its per-model state is the same."""
    settings = _settings()
    drift = [CovariateDrift(feature="x1", at_s=100, magnitude=2.0)]
    models = [ModelSpec(model_id=f"m{k:02d}", traffic_share=1 / (k + 1), n_numeric=3, n_categorical=1,
                        covariate_drift=drift if k < 3 else []) for k in range(12)]
    scenario = Scenario(seed=7, start=START, duration_s=240, rate=16, models=models,
                        label_delay=LabelDelay(median_s=30, max_s=120))
    profiles = [p.model_dump_json().encode()
                for p in training_profiles(scenario, settings.drift.bins, settings.drift.top_k, 0)]
    records = logged_records(generate(scenario), settings)
    batches = [records[i : i + 60] for i in range(0, len(records), 60)]
    clean = InProcessPipeline(settings, "r", profiles=profiles)
    run = InProcessPipeline(settings, "r", profiles=profiles)
    for shard in run.shards:
        shard.track_changes()
    factory = ShardFactory(settings, "r")
    chains: list[list[bytes]] = [[] for _ in run.shards]
    partial, closed = 0, 0  # deltas carrying some models' windows only; deltas naming closed ones
    for n, batch in enumerate(batches):
        clean.feed(batch)
        run.feed(batch)
        for p, shard in enumerate(run.shards):
            if n % 10 == 0:
                chains[p] = [shard.checkpoint(base=True)]
                continue
            chains[p].append(shard.checkpoint(base=False))
            delta = load_delta(chains[p][-1], "test")
            rest = shard._shared_profiles.loads(delta.rest, b"")
            assert isinstance(rest["open"], ItemChanges)  # never the whole dict
            partial += len(rest["open"]) < len(shard.open)
            closed += bool(rest["open"].removed)
        if n % 7 == 3:
            run.shards = [factory.restore(p, chain[0], chain[1:]) for p, chain in enumerate(chains)]
            for shard in run.shards:
                shard.track_changes()
    assert partial > len(batches) and closed >= 4
    rows = _rows(clean)
    assert rows["feature_windows"] and any(table for table in rows if "episode" in table), sorted(rows)
    assert _rows(run) == rows
    for live, restored in zip(clean.shards, run.shards, strict=True):  # item by item (the memo differs)
        for path, _ in _ITEMS:
            # the state as a checkpoint reads it (staged events buffered); windows open in the order
            # their events were buffered, which staging changes and nothing reads (closes sort them)
            mine, theirs = _at(restored.__getstate__(), path), _at(live.__getstate__(), path)
            assert sorted(mine, key=repr) == sorted(theirs, key=repr), path
            assert [_values(mine[k]) for k in sorted(mine, key=repr)] == \
                [_values(theirs[k]) for k in sorted(theirs, key=repr)], path


def _values(item: object) -> bytes:
    """An item's values: a multivariate model's profiles by id (a set in a profile pickles in
    whatever order its strings hash to)."""
    if isinstance(item, _ModelProfiles):
        return _pickled((item.active, [p.profile_id for p in item.profiles]))
    if isinstance(item, WindowBuffer):  # its events, however the batches split them into parts
        events = WindowAccumulator()
        copy.deepcopy(item).drain(events, ACCUMULATE_CHUNK, final=True)
        return _pickled(events.to_partial())
    return _pickled(item)


def _pickled(state: object) -> bytes:
    """``state``'s values, pickled without a memo (which objects are one object may differ)."""
    out = io.BytesIO()
    pickler = pickle.Pickler(out, pickle.HIGHEST_PROTOCOL)
    pickler.fast = True
    pickler.dump(state)
    return out.getvalue()
