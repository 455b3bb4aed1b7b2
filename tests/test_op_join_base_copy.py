"""A base taken from a copy (``LabelJoin.base_copy``, ``ShardProcessor.base_copy``) and pickled in
another thread while the join keeps taking events, labels and watermarks: it is the base the
join would have written at the copy, and with the deltas taken after it restores the live state.

Every test runs in memory and with a one-byte memory budget (``tests/conftest.py``); with the
budget the join here uses one-second segments, so expiries delete segments the copy still reads.
"""

from __future__ import annotations

import dataclasses
import pickle
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from driftline.config import JoinSettings, Settings, TopicSettings, WindowSettings
from driftline.operators.join import LabelJoin
from driftline.operators.join.records import _record_key
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline, logged_records
from driftline.pipeline.shard import ShardFactory
from driftline.pipeline.state import Incremental, dump_state
from driftline.schemas.events import LabelEvent, PredictionEvent
from driftline.simulate import Scenario, generate
from driftline.simulate.scenario import LabelDelay, ModelSpec

HORIZON = 5_000


def _content(join: LabelJoin) -> tuple[Any, ...]:
    """What decides the join's future: its records, whole, per id in order, and the rest."""
    records: dict[bytes, list[bytes]] = {}
    for group in join.__getstate__()["groups"]:
        pos = 0
        while pos < len(group):
            length = int.from_bytes(group[pos : pos + 4], "little")
            record = group[pos : pos + length]
            records.setdefault(_record_key(record), []).append(record)
            pos += length
    outside = join._outside_table()
    outside["duplicates"] = [dataclasses.astuple(d) for d in outside["duplicates"]]
    outside["orphans"] = [dataclasses.astuple(o) for o in outside["orphans"]]
    return sorted(records.items()), outside


