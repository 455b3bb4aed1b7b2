"""The stage 1 -> stage 2 contract: typed model-events records keep the wire format, so a record
stage 1 wrote before they existed (an in-flight topic record) still decodes, and a broken one is
an error stage 2 counts rather than a crash."""

from __future__ import annotations

import pytest

from driftline.config import Settings
from driftline.operators.validate import RawRecord
from driftline.pipeline import records
from driftline.pipeline.model import ModelProcessor
from driftline.pipeline.records import WindowKey, decode_model_event, encode_model_event

EXAMPLES: list[records.ModelEvent] = [
    records.Progress(1, 60_000, 30_000, 20_000),
    records.Partial(0, "m", "1", "region=eu", 60, 0, 60_000, {"n_events": 3}),
    records.Outcomes(1, "m", "1", ["p1", "p2"], ["", "region=eu"], [5, 7], [1, 2], [1, None], [None, 0.5],
                     [0, 1]),
    records.Expired(0, "m", "1", ["p3", "p5"], ["", ""], [9, 10], ["horizon", "evicted"]),
    records.Orphans(0, "", "", ["p4"], [11], ["no_prediction"], [1], [40]),
    records.Duplicates(1, "m", "1", ["label"], [""], [13], [1], [42], ["p6"]),
    records.EpisodeReports(0, "m", "1", [{"feature": "x", "kind": "opened", "event_time": 15}]),
]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: r.type)
def test_every_record_round_trips(record: records.ModelEvent) -> None:
    assert decode_model_event(encode_model_event(record)) == record


def test_records_written_before_the_typed_records_decode() -> None:
    """Byte for byte what stage 1 wrote when records were dicts (and before re-routing and
    duplicate progress existed)."""
    partial = (b'{"type":"partial","shard":0,"model_id":"m","model_version":"1","segment":"",'
               b'"window_size_s":300,"window_start":600000,"window_end":900000,"partial":{"n_events":0}}')
    decoded = decode_model_event(partial)
    assert isinstance(decoded, records.Partial) and encode_model_event(decoded) == partial
    assert decoded.key == WindowKey(300_000, 600_000, "m", "1", "") and decoded.key.end == 900_000
    outcomes = decode_model_event(
        b'{"type":"outcomes","shard":1,"model_id":"m","model_version":"1","prediction_id":["a","b"],'
        b'"segment":["",""],"label_time":[1,2],"label_delay_ms":[0,0],"correct":[1,0],"abs_error":[null,null]}')
    assert isinstance(outcomes, records.Outcomes) and outcomes.rerouted == [0, 0]
    progress = decode_model_event(b'{"type":"progress","shard":1,"pred_progress":9,"outcome_progress":4}')
    assert progress == records.Progress(1, 9, 4, 4)
    expired = decode_model_event(  # before evicted predictions were reported: all expired
        b'{"type":"expired","shard":0,"model_id":"m","model_version":"1","prediction_id":["a","b"],'
        b'"segment":["",""],"expired_at":[1,2]}')
    assert expired == records.Expired(0, "m", "1", ["a", "b"], ["", ""], [1, 2], ["horizon", "horizon"])


def test_window_keys_equal_the_plain_tuples_older_checkpoints_hold() -> None:
    key = WindowKey(60_000, 120_000, "m", "1", "")
    assert key == (60_000, 120_000, "m", "1", "") and hash(key) == hash((60_000, 120_000, "m", "1", ""))
    assert {(60_000, 120_000, "m", "1", ""): 1}[key] == 1


def test_broken_internal_records_are_counted_not_raised() -> None:
    settings = Settings(topics={"partitions": 2})
    model = ModelProcessor(0, settings)
    broken = [b"[1, 2]", b'{"type": "nonsense", "shard": 0}', b'{"type": "progress", "shard": 0}',
              b'{"type": "progress", "shard": 7, "pred_progress": 1, "outcome_progress": 1}',
              b'{"type": "expired", "shard": 0, "model_id": "m", "model_version": "1",'
              b' "prediction_id": ["a"], "segment": [], "expired_at": [1]}']
    topic = settings.topics.model_events
    model.process([RawRecord(topic, 0, i, 0, None, value) for i, value in enumerate(broken)])
    assert model.totals["bad_internal_records"] == len(broken)
