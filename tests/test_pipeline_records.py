"""The stage 1 -> stage 2 contract: typed model-events records keep the wire format, so a record
stage 1 wrote before they existed (an in-flight topic record) still decodes, and a broken one is
an error stage 2 counts rather than a crash."""

from __future__ import annotations

import json
from typing import Any

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
    records.EpisodeReports(0, "m", "1", [{
        "kind": "opened", "reason": "alarm", "feature": "x", "feature_kind": "numeric", "unit": "sd",
        "event_time": 15, "count": 3, "magnitude": 1.5, "peak_magnitude": 1.5, "component": "mean+0.5",
        "statistic": 14.0, "threshold": 13.8, "prediction_id": "p", "reference_id": "r", "reference_from": 0,
        "arl": 1e6}]),
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


WRONG = [{"a": 1}, [1], "x", True, None, 2**63, 1e300, -(2**64)]  # orjson reads -(2**64) as a float


def _changed(payload: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``payload`` with one value (a field, or a column's or a report's first one) changed to each
    of :data:`WRONG` in turn, named by where."""
    out = []
    for name, value in payload.items():
        if name == "type":
            continue
        if isinstance(value, list) and value and isinstance(value[0], dict):  # reports
            for key in value[0]:
                for wrong in WRONG:
                    out.append((f"{name}.{key}={wrong!r}", {**payload, name: [{**value[0], key: wrong}]}))
        elif isinstance(value, list) and value:
            out += [(f"{name}[0]={wrong!r}", {**payload, name: [wrong, *value[1:]]}) for wrong in WRONG]
        elif isinstance(value, dict) and name == "columns":  # a stacked record's
            for column, values in value.items():
                out += [(f"{column}[0]={wrong!r}", {**payload, name: {**value, column: [wrong, *values[1:]]}})
                        for wrong in WRONG]
        else:
            out += [(f"{name}={wrong!r}", {**payload, name: wrong}) for wrong in WRONG]
    return out


STACKED = records.Stacked(0, records.OUTCOMES, ["m", "n"], ["1", "1"], [1, 1], {
    "prediction_id": ["p1", "p2"], "segment": ["", ""], "label_time": [5, 7], "label_delay_ms": [1, 2],
    "correct": [1, 0], "abs_error": [None, None], "rerouted": [0, 0]})


@pytest.mark.parametrize("record", [*EXAMPLES, STACKED], ids=lambda r: r.type)
def test_a_record_with_a_value_of_another_type_never_raises_in_stage_2(record: records.ModelEvent) -> None:
    """Each field, column and report value changed to another type, then every shard's progress
    far past it (windows, grid lines and metrics intervals close): stage 2 dead-letters the record
    or applies it, and never raises (a value it kept and read at a close raised there, at every
    restart: 8 such kinds were found by changing stage 1's records one value at a time)."""
    settings = Settings(topics={"partitions": 2})
    topic = settings.topics.model_events
    far = 10**12
    closing = [encode_model_event(records.Progress(shard, far, far, far)) for shard in (0, 1)]
    refused = 0
    for where, payload in _changed(record.payload()):
        model = ModelProcessor(0, settings)
        values = [json.dumps(payload).encode(), *closing]  # orjson writes no int past 64 bits
        try:
            model.process([RawRecord(topic, 0, i, 0, None, value) for i, value in enumerate(values)])
        except Exception as err:
            pytest.fail(f"{record.type} with {where}: {type(err).__name__}: {err}")
        refused += model.totals["bad_internal_records"]
    assert refused >= 4  # most changes are refused whole (some, e.g. a text's None in a dict key, are not)


def test_values_of_another_type_are_refused_with_the_column_that_holds_them() -> None:
    payload = STACKED.payload()
    cases = {"correct": "yes", "abs_error": "x", "segment": 0.5, "label_time": 2**63, "rerouted": 0.5}
    for column, wrong in cases.items():
        column_values = [wrong, payload["columns"][column][1]]
        changed = {**payload, "columns": {**payload["columns"], column: column_values}}
        with pytest.raises(ValueError, match=f"column '{column}'"):
            records.Stacked.from_payload(changed)
    report = EXAMPLES[-1].payload()
    for key, wrong in {"magnitude": {"a": 1}, "kind": "begun", "count": 1.5, "reason": None}.items():
        with pytest.raises(ValueError, match="report"):
            records.EpisodeReports.from_payload({**report, "reports": [{**report["reports"][0], key: wrong}]})
    for key in ("component", "arl", "unit"):  # read where the merger opens or moves an episode
        lacking = {k: v for k, v in report["reports"][0].items() if k != key}
        with pytest.raises(ValueError, match=f"report's '{key}'"):
            records.EpisodeReports.from_payload({**report, "reports": [lacking]})
    with pytest.raises(ValueError, match="pred_progress"):
        records.Progress.from_payload({"shard": 0, "pred_progress": 1e300, "outcome_progress": 0})
