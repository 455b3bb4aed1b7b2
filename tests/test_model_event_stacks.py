"""Stage 1 sends a batch's columnar records of one type of several models bound for one model-events
partition as one :class:`~driftline.pipeline.records.Stacked` record; stage 2 takes its records as if
each had come alone, so every table is the same as with a message a record."""

from __future__ import annotations

import random
from collections import Counter, namedtuple
from dataclasses import fields
from typing import Any

import orjson
import pytest

from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.pipeline import records
from driftline.pipeline.local import InProcessPipeline
from driftline.pipeline.model import ModelProcessor
from driftline.pipeline.records import (
    Outcomes,
    Stacked,
    decode_model_event,
    encode,
)
from driftline.pipeline.shard import ShardProcessor

START = 1_767_225_600_000
MODELS = [f"model-{i}" for i in range(12)]


def _records(settings: Settings) -> list[list[RawRecord]]:
    """Batches of predictions of 12 models (most labelled 20 s later, some never, one re-sent) and
    labels (a few naming no prediction), both topics on 2 partitions."""
    offsets: Counter[tuple[str, int]] = Counter()

    def record(topic: str, key: str, ts: int, value: dict[str, Any]) -> RawRecord:
        partition = sum(key.encode()) % 2
        offsets[(topic, partition)] += 1
        offset = offsets[(topic, partition)] - 1
        return RawRecord(topic, partition, offset, ts, key.encode(), orjson.dumps(value))

    batches = []
    for step in range(40):
        batch = []
        for i in range(30):
            n = step * 30 + i
            model, ts, pid = MODELS[(n * 7) % len(MODELS)], START + n * 1_000, f"p{n}"
            prediction = {"prediction_id": pid, "model_id": model, "timestamp": ts,
                          "features": {"x": float(n % 17), "c": "ab"[n % 2]},
                          "prediction": {"label": "ab"[n % 3 % 2]}}
            batch.append(record(settings.topics.predictions, pid, ts, prediction))
            if n % 50 == 7:  # the same prediction sent twice: a duplicate
                batch.append(record(settings.topics.predictions, pid, ts, prediction))
            if n % 9:  # one in nine never labelled: expires
                label = {"prediction_id": pid, "label": "ab"[n % 2], "timestamp": ts + 20_000}
                batch.append(record(settings.topics.labels, pid, ts + 20_000, label))
            if n % 40 == 3:  # a label naming no prediction: an orphan
                orphan = {"prediction_id": f"x{n}", "label": "a", "timestamp": ts + 20_000}
                batch.append(record(settings.topics.labels, f"x{n}", ts + 20_000, orphan))
        batches.append(batch)
    return batches


_PROCESS = ModelProcessor.process


def _run(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], Counter[str]]:
    """The tables of the records above, and the types of the messages stage 2 read."""
    sent: Counter[str] = Counter()

    def counted(self: ModelProcessor, batch: Any) -> Any:
        sent.update(decode_model_event(r.value).type for r in batch)
        return _PROCESS(self, batch)

    monkeypatch.setattr(ModelProcessor, "process", counted)
    pipeline = InProcessPipeline(settings)
    for batch in _records(settings):
        pipeline.feed(batch)
    pipeline.finish(START + 40 * 30 * 1_000 + 600_000)
    return dict(pipeline.rows), sent


