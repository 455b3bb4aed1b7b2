"""Stage 1 sends a batch's columnar records of several models bound for one model-events partition
as one :class:`~driftline.pipeline.records.Bundle`; stage 2 takes its records as if each had come
alone, so every table is the same as with a message a record."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.pipeline.local import InProcessPipeline
from driftline.pipeline.model import ModelProcessor
from driftline.pipeline.records import Bundle, Expired, Outcomes, Progress, decode_model_event, encode

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


def test_bundled_records_make_the_same_tables_as_a_message_each(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(topics={"partitions": 2, "model_events_partitions": 3},  # type: ignore[arg-type]
                        windows={"sizes_s": [300], "allowed_lateness_s": 5, "metrics_interval_s": 300},
                        join={"label_horizon_s": 120})
    bundled, sent = _run(settings, monkeypatch)
    # a message a record (worker.bundle_model_events off: what a stage 2 before bundles reads)
    alone, sent_alone = _run(settings.model_copy(update={"worker": settings.worker.model_copy(
        update={"bundle_model_events": False})}), monkeypatch)
    assert sent["bundle"] > 0 and "bundle" not in sent_alone
    assert sum(sent.values()) < sum(sent_alone.values())  # fewer messages for the same records
    assert bundled == alone
    metrics = [r for r in bundled["model_metrics"] if r["row_kind"] == "interval" and r["segment"] == ""]
    assert {r["model_id"] for r in metrics} == {*MODELS, ""}  # "": the orphan labels, which name none
    assert sum(r["n_outcomes"] for r in metrics) == sum(1 for n in range(1_200) if n % 9)
    assert sum(r["n_expired"] for r in metrics) == sum(1 for n in range(1_200) if not n % 9)
    unjoined = Counter(r["event_type"] for r in bundled["unjoined_events"])
    resent = sum(1 for n in range(1_200) if n % 50 == 7)
    assert unjoined == {"prediction": sum(1 for n in range(1_200) if not n % 9) + resent,
                        "label": sum(1 for n in range(1_200) if n % 40 == 3)}


@pytest.mark.parametrize("inner", [
    Progress(0, 5, 5, 5).payload(),  # progress goes to every partition, never in a bundle
    Outcomes(1, "m", "1", ["p"], [""], [5], [1], [1], [None], [0]).payload(),  # another shard's
    Bundle(0, [Expired(0, "m", "1", ["q"], [""], [9], ["horizon"])]).payload(),  # a bundle in a bundle
    {"type": "nonsense", "shard": 0},
    # columns of two lengths: its first row would have been applied as the rows are read
    Outcomes(0, "m", "1", ["p", "r"], ["", ""], [5, 6], [1, 1], [1, 1], [None, None], [0]).payload(),
])
def test_a_bundle_that_does_not_fit_is_dead_lettered_whole(inner: dict[str, Any]) -> None:
    settings = Settings(topics={"partitions": 2, "model_events_partitions": 1})  # type: ignore[arg-type]
    good = Expired(0, "m", "1", ["q"], [""], [9], ["horizon"]).payload()
    value = encode({"type": "bundle", "shard": 0, "records": [good, inner]})
    processor = ModelProcessor(0, settings, "")
    out = processor.process([RawRecord(settings.topics.model_events, 0, 41, 0, None, value)])
    letters = [orjson.loads(m.value) for m in out if m.topic == settings.topics.dead_letters]
    assert len(letters) == 1 and letters[0]["source_offset"] == 41, letters
    assert not processor.outcomes.buckets  # nothing of it applied: the good record waits with it
