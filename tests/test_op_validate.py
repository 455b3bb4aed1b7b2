"""Decoder: every failure is a dead letter of the right kind, and no input makes it raise."""

from __future__ import annotations

import json
import pickle

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.operators.validate import MAX_ERROR_MESSAGE_CHARS, OVERSIZED_KEPT_BYTES, Decoder, RawRecord
from driftline.schemas.events import DeadLetter, ErrorKind

T0 = 1_767_225_600_000
DECODER = Decoder(max_message_bytes=1_048_576, max_timestamp_skew_ms=86_400_000)
GOOD_PREDICTION = {
    "prediction_id": "p1",
    "model_id": "m",
    "timestamp": T0,
    "features": {"x": 1.5, "c": "a"},
    "prediction": {"label": "yes", "score": 0.9},
}


def record(value: bytes | None, offset: int = 0, ts: int = T0, key: bytes | None = b"k") -> RawRecord:
    return RawRecord("driftline.predictions", 3, offset, ts, key, value)


def prediction(**changes: object) -> bytes:
    return orjson.dumps({**GOOD_PREDICTION, **changes})


def dead_one(value: bytes | None, **kw: object) -> DeadLetter:
    ok, dead = DECODER.predictions([record(value, **kw)])  # type: ignore[arg-type]
    assert ok == [] and len(dead) == 1
    return dead[0]


def test_valid_records_pass_in_order_with_their_record() -> None:
    records = [record(prediction(prediction_id=f"p{i}"), offset=i) for i in range(3)]
    ok, dead = DECODER.predictions(records)
    assert dead == [] and [(r.offset, e.prediction_id) for r, e in ok] == [(0, "p0"), (1, "p1"), (2, "p2")]


def test_feature_nan_and_infinity_tokens_are_accepted() -> None:
    value = prediction().replace(b'"x":1.5', b'"x":NaN,"y":Infinity,"z":-Infinity')
    ok, dead = DECODER.predictions([record(value)])
    assert dead == [] and str(ok[0][1].features["y"]) == "inf"


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (None, ErrorKind.DECODE_ERROR, "null value"),
        (b"not json", ErrorKind.DECODE_ERROR, "<root>: Invalid JSON"),
        (b"[1, 2]", ErrorKind.DECODE_ERROR, "<root>: Input should be an object"),
        (b"null", ErrorKind.DECODE_ERROR, "<root>: Input should be an object"),
        (b'{"prediction_id":"\xff"}', ErrorKind.DECODE_ERROR, "Invalid JSON"),
        (b"[" * 10_000, ErrorKind.DECODE_ERROR, "Invalid JSON"),
        (
            prediction(schema_version=2, model_id=None),
            ErrorKind.UNKNOWN_SCHEMA_VERSION,
            "schema_version: Input",
        ),
        (prediction().replace(b'"score":0.9', b'"score":NaN'), ErrorKind.NON_FINITE, "prediction.score: "),
        (
            prediction(latency_ms=1).replace(b'"latency_ms":1', b'"latency_ms":1e400'),
            ErrorKind.NON_FINITE,
            "latency_ms: Input should be a finite number",
        ),
        (prediction().replace(str(T0).encode(), b"Infinity"), ErrorKind.NON_FINITE, "timestamp: "),
        (prediction(model_id=""), ErrorKind.VALIDATION_ERROR, "model_id: String should have at least 1"),
        (prediction(extra=1, model_id=None), ErrorKind.VALIDATION_ERROR, "(+1 more)"),
        (
            prediction(timestamp=T0 + 86_400_001),
            ErrorKind.TIMESTAMP_OUT_OF_RANGE,
            "is 86400001 ms from the record",
        ),
    ],
)
def test_failures_become_dead_letters(value: bytes | None, kind: ErrorKind, message: str) -> None:
    dead = dead_one(value, offset=41)
    assert dead.error_kind is kind and message in dead.error_message
    assert (dead.source_topic, dead.source_partition, dead.source_offset, dead.source_timestamp) == (
        "driftline.predictions",
        3,
        41,
        T0,
    )
    assert dead.original == (value or b"") and dead.original_key == b"k"


def test_label_nan_is_non_finite() -> None:
    _, dead = DECODER.labels([record(b'{"prediction_id":"p","label":NaN,"timestamp":%d}' % T0)])
    assert dead[0].error_kind is ErrorKind.NON_FINITE and dead[0].error_message.startswith("label.float")


def test_oversized_is_checked_before_parsing_and_cut() -> None:
    decoder = Decoder(max_message_bytes=100_000, max_timestamp_skew_ms=1)
    value = b"{" * 200_000  # would also be a decode error: size wins
    _, dead = decoder.predictions([record(value)])
    assert dead[0].error_kind is ErrorKind.OVERSIZED and len(dead[0].original) == OVERSIZED_KEPT_BYTES
    assert "200000 bytes" in dead[0].error_message