def _events(rng: random.Random, n: int) -> list[tuple[str, Any]]:
    """Predictions (reused ids too), labels (some early, some never), watermark moves."""
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(n // 3)] + [f"p{i}" for i in range(n // 6)]
    out: list[tuple[str, Any]] = []
    ts = 1_000_000
    for _ in range(n):
        ts += rng.randrange(0, 40)
        pid, roll = rng.choice(ids), rng.random()
        if roll < 0.5:
            out.append(("prediction", PredictionEvent(prediction_id=pid, model_id="m", timestamp=ts,
                                                      features={"x": rng.random(), "c": rng.choice("abc")},
                                                      prediction={"label": "a"})))
        elif roll < 0.9:
            out.append(("label", LabelEvent(prediction_id=pid, timestamp=ts - rng.randrange(0, 3_000),
                                            label=rng.choice("ab"))))
        else:
            marks = (ts - rng.randrange(0, 2_000), ts - rng.randrange(HORIZON // 2, 2 * HORIZON))
            out.append(("advance", marks))
    return out


def _feed(join: LabelJoin, item: tuple[str, Any], log: list[Any]) -> None:
    kind, value = item
    if kind == "prediction":
        log.append(join.on_prediction(value, segment="s"))
    elif kind == "label":
        log.append(join.on_label(value))
    else:
        log.append(join.advance(*value))


class _Pickled(threading.Thread):
    """Pickles an object in a thread of its own (as the runner writes a base beside batches)."""

    def __init__(self, obj: Any) -> None:
        super().__init__()
        self.obj, self.blob = obj, b""

    def run(self) -> None:
        self.blob = pickle.dumps(self.obj, pickle.HIGHEST_PROTOCOL)


@pytest.mark.parametrize("seed", range(4))
def test_a_base_pickled_from_a_copy_while_the_join_goes_on_restores_with_the_deltas_after_it(
    seed: int, join_memory_budget: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    join = LabelJoin(HORIZON, max_pending=400, max_held=200)
    if join_memory_budget:  # a store of one-second segments in place of the fixture's
        join.set_memory_budget(0)
        join.set_memory_budget(join_memory_budget, tmp_path, segment_ms=1_000)
    join.track_changes()
    events = _events(rng, 4000)
    log: list[Any] = []
    base: bytes | None = None
    deltas: list[Any] = []
    dropped_while_pinned = compared = 0
    step = 150
    for start in range(0, len(events), step):
        if start % (5 * step) == 0:  # a base: copied now, pickled while the next events come
            at_copy = pickle.loads(pickle.dumps(_content(join)))  # the live one changes on
            copy = join.base_copy()
            writer = _Pickled(copy)
            writer.start()
            for item in events[start : start + step]:
                _feed(join, item, log)
            if join._store is not None:
                assert copy._pinned is not None
                dropped_while_pinned += len(set(copy._pinned._fds) - set(join._store._fds))
            writer.join()
            copy.release_copy()
            assert _content(pickle.loads(writer.blob)) == at_copy  # the join's base at the copy
            base, deltas = writer.blob, []
        else:
            for item in events[start : start + step]:
                _feed(join, item, log)
        if base is None:
            continue
        deltas.append(pickle.loads(pickle.dumps(join.take_changes())))  # everything since the copy
        restored = pickle.loads(base)
        for changes in deltas:
            restored.apply_changes(changes)
        assert _content(restored) == _content(join)
        compared += 1
    assert compared > 10 and join.pending_count > 0
    if join_memory_budget:
        assert dropped_while_pinned > 0, "no segment the copy read was deleted meanwhile"
        assert join._store is not None and not join._store._kept_open  # closed once released


def test_a_released_copy_lets_the_store_close_the_segments_it_kept(
    join_memory_budget: int, tmp_path: Path
) -> None:
    join = LabelJoin(HORIZON, max_pending=400, max_held=200)
    join.set_memory_budget(0)
    join.set_memory_budget(join_memory_budget or 1, tmp_path, segment_ms=1_000)
    for item in _events(random.Random(5), 600):
        _feed(join, item, [])
    store = join._store
    assert store is not None and store.segment_count > 0
    copy = join.base_copy()
    expected = pickle.loads(pickle.dumps(_content(join)))
    join.advance(10**12, 10**12)  # everything expires and is forgotten: every segment dropped
    assert store.segment_count == 0 and not list(store.path.glob("*.seg")) and store._kept_open
    assert _content(pickle.loads(pickle.dumps(copy))) == expected  # read through the open descriptors
    copy.release_copy()
    assert not store._kept_open


# -- a whole shard: the replay pipeline, two partitions, labels minutes late ----------------------

START = (int(time.time()) // 86_400 - 1) * 86_400_000
BATCH = 400


def _settings() -> Settings:
    return Settings(
        topics=TopicSettings(partitions=2, model_events_partitions=2),
        windows=WindowSettings(sizes_s=[60], allowed_lateness_s=10, metrics_interval_s=60),
        join=JoinSettings(label_horizon_s=300),
    )


@pytest.fixture(scope="module")
def records() -> list[RawRecord]:
    scenario = Scenario(seed=4, start=START, duration_s=900, rate=20,
                        models=[ModelSpec(model_id="m", n_numeric=4, n_categorical=1)],
                        label_delay=LabelDelay(median_s=120, max_s=280))
    return logged_records(generate(scenario), _settings())


def _rows(pipeline: InProcessPipeline) -> dict[str, list[str]]:
    return {table: sorted(map(repr, rows)) for table, rows in pipeline.rows.items()}


def test_shards_restored_from_copied_bases_and_later_deltas_equal_an_uninterrupted_run(
    records: list[RawRecord], join_memory_budget: int
) -> None:
    settings = _settings()
    clean = InProcessPipeline(settings, "r")
    for i in range(0, len(records), BATCH):
        clean.feed(records[i : i + BATCH])

    run = InProcessPipeline(settings, "r")
    for shard in run.shards:
        assert isinstance(shard, Incremental)
        shard.track_changes()
    factory = ShardFactory(settings, "r")
    chains: list[list[bytes]] = [[] for _ in run.shards]
    restores = 0
    for n, i in enumerate(range(0, len(records), BATCH)):
        if n % 6 == 0:  # bases copied before this batch, written after it (no delta meanwhile)
            expected = [dump_state(shard.join) for shard in run.shards]
            copies = [shard.base_copy() for shard in run.shards]
            run.feed(records[i : i + BATCH])
            for p, copy in enumerate(copies):
                chains[p] = [copy.dump()]
                copy.release()
                # the join's part as the live join pickled at the copy (the rest is a copy by
                # pickle: equal strings may come back as one object, so its bytes can differ)
                restored = factory.restore(p, chains[p][0])
                assert dump_state(restored.join) == expected[p]
            continue
        run.feed(records[i : i + BATCH])
        for p, shard in enumerate(run.shards):
            chains[p].append(shard.checkpoint(base=False))
        if n % 4 == 3:  # a crash right after this checkpoint: every shard from its chain
            run.shards = [factory.restore(p, chain[0], chain[1:]) for p, chain in enumerate(chains)]
            for shard in run.shards:
                shard.track_changes()
            restores += 1
    assert restores >= 4 and sum(s.totals["joined"] for s in run.shards) > 0
    assert _rows(run) == _rows(clean)
