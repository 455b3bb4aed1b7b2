"""The dead letters' reasons, pinned: the batch decoder's (whichever parser took the batch) and the
event-at-a-time decoder's, kind and message, for one malformed record of each kind next to a good
one. The differential tests compare the two decoders with each other; this one fails when a reason
changes in both."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.operators import struct_decode
from driftline.operators.columns import BatchDecoder
from driftline.operators.validate import Decoder, RawRecord
from driftline.schemas.events import DeadLetter

DECODER = Decoder(max_message_bytes=4096, max_timestamp_skew_ms=60_000, max_future_skew_ms=5_000)
T0 = 1_767_225_600_000
GOOD = (b'{"prediction_id":"p","model_id":"m","timestamp":%d,"features":{"x":1.5,"c":"a"},'
        b'"prediction":{"label":1,"score":0.5}}' % T0)
BAD_PREDICTIONS = [
    (b'{"prediction_id":"p","model_id":"m","timestamp":%d,"prediction":{"label":1},"extra":1}' % T0,
     "validation_error", "extra: Extra inputs are not permitted"),
    (b'{"prediction_id":"","model_id":"m","timestamp":%d,"prediction":{"label":1}}' % T0,
     "validation_error", "prediction_id: String should have at least 1 character"),
    (b'{"prediction_id":"p","timestamp":%d,"prediction":{"label":1}}' % T0,
     "validation_error", "model_id: Field required"),
    (b'{"prediction_id":"p","model_id":"m","timestamp":%d,"prediction":{"score":NaN}}' % T0,
     "non_finite", "prediction.score: Input should be a finite number"),
    (b'{"prediction_id":"p","model_id":"m","timestamp":%d,"latency_ms":-1,"prediction":1}' % T0,
     "validation_error", "latency_ms: Input should be greater than or equal to 0"),
    (b'{"schema_version":2,"prediction_id":"p","model_id":"m","timestamp":%d,"prediction":1}' % T0,
     "unknown_schema_version", "schema_version: Input should be 1"),
    (GOOD.replace(b"%d" % T0, b"%d" % (T0 + 120_000)),
     "timestamp_out_of_range", "timestamp: event time 1767225720000 is 120000 ms from the record timestamp"
     " 1767225600000 (max skew 60000 ms)"),
    (GOOD.replace(b"%d" % T0, b"%d" % (T0 + 10_000)),
     "future_timestamp", "timestamp: event time 1767225610000 is 10000 ms ahead of the record timestamp"
     " 1767225600000 (max 5000 ms)"),
    (b'{"prediction_id":"p","model_id":"m","timestamp":%d,"features":{"x":[1]},"prediction":1}' % T0,
     "validation_error", "features.x.bool: Input should be a valid boolean (+3 more)"),
    (b'{"prediction_id":"p","model_id":"m","timestamp":"soon","prediction":1}',
     "validation_error", "timestamp: Value error, timestamp 'soon' is not RFC 3339"),
    (b'{"prediction_id":"p","model_id":"m","timestamp":%d,"features":{"x":' % T0 + b"[" * 1500
     + b"]" * 1500 + b'},"prediction":1}',  # (too deep for the compiled pass: a RecursionError there)
     "decode_error", "<root>: Invalid JSON: recursion limit exceeded at line 1 column 278"),
    (b'{"prediction_id":"p",', "decode_error",
     "<root>: Invalid JSON: EOF while parsing a value at line 1 column 21"),
    (b"x" * 5000, "oversized",
     "payload of 5000 bytes exceeds max_message_bytes=4096 (first 5000 bytes kept)"),
    (None, "decode_error", "null value (tombstone), expected a JSON object"),
]
BAD_LABELS = [
    (b'{"prediction_id":"p","label":[1],"timestamp":%d}' % T0,
     "validation_error", "label.bool: Input should be a valid boolean (+3 more)"),
    (b'{"prediction_id":"p","label":NaN,"timestamp":%d}' % T0,
     "non_finite", "label.float: Input should be a finite number"),
    (b'{"prediction_id":"p","label":1,"timestamp":%d,"model_id":""}' % T0,
     "validation_error", "model_id: String should have at least 1 character"),
    (b'{"prediction_id":"p","label":1,"timestamp":%d,"extra":null}' % T0,
     "validation_error", "extra: Extra inputs are not permitted"),
]
GOOD_LABEL = b'{"prediction_id":"p","label":1,"timestamp":%d}' % T0


def _records(values: list[bytes | None]) -> list[RawRecord]:
    return [RawRecord("t", 0, offset, T0, None, value) for offset, value in enumerate(values)]


def _reasons(dead: list[DeadLetter]) -> list[tuple[int, str, str]]:
    return [(d.source_offset, d.error_kind.value, d.error_message) for d in dead]


def test_each_malformed_prediction_keeps_its_reason() -> None:
    expected = [(i + 1, kind, message) for i, (_, kind, message) in enumerate(BAD_PREDICTIONS)]
    for bad, kind, message in BAD_PREDICTIONS:  # alone beside a good record: the batch's first try fails
        records = _records([GOOD, bad])
        batch, dead = BatchDecoder(DECODER).predictions(records)
        assert (batch.prediction_ids, _reasons(dead)) == (["p"], [(1, kind, message)])
        assert _reasons(DECODER.predictions(records)[1]) == [(1, kind, message)]
    records = _records([GOOD, *(bad for bad, _, _ in BAD_PREDICTIONS)])
    assert _reasons(BatchDecoder(DECODER).predictions(records)[1]) == expected


def test_each_malformed_label_keeps_its_reason() -> None:
    for bad, kind, message in BAD_LABELS:
        records = _records([GOOD_LABEL, bad])
        batch, dead = BatchDecoder(DECODER).labels(records)
        assert (batch.prediction_ids, _reasons(dead)) == (["p"], [(1, kind, message)])
        assert _reasons(DECODER.labels(records)[1]) == [(1, kind, message)]


def test_without_msgspec_the_fallback_keeps_every_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(struct_decode, "msgspec", None)  # (a light install: no compiled pass)
    assert struct_decode.prediction_columns([GOOD], 4096) is None
    assert struct_decode.label_columns([GOOD_LABEL], 4096) is None
    for bad, kind, message in BAD_PREDICTIONS:
        batch, dead = BatchDecoder(DECODER).predictions(_records([GOOD, bad]))
        assert (batch.prediction_ids, _reasons(dead)) == (["p"], [(1, kind, message)])
    for bad, kind, message in BAD_LABELS:
        batch, dead = BatchDecoder(DECODER).labels(_records([GOOD_LABEL, bad]))
        assert (batch.prediction_ids, _reasons(dead)) == (["p"], [(1, kind, message)])

def test_the_compiled_pass_takes_only_batches_of_the_common_shape() -> None:
    if struct_decode.msgspec is None:  # (a light install: nothing to check)
        return
    assert struct_decode.prediction_columns([GOOD, GOOD], 4096) is not None
    assert struct_decode.label_columns([GOOD_LABEL], 4096) is not None
    for bad, kind, _ in BAD_PREDICTIONS:  # (event times are checked after it, on its columns)
        taken = struct_decode.prediction_columns([GOOD, bad], 4096) is not None
        assert taken == (kind in ("timestamp_out_of_range", "future_timestamp")), kind
    # a field one payload names and another leaves out: pydantic's fields sets differ
    assert struct_decode.label_columns([GOOD_LABEL, GOOD_LABEL[:-1] + b',"model_id":null}'], 4096) is None


# Batches the compiled pass may take whole: every payload of one shape (the same optional fields),
# values of every JSON type the schema allows, written many ways (integers beyond 64 bits, -0, 1E2,
# floats near 2**63, unicode names up to the length limit and past it, repeated keys).
_NUMBERS = st.sampled_from(["0", "-0", "1", "-7", "1.5", "-0.0", "1E2", "2.5e-3", "1e300", "9.3e18", "5e-324",
                            "9223372036854775807", "9223372036854775808", "123456789012345678901234567890"])
_TEXTS = st.sampled_from(['"a"', '"\\u00e9"', '""', '"' + "é" * 256 + '"', '"' + "x" * 257 + '"'])
_FEATURE_VALUES = st.one_of(_NUMBERS, _TEXTS, st.sampled_from(["true", "false", "null"]))
_IDS = st.sampled_from(['"p"', '"q"', '"\\ud83d\\ude00"', '"' + "i" * 256 + '"', '""'])


@st.composite
def _prediction_batches(draw: st.DrawFn) -> list[bytes]:
    # (a name past 8 bytes: the key check reads it a 64-bit word at a time, past a short key at the end)
    names = draw(st.permutations(["x", "y", draw(st.sampled_from(["c", "a name past 8 bytes"]))]))
    with_features, with_latency, with_version = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    output_fields = draw(st.sampled_from([("label",), ("score",), ("label", "score"), ("value",), ()]))
    payloads = []
    for _ in range(draw(st.integers(1, 6))):
        fields = [f'"prediction_id":{draw(_IDS)}', '"model_id":"m"',
                  f'"timestamp":{draw(st.sampled_from([str(T0), str(T0 + 1), "1E2", str(2**64)]))}']
        output = {"label": st.one_of(_NUMBERS, _TEXTS, st.sampled_from(["true", "null"])),
                  "score": st.one_of(_NUMBERS, st.just("null")), "value": _NUMBERS}
        fields.append('"prediction":{' + ",".join(f'"{k}":{draw(output[k])}' for k in output_fields) + "}")
        if with_features:
            order = names if draw(st.integers(0, 4)) else list(reversed(names))
            pairs = [f'"{k}":{draw(_FEATURE_VALUES)}' for k in order]
            if not draw(st.integers(0, 9)):
                pairs.append(f'"x":{draw(_FEATURE_VALUES)}')  # a repeated key: the last one counts
            fields.append('"features":{' + ",".join(pairs) + "}")
        if with_latency:
            fields.append(f'"latency_ms":{draw(st.sampled_from(["0", "2.5", "-1", "null", "1e300"]))}')
        if with_version:
            fields.append('"model_version":' + draw(st.sampled_from(['"2"', '""', "3"])))
        payloads.append(("{" + ",".join(draw(st.permutations(fields))) + "}").encode())
    return payloads


def _same_as_pydantic(batch: Any, dead: list[DeadLetter], slow: tuple[list[Any], list[DeadLetter]]) -> None:
    good, slow_dead = slow
    assert batch.records == [record for record, _ in good]
    for got, (_, want) in zip(batch.events, good, strict=True):
        assert repr(got.model_dump()) == repr(want.model_dump())  # repr: 1 is not 1.0, True is not 1
        assert got.model_fields_set == want.model_fields_set
        if hasattr(want, "prediction"):
            assert got.prediction.model_fields_set == want.prediction.model_fields_set
    assert [d.model_dump() for d in dead] == [d.model_dump() for d in slow_dead]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_prediction_batches())
def test_batches_of_one_shape_decode_as_pydantic_decodes_them(payloads: list[bytes]) -> None:
    records = _records(list(payloads))
    batch, dead = BatchDecoder(DECODER).predictions(records)
    _same_as_pydantic(batch, dead, DECODER.predictions(records))
    if batch.features is not None:  # the columns hold every event's features, value for value
        for name, column, numbers in zip(batch.features.names, batch.features.columns, batch.features.numbers,
                                         strict=True):
            assert repr(list(column)) == repr([e.features[name] for e in batch.events])
            assert numbers is None or numbers.tolist() == list(column)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_IDS, st.one_of(_NUMBERS, _TEXTS, st.sampled_from(["true", "null", "[1]"]))),
                min_size=1, max_size=6), st.sampled_from(["", ',"model_id":"m"', ',"schema_version":1']))
def test_label_batches_of_one_shape_decode_as_pydantic_decodes_them(
    pairs: list[tuple[str, str]], extra: str
) -> None:
    records = _records([f'{{"prediction_id":{i},"label":{label},"timestamp":{T0}{extra}}}'.encode()
                        for i, label in pairs])
    batch, dead = BatchDecoder(DECODER).labels(records)
    _same_as_pydantic(batch, dead, DECODER.labels(records))


def test_a_short_feature_object_with_an_empty_name_decodes_as_pydantic_decodes_it() -> None:
    # (``{"":1}`` alone is shorter than the key check's 64-bit word: it raised instead of a dead letter)
    records = _records([GOOD.replace(b'{"x":1.5,"c":"a"}', b'{"":1}')])
    batch, dead = BatchDecoder(DECODER).predictions(records)
    _same_as_pydantic(batch, dead, DECODER.predictions(records))


# Backslash escapes in names and texts: the compiled pass's key check gives up at any backslash in
# a batch's feature objects (they are read as dicts then); msgspec and pydantic each unescape.
_ESCAPED = [
    rb'"model_id":"a\"b\\c\/d"', rb'"model_id":"\u00e9\n"', rb'"prediction_id":"\ud83d\ude00"',
    rb'"features":{"\u0078":1.5,"c":"a"}',  # (an escaped name: the same name as unescaped)
    rb'"features":{"x":1.5,"c":"a\"b\\"}', rb'"features":{"a\"b":1,"c\\":"\u00e9"}',
    rb'"features":{"x":1.5,"\u0078":2.5,"c":"a"}',  # (one name twice, once escaped: the last counts)
    rb'"features":{"x":1.5,"c":"\u0000\t"}', rb'"features":{"x":1.5,"a\tb":"a"}',
    rb'"features":{"' + rb"\u00e9" * 256 + rb'":1}', rb'"features":{"' + rb"\u00e9" * 257 + rb'":1}',
    rb'"model_id":"' + rb"\u00e9" * 257 + rb'"',
    rb'"features":{"x":1.5,"c":"\ud800"}', rb'"features":{"\udc00":1}', rb'"model_id":"\ud800x"',
    rb'"features":{"x":1.5,"c":"\x"}', rb'"model_id":"\u00g1"',
]
_GOOD_FIELDS = {b'"prediction_id"': b'"prediction_id":"p"', b'"model_id"': b'"model_id":"m"',
                b'"features"': b'"features":{"x":1.5,"c":"a"}'}


@pytest.mark.parametrize("field", _ESCAPED)
def test_escaped_names_and_texts_decode_as_pydantic_decodes_them(field: bytes) -> None:
    payload = GOOD.replace(_GOOD_FIELDS[field[: field.index(b":")]], field)
    assert payload != GOOD
    for values in ([payload], [GOOD, payload], [payload, payload]):
        records = _records(list(values))
        batch, dead = BatchDecoder(DECODER).predictions(records)
        slow = DECODER.predictions(records)
        _same_as_pydantic(batch, dead, slow)
        if struct_decode.msgspec is not None and not slow[1]:  # (a good batch stays on the compiled pass)
            assert struct_decode.prediction_columns(values, 4096) is not None, values