def test_record_without_timestamp_skips_the_skew_check_and_still_dead_letters() -> None:
    ok, _ = DECODER.predictions([record(prediction(), ts=-1)])
    assert len(ok) == 1
    assert dead_one(b"x", ts=-1).source_timestamp == 0


def test_messages_are_truncated() -> None:
    long_key = "k" * 5000
    dead = dead_one(prediction(features={long_key: [1]}))
    assert (
        dead.error_kind is ErrorKind.VALIDATION_ERROR and len(dead.error_message) <= MAX_ERROR_MESSAGE_CHARS
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [*GOOD_PREDICTION, "schema_version", "label", "latency_ms", "segment", "x"]
)


def mutated(draw_value: object, name: str) -> bytes:
    # the standard library writes NaN/Infinity tokens and big ints, as a sloppy producer might
    return json.dumps({**GOOD_PREDICTION, name: draw_value}, ensure_ascii=False).encode()


@settings(max_examples=400, deadline=None)
@given(
    value=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300).map(str.encode),
        st.builds(mutated, json_values, field_names),
        st.integers(1, 3000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
        st.builds(
            lambda a, b: b'{"prediction_id":"%s","prediction_id":"%s"}' % (a, b),
            st.binary(max_size=8),
            st.binary(max_size=8),
        ),
        st.text(min_size=1).map(lambda s: prediction(prediction_id=s * 100)),
    ),
    ts=st.integers(-(2**63), 2**63 - 1),
)
def test_never_raises_and_accounts_for_every_record(value: bytes, ts: int) -> None:
    records = [record(value, offset=0, ts=ts), record(value, offset=1, ts=ts)]
    for decode in (DECODER.predictions, DECODER.labels):
        ok, dead = decode(records)
        assert len(ok) + len(dead) == 2
        for letter in dead:
            assert letter.original == value and letter.error_message
            DeadLetter.model_validate_json(letter.model_dump_json())  # producible as is


def test_event_time_ahead_of_the_record_beyond_the_future_bound_is_a_future_timestamp() -> None:
    decoder = Decoder(1_048_576, max_timestamp_skew_ms=30 * 86_400_000, max_future_skew_ms=300_000)
    skews = (300_000, 300_001, 2_400_000)
    ahead = [record(prediction(timestamp=T0 + skew), offset=i) for i, skew in enumerate(skews)]
    behind = record(prediction(timestamp=T0 - 29 * 86_400_000), offset=3)  # the past bound is unchanged
    ok, dead = decoder.predictions([*ahead, behind])
    assert [r.offset for r, _ in ok] == [0, 3]
    assert [(d.source_offset, d.error_kind) for d in dead] == [
        (1, ErrorKind.FUTURE_TIMESTAMP),
        (2, ErrorKind.FUTURE_TIMESTAMP),
    ]
    assert dead[1].error_message == (
        f"timestamp: event time {T0 + 2_400_000} is 2400000 ms ahead of the record timestamp {T0}"
        " (max 300000 ms)"
    )
    # far beyond the symmetric bound it stays timestamp_out_of_range, as before
    far = decoder.predictions([record(prediction(timestamp=T0 + 31 * 86_400_000))])[1]
    assert far[0].error_kind is ErrorKind.TIMESTAMP_OUT_OF_RANGE


def test_a_decoder_pickled_before_the_future_bound_restores_with_the_symmetric_one() -> None:
    old = Decoder(max_message_bytes=10, max_timestamp_skew_ms=5)
    state = old.__reduce_ex__(pickle.HIGHEST_PROTOCOL)[2]
    del state[1]["max_future_skew_ms"]
    restored = Decoder.__new__(Decoder)
    restored.__setstate__(state)
    assert (restored.max_future_skew_ms, restored.max_timestamp_skew_ms) == (5, 5)


# A RawRecord pickled before it had its own __reduce__ (the frozen dataclass's state list).
_RECORD_PICKLED_BEFORE = (b'\x80\x04\x95V\x00\x00\x00\x00\x00\x00\x00\x8c\x1c'
                          b'driftline.operators.validate\x94\x8c\tRawRecord\x94\x93\x94)\x81\x94]\x94(\x8c\x06labels\x94K\x03K\x11\x8a\x06\x00\xa8\xdav'
                          b'\x9b\x01NC\x07{"x":1}\x94eb.')


def test_a_raw_record_pickles_as_its_fields_and_loads_from_before() -> None:
    record = RawRecord("labels", 3, 17, 1_767_225_600_000, None, b'{"x":1}')
    assert record.__reduce__() == (RawRecord, ("labels", 3, 17, 1_767_225_600_000, None, b'{"x":1}'))
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert pickle.loads(pickle.dumps(record, protocol)) == record
    assert pickle.loads(_RECORD_PICKLED_BEFORE) == record
    same = RawRecord("labels", 3, 17, 1_767_225_600_000, None, b'{"x":1}')
    assert hash(same) == hash(record) and {record: 1}[same] == 1  # hashed by its fields, as a frozen one
