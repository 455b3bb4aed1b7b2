"""Payload digests across their change from BLAKE2b-64 to CRC-32 and length: a record kept under the
old digest (restored from an older checkpoint) and re-sent afterwards is still an exact re-send,
counted and not dead-lettered; other content under its id is still a conflicting duplicate."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Sequence

import orjson
import pytest

from driftline.config import Settings
from driftline.operators.join import LabelJoin, legacy_resend, payload_digest
from driftline.operators.validate import RawRecord
from driftline.pipeline import shard as shard_module
from driftline.pipeline.shard import ShardFactory, ShardProcessor
from driftline.schemas.events import LabelEvent, PredictionEvent

T0 = 1_767_225_600_000


def _blake2b(payload: bytes) -> bytes:
    """payload_digest as it was before CRC-32 and length."""
    return hashlib.blake2b(payload, digest_size=8).digest()


def test_a_blake2b_digest_is_told_from_the_current_one() -> None:
    value = b'{"prediction_id":"p","label":1}'
    assert legacy_resend(_blake2b(value), value)
    assert not legacy_resend(_blake2b(value), value + b" ")
    assert not legacy_resend(payload_digest(value), value)


def test_the_join_s_own_event_digests_stay_exact_across_the_change() -> None:
    """The join digests an event's JSON when given no digest: one kept as BLAKE2b-64 (as restored
    from an older checkpoint) matches a re-sent event; a changed event conflicts."""
    prediction = PredictionEvent(prediction_id="p", model_id="m", timestamp=1_000, prediction=0.5)
    label = LabelEvent(prediction_id="p", label=1, timestamp=1_500)
    old = LabelJoin(horizon_ms=60_000, max_pending=10, max_held=10)
    old.on_prediction(prediction, segment="", digest=_blake2b(prediction.model_dump_json().encode()))
    old.on_label(label, digest=_blake2b(label.model_dump_json().encode()))
    join = pickle.loads(pickle.dumps(old))  # as a checkpoint restores it
    join.on_prediction(prediction, segment="")
    join.on_prediction(PredictionEvent(prediction_id="p", model_id="m", timestamp=1_000, prediction=0.75),
                       segment="")
    join.on_label(label)
    join.on_label(LabelEvent(prediction_id="p", label=0, timestamp=1_500))
    assert [(d.kind, d.exact) for d in join.take_duplicates()] == [
        ("prediction", True), ("prediction", False), ("label", True), ("label", False)]


def _record(topic: str, offset: int, doc: dict[str, object]) -> RawRecord:
    return RawRecord(topic, 0, offset, T0, str(doc["prediction_id"]).encode(), orjson.dumps(doc))


@pytest.mark.parametrize("columnar", [False, True])
def test_a_shard_restored_with_blake2b_digests_counts_resends_and_letters_conflicts(
    monkeypatch: pytest.MonkeyPatch, columnar: bool
) -> None:
    settings = Settings(topics={"partitions": 1}, join={"label_horizon_s": 120})
    topics = settings.topics
    pred_doc = {"schema_version": 1, "prediction_id": "p-1", "model_id": "m", "model_version": "1",
                "timestamp": T0, "features": {"x": 1.5}, "prediction": {"label": 1, "score": 0.9}}
    label_doc = {"schema_version": 1, "prediction_id": "p-1", "label": 1, "timestamp": T0 + 1_000,
                 "model_id": "m"}
    pred, label = _record(topics.predictions, 0, pred_doc), _record(topics.labels, 0, label_doc)
    shard = ShardProcessor(0, settings)
    shard.columnar = columnar
    with monkeypatch.context() as before:  # the digests the revision before the change kept
        before.setattr(shard_module, "payload_digests", lambda values: list(map(_blake2b, values)))
        before.setattr(shard_module, "payload_digest", _blake2b)
        shard.process([pred])
        shard.process([label])
    assert shard.totals["joined"] == 1
    restored = ShardFactory(settings, columnar=columnar).restore(0, shard.snapshot())

    def process(records: Sequence[RawRecord]) -> list[str]:
        """The conflicting-duplicate dead letters' messages of a batch."""
        out = restored.process(records)
        letters = [orjson.loads(m.value) for m in out if m.topic == topics.dead_letters]
        return [d["error_message"] for d in letters if d["error_kind"] == "conflicting_duplicate"]

    assert process([_record(topics.predictions, 1, pred_doc)]) == []  # exact re-sends
    assert process([_record(topics.labels, 1, label_doc)]) == []
    assert restored.totals["exact_duplicates"] == 2
    changed_pred = _record(topics.predictions, 2, {**pred_doc, "prediction": {"label": 0, "score": 0.1}})
    changed_label = _record(topics.labels, 2, {**label_doc, "label": 0})
    for changed, first in ((changed_pred, pred), (changed_label, label)):
        [message] = process([changed])
        assert _blake2b(first.value or b"").hex() in message
        assert payload_digest(changed.value or b"").hex() in message
    assert restored.totals["exact_duplicates"] == 2