def test_stacked_records_make_the_same_tables_as_a_message_each(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(topics={"partitions": 2, "model_events_partitions": 3},  # type: ignore[arg-type]
                        windows={"sizes_s": [300], "allowed_lateness_s": 5, "metrics_interval_s": 300},
                        join={"label_horizon_s": 120})
    stacked, sent = _run(settings, monkeypatch)
    # a message a record (worker.bundle_model_events off: what every release's stage 2 reads)
    alone, sent_alone = _run(settings.model_copy(update={"worker": settings.worker.model_copy(
        update={"bundle_model_events": False})}), monkeypatch)
    assert sent["stacked"] > 0 and "stacked" not in sent_alone
    assert sum(sent.values()) < sum(sent_alone.values())  # fewer messages for the same records
    assert stacked == alone
    metrics = [r for r in stacked["model_metrics"] if r["row_kind"] == "interval" and r["segment"] == ""]
    assert {r["model_id"] for r in metrics} == {*MODELS, ""}  # "": the orphan labels, which name none
    assert sum(r["n_outcomes"] for r in metrics) == sum(1 for n in range(1_200) if n % 9)
    assert sum(r["n_expired"] for r in metrics) == sum(1 for n in range(1_200) if not n % 9)
    unjoined = Counter(r["event_type"] for r in stacked["unjoined_events"])
    resent = sum(1 for n in range(1_200) if n % 50 == 7)
    assert unjoined == {"prediction": sum(1 for n in range(1_200) if not n % 9) + resent,
                        "label": sum(1 for n in range(1_200) if n % 40 == 3)}


_Item = namedtuple("_Item", ("model_id", "model_version", *records.OUTCOME_FIELDS))  # type: ignore[misc]


def _per_model(items: list[Any]) -> list[Outcomes]:
    """The records a message a record carries, made here: one a (model, version), in sorted
    order, a model's outcomes in their order."""
    grouped: dict[tuple[str, str], list[Any]] = {}
    for item in items:
        grouped.setdefault((item.model_id, item.model_version), []).append(item)
    return [Outcomes(0, model_id, version,
                     *[[getattr(item, name) for item in held] for name in records.OUTCOME_FIELDS])
            for (model_id, version), held in sorted(grouped.items())]


@pytest.mark.parametrize("seed", range(25))
def test_a_partitions_stacked_records_are_the_per_model_records_in_order(seed: int) -> None:
    """Whatever the models, versions and their order in a batch: each partition's stacked messages
    hold the records a message a record would have sent it, in the same order, and stage 2's
    buckets take them as those records."""
    rng = random.Random(seed)
    models = [f"m{k}" for k in range(rng.randint(1, 40))]
    items = [_Item(rng.choice(models), rng.choice("12"), f"p{i}", rng.choice(["", "region=eu"]),
                   rng.randrange(3 * 300_000), 5, rng.choice([0, 1, None]), None, rng.choice([0, 1]))
             for i in range(rng.randint(1, 300))]
    partitions = rng.randint(1, 5)
    settings = Settings(topics={"model_events_partitions": partitions})  # type: ignore[arg-type]
    shard = ShardProcessor(0, settings, "")
    per_partition: dict[int, list[Any]] = {}
    for message in shard._model_events(items, [], [], []):
        stacked = decode_model_event(message.value)
        assert isinstance(stacked, Stacked)
        per_partition.setdefault(message.partition, []).extend(stacked.records())
    alone: dict[int, list[Any]] = {}
    for record in _per_model(items):
        alone.setdefault(records.model_partition(record.model_id, partitions), []).append(record)
    assert per_partition == alone
    # stage 2 adds a stacked record's runs to the buckets as it adds the per-model records
    stacked_clock, alone_clock = (ModelProcessor(0, settings, "").outcomes for _ in range(2))
    for message in shard._model_events(items, [], [], []):
        stacked_clock.add_stacked_outcomes(decode_model_event(message.value))
    for record in _per_model(items):
        alone_clock.add_outcomes(record)
    assert {model: {start: (b.outcomes, b.rerouted) for start, b in held.items()}
            for model, held in stacked_clock.buckets.items()} == \
        {model: {start: (b.outcomes, b.rerouted) for start, b in held.items()}
         for model, held in alone_clock.buckets.items()}


_GOOD = Stacked(0, "expired", ["m", "n"], ["1", "1"], [1, 1], {
    "prediction_id": ["q", "r"], "segment": ["", ""], "expired_at": [9, 9], "reason": ["horizon"] * 2,
}).payload()


@pytest.mark.parametrize("change", [
    {"rows": [1, 2]},  # more rows than its columns hold
    {"rows": [2, 0]},  # a run of no rows
    {"rows": [1, True]},
    {"model_id": ["m"]},  # fewer models than runs
    {"model_version": ["1", 1]},
    {"record_type": "progress"},  # not a columnar type
    {"record_type": "nonsense"},
    {"columns": {**_GOOD["columns"], "reason": ["horizon"]}},  # a column of another length
    {"columns": {k: v for k, v in _GOOD["columns"].items() if k != "reason"}},  # a column missing
    {"columns": {**_GOOD["columns"], "label_time": [1, 2]}},  # a column of another type's
    {"columns": {**_GOOD["columns"], "expired_at": 9}},  # a column not a list
    {"shard": 7},  # beyond the configured partitions
])
def test_a_stacked_record_that_does_not_fit_is_dead_lettered_whole(change: dict[str, Any]) -> None:
    settings = Settings(topics={"partitions": 2, "model_events_partitions": 1})  # type: ignore[arg-type]
    processor = ModelProcessor(0, settings, "")
    good = encode(_GOOD)
    assert not [m for m in processor.process([RawRecord(settings.topics.model_events, 0, 40, 0, None, good)])
                if m.topic == settings.topics.dead_letters]
    assert sorted(p for bs in processor.outcomes.buckets.values() for b in bs.values() for p in b.expired) \
        == ["q", "r"]
    processor = ModelProcessor(0, settings, "")
    value = encode({**_GOOD, **change})
    out = processor.process([RawRecord(settings.topics.model_events, 0, 41, 0, None, value)])
    letters = [orjson.loads(m.value) for m in out if m.topic == settings.topics.dead_letters]
    assert len(letters) == 1 and letters[0]["source_offset"] == 41, letters
    assert not processor.outcomes.buckets  # no row of it applied


@pytest.mark.parametrize("kind", [records.Outcomes, records.Expired, records.Orphans, records.Duplicates])
def test_a_columnar_records_fields_follow_its_columns(kind: type[records.ColumnarRecord]) -> None:
    """Stage 2 makes a stacked record's per-model records positionally: shard, model, version, then
    the columns in their order, which must be the record's own fields in order."""
    assert tuple(f.name for f in fields(kind)) == ("shard", "model_id", "model_version", *kind.columns)
