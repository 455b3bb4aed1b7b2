"""BatchDecoder against Decoder: the same events (values, types, key order, fields set) and the same
dead letters, in the same order, on randomized payloads that reach every fallback."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.operators import columns
from driftline.operators.columns import BatchDecoder, PredictionBatch
from driftline.operators.validate import Decoder, RawRecord
from driftline.schemas.events import DeadLetter, PredictionEvent

DECODER = Decoder(max_message_bytes=4096, max_timestamp_skew_ms=60_000, max_future_skew_ms=5_000)
BATCH = BatchDecoder(DECODER)
T0 = 1_767_225_600_000

# JSON fragments as text, so payloads can hold what json.dumps would not write: NaN tokens, integers
# beyond 64 bits, duplicate keys, floats written many ways.
numbers = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda f: f"{f:.3e}"),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "-0", "-0.0", "1E2", "9223372036854775808",
                     "18446744073709551615", "-9223372036854775809", "123456789012345678901234567890"]),
)
texts = st.one_of(
    st.sampled_from(["", "a", "yes", "x" * 257, "é", "\\ud800", "true"]),
    st.text(max_size=6),
).map(lambda s: s if s.startswith("\\") else json.dumps(s)[1:-1]).map(lambda s: f'"{s}"')
scalars = st.one_of(numbers, texts, st.sampled_from(["true", "false", "null"]))
values = st.one_of(scalars, st.sampled_from(["[]", "{}", "[1]", '{"a":1}']))
names = st.sampled_from(["x", "y", "c", "z", "", "n" * 257, "k"])


@st.composite
def objects(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[str]], shuffle: bool = True) -> str:
    """A JSON object of some of ``fields`` (sometimes an extra or repeated key), in random order or
    in the order given (then many records of a batch share a key layout: the column checks' case)."""
    chosen = [name for name in fields if draw(st.integers(0, 9)) > 0]
    if draw(st.integers(0, 19)) == 0:
        chosen.append(draw(st.sampled_from(["extra", *fields])))
    if shuffle:
        chosen = draw(st.permutations(chosen))
    return "{" + ",".join(f'"{name}":{draw(fields.get(name, numbers))}' for name in chosen) + "}"


def feature_maps() -> st.SearchStrategy[str]:
    return st.one_of(
        st.lists(st.tuples(names, st.one_of(numbers, texts, st.sampled_from(["true", "null"]))), max_size=5)
        .map(lambda kv: "{" + ",".join(f'"{k}":{v}' for k, v in kv) + "}"),
        # a common layout: the same names, so the column checks see several rows per layout
        st.tuples(numbers, numbers, texts).map(lambda v: f'{{"x":{v[0]},"y":{v[1]},"c":{v[2]}}}'),
        values,
    )


plain_numbers = st.one_of(st.integers(-(2**40), 2**40).map(str),
                          st.floats(-1e6, 1e6, allow_nan=False).map(repr))
ids = st.from_regex(r"p-[0-9]{1,3}", fullmatch=True).map(lambda s: f'"{s}"')


def mostly(valid: st.SearchStrategy[str], other: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """``valid`` nine times in ten: most events then take the fast path, the rest each fallback."""
    return st.integers(0, 9).flatmap(lambda i: other if i == 0 else valid)


timestamps = st.one_of(
    st.integers(T0 - 100_000, T0 + 100_000).map(str),
    st.sampled_from([f"{T0}.0", '"2026-01-01T00:00:00Z"', "-1", "true", "1e400", "NaN", "253402300800000"]),
)
outputs = st.one_of(
    scalars,
    objects({"label": st.one_of(texts, numbers, st.sampled_from(["true", "null"])),
             "score": st.one_of(numbers, st.just("null")),
             "value": numbers,
             "probabilities": st.one_of(st.just('{"a":0.25,"b":0.75}'), st.just('{"a":true}'),
                                        st.just('{"":1}'), st.just("null")),
             "other": numbers}),
)
prediction_fields = {
    "schema_version": mostly(st.just("1"), st.sampled_from(["2", "1.0", "true"])),
    "prediction_id": mostly(ids, texts),
    "model_id": mostly(st.sampled_from(['"m"', '"n"']), texts),
    "model_version": mostly(st.sampled_from(['"1"', '"2"', "3"]), st.sampled_from(["true", '""', "1.5"])),
    "timestamp": mostly(st.integers(T0 - 10_000, T0 + 4_000).map(str), timestamps),
    "features": mostly(st.tuples(plain_numbers, plain_numbers, texts, st.sampled_from(["true", "null", "1"]))
                       .map(lambda v: f'{{"x":{v[0]},"y":{v[1]},"c":{v[2]},"b":{v[3]}}}'), feature_maps()),
    "prediction": mostly(st.one_of(plain_numbers, st.sampled_from(['"yes"', "true", '{"label":"a","score":1}',
                                                                   '{"label":2,"score":0.5}',
                                                                   '{"probabilities":{"a":0.25,"b":1}}'])),
                         outputs),
    "latency_ms": mostly(plain_numbers.map(lambda v: v.lstrip("-")), st.one_of(numbers, st.just("null"))),
    "segment": mostly(st.sampled_from(['{"region":"eu"}', "{}"]),
                      st.sampled_from(['{"region":1}', '{"":"a"}', "null"])),
}
prediction_payloads = st.one_of(objects(prediction_fields), objects(prediction_fields, shuffle=False))
label_fields = {
    "schema_version": mostly(st.just("1"), st.just("2")),
    "prediction_id": mostly(ids, texts),
    "label": mostly(st.one_of(plain_numbers, st.sampled_from(['"yes"', "true", "false", "1", "0"])),
                    st.one_of(scalars, st.just("[1]"))),
    "timestamp": mostly(st.integers(T0 - 10_000, T0 + 4_000).map(str), timestamps),
    "model_id": mostly(st.just('"m"'), st.one_of(texts, st.just("null"))),
}
label_payloads = st.one_of(objects(label_fields), objects(label_fields, shuffle=False))


def raw(payloads: Sequence[str | None], topic: str) -> list[RawRecord]:
    out = []
    for offset, text in enumerate(payloads):
        value = None if text is None else text.encode("utf-8", "surrogatepass")
        out.append(RawRecord(topic, 0, offset, T0 if offset % 7 else -1, b"k", value))
    return out


def assert_same(slow: tuple[list, list], fast_records: list, fast_events: list, fast_dead: list) -> None:
    slow_good, slow_dead = slow
    assert [r for r, _ in slow_good] == fast_records
    for (_, want), got in zip(slow_good, fast_events, strict=True):
        assert type(got) is type(want)
        # repr tells 1 from 1.0 and True from 1, and shows the key order
        assert repr(got.model_dump()) == repr(want.model_dump())
        assert got.model_fields_set == want.model_fields_set
        assert got.model_dump_json() == want.model_dump_json()
        if hasattr(want, "prediction"):
            assert got.prediction.model_fields_set == want.prediction.model_fields_set
    assert [d.model_dump() for d in fast_dead] == [d.model_dump() for d in slow_dead]


def predictions_as_pydantic_reads(records: list[RawRecord], decoder: BatchDecoder = BATCH
                                  ) -> tuple[PredictionBatch, list[DeadLetter]]:
    """``decoder``'s batch and dead letters of ``records``, checked equal to what the row decoder
    (pydantic) makes of them."""
    batch, dead = decoder.predictions(records)
    assert_same(DECODER.predictions(records), batch.records, batch.events, dead)
    return batch, dead


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(prediction_payloads, st.sampled_from(["{", "[]", "null", "x" * 5000]), st.none()),
                max_size=30))
def test_predictions_match_the_pydantic_path(payloads: list[str | None]) -> None:
    records = raw(payloads, "predictions")
    batch = predictions_as_pydantic_reads(records)[0]
    assert batch.timestamps.dtype == np.int64
    assert batch.timestamps.tolist() == [e.timestamp for e in batch.events]
    assert_columns_are_the_features(batch)


def assert_columns_are_the_features(batch: PredictionBatch) -> None:
    """The columns a batch carries hold every event's features, value for value (repr: 1 is not 1.0)."""
    if batch.features is None:
        return
    columns = batch.features
    for name, column, numbers in zip(columns.names, columns.columns, columns.numbers, strict=True):
        assert repr(list(column)) == repr([e.features[name] for e in batch.events])
        if numbers is not None:
            assert numbers.dtype == np.float64 and numbers.tolist() == list(column)
    assert all(list(e.features) == list(columns.names) for e in batch.events)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(label_payloads, st.sampled_from(["{", "1", ""]), st.none()), max_size=30))
def test_labels_match_the_pydantic_path(payloads: list[str | None]) -> None:
    records = raw(payloads, "labels")
    batch, dead = BATCH.labels(records)
    assert_same(DECODER.labels(records), batch.records, batch.events, dead)


def test_well_formed_events_take_the_fast_path() -> None:
    """The common shape is accepted without pydantic's parse (a payload pydantic would reject is
    never built this way: the differential tests above cover that)."""
    value = (b'{"prediction_id":"p","model_id":"m","model_version":2,"timestamp":%d,'
             b'"features":{"x":1,"y":2.5,"c":"a","b":true,"n":null},"prediction":{"label":1,"score":1},'
             b'"latency_ms":3,"segment":{"region":"eu"}}' % T0)
    batch, dead = BATCH.predictions([RawRecord("p", 0, 0, T0, None, value)])
    event = batch.events[0]
    assert dead == []
    assert (event.model_version, event.prediction.score, event.latency_ms) == ("2", 1.0, 3.0)
    assert event.features == {"x": 1, "y": 2.5, "c": "a", "b": True, "n": None}


def test_a_clean_batch_carries_its_feature_columns() -> None:
    """The columns checked for the fast path travel with the batch (the windows reuse them) only when
    they are exactly the accepted events' features: not when a record was dropped or fell back."""
    def value(i: int, features: bytes = b'{"x":1.5,"c":"a","k":3}') -> bytes:
        return (b'{"prediction_id":"p%d","model_id":"m","timestamp":%d,"features":%s,"prediction":0.5}'
                % (i, T0 + i, features))
    clean = [RawRecord("p", 0, i, T0, None, value(i)) for i in range(4)]
    batch, dead = BATCH.predictions(clean)
    assert dead == [] and batch.features is not None
    assert batch.features.names == ("x", "c", "k")
    assert batch.features.numbers[0] is not None and batch.features.numbers[0].tolist() == [1.5] * 4
    assert batch.features.numbers[1] is None and batch.features.numbers[2] is None  # str, int
    assert_columns_are_the_features(batch)
    for odd in (b"{", value(9, b'{"x":NaN,"c":"a","k":3}'), value(9, b'{"x":1.5}')):
        batch, _ = BATCH.predictions([*clean, RawRecord("p", 0, 9, T0, None, odd)])
        assert batch.features is None


# One layout per field: the prediction outputs and segment maps are then checked a column at a time
# (a type set and a min/max per field); each kind of odd value must still be judged as pydantic does.
ONE_LAYOUT_OUTPUTS = {
    "label": st.one_of(texts, numbers, st.sampled_from(["true", "false", "null", "[1]"])),
    "score": st.one_of(numbers, st.sampled_from(["null", "true", '"0.5"'])),
    "value": st.one_of(numbers, st.sampled_from(["null", "false"])),
    "probabilities": st.sampled_from(['{"a":0.25,"b":0.75}', '{"a":true}', "null"]),
}
PLAIN_OUTPUTS = {
    "label": st.sampled_from(['"a"', "1", "true", "null"]),
    "score": st.one_of(st.floats(0, 1).map(repr), st.sampled_from(["1", "0", "null"])),
    "value": st.floats(-1e6, 1e6).map(repr),
    "probabilities": st.just("null"),
}
SEGMENT_VALUES = st.one_of(texts, st.sampled_from(["1", "null", '"' + "v" * 257 + '"']))
PLAIN_SEGMENT_VALUES = st.sampled_from(['"eu"', '"us"'])


@st.composite
def one_layout_batches(draw: st.DrawFn) -> list[str]:
    """Prediction payloads whose ``prediction`` objects share one key layout and whose segment maps
    share one set of names; the values vary (mostly plain, sometimes each kind of odd one)."""
    layout = draw(st.permutations(draw(st.lists(st.sampled_from(sorted(ONE_LAYOUT_OUTPUTS)), unique=True))))
    segment_names = draw(st.lists(st.sampled_from(["region", "tier", "", "n" * 257]), unique=True,
                                  max_size=3))
    payloads = []
    for i in range(draw(st.integers(1, 12))):
        odd = draw(st.integers(0, 5)) == 0
        outputs = ONE_LAYOUT_OUTPUTS if odd else PLAIN_OUTPUTS
        segment_values = SEGMENT_VALUES if odd else PLAIN_SEGMENT_VALUES
        fields = ",".join(f'"{name}":{draw(outputs[name])}' for name in layout)
        segment = ",".join(f'"{name}":{draw(segment_values)}' for name in segment_names)
        payloads.append(f'{{"prediction_id":"p-{i}","model_id":"m","timestamp":{T0},"features":{{"x":1.5}},'
                        f'"prediction":{{{fields}}},"segment":{{{segment}}}}}')
    return payloads


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(one_layout_batches())
def test_one_layout_columns_match_the_pydantic_path(payloads: list[str]) -> None:
    records = raw(payloads, "predictions")
    predictions_as_pydantic_reads(records)


def test_a_huge_integer_among_float_features_is_judged_by_pydantic() -> None:
    """A feature column of floats is checked as one float64 array; an integer literal beyond 64 bits
    (orjson reads a float, pydantic an int) or a float beyond 2**63 in it is still left to pydantic."""
    def value(i: int, x: bytes) -> bytes:
        return (b'{"prediction_id":"p%d","model_id":"m","timestamp":%d,"features":{"x":%s,"c":"a"},'
                b'"prediction":0.5}' % (i, T0, x))
    for odd in (b"18446744073709551616", b"-18446744073709551616", b"9.3e18", b"-1e300"):
        records = raw([value(i, b"1.5").decode() for i in range(5)] + [value(5, odd).decode()], "predictions")
        batch = predictions_as_pydantic_reads(records)[0]
        assert batch.features is None  # the odd record took pydantic's path
        assert batch.events[5].features["x"] == json.loads(odd)


def test_values_that_are_json_only_side_by_side_are_each_judged_alone() -> None:
    """The batch is parsed in one call; values that are not JSON alone but would read as the right
    count of objects once joined by commas (an unclosed object closed by the next value, a value
    holding two objects) must still each be dead-lettered as when parsed one by one."""
    def value(i: int) -> str:
        return (f'{{"prediction_id":"p{i}","model_id":"m","timestamp":{T0},"features":{{"x":1.5}},'
                '"prediction":0.5}')
    opened = f'{{"prediction_id":"p2","model_id":"m","timestamp":{T0},"prediction":0.5,"features":{{"x":1.5'
    payloads = [value(1), opened, '"y":2.5}}', f"{value(4)},{value(5)}", value(6)]
    assert len(json.loads("[" + ",".join(payloads) + "]")) == len(payloads)  # the trap: it reads as 5
    records = raw(payloads, "predictions")
    batch, dead = predictions_as_pydantic_reads(records)
    assert [r.offset for r in batch.records] == [0, 4] and [d.source_offset for d in dead] == [1, 2, 3]
    labels = [f'{{"prediction_id":"a","label":1,"timestamp":{T0}', '"model_id":"m"}', "1,2",
              f'{{"prediction_id":"b","label":1,"timestamp":{T0}}}']
    records = raw(labels, "labels")
    batch_labels, dead = BATCH.labels(records)
    assert_same(DECODER.labels(records), batch_labels.records, batch_labels.events, dead)
    assert [r.offset for r in batch_labels.records] == [3]


class SlowPathLog(Decoder):
    """A decoder that notes the offsets of the records the batch decoder hands to pydantic."""

    __slots__ = ("offsets",)

    def __init__(self, *args: int) -> None:
        super().__init__(*args)
        self.offsets: list[int] = []

    def predictions(
        self, records: Sequence[RawRecord]
    ) -> tuple[list[tuple[RawRecord, PredictionEvent]], list[DeadLetter]]:
        self.offsets.extend(r.offset for r in records)
        return super().predictions(records)


def test_objects_are_grouped_by_key_set_whatever_the_key_order() -> None:
    """Top-level objects and prediction outputs are grouped by key set, read by name: objects of one
    set in any order share a group; as many keys but another set (an extra key for a missing one)
    form their own group, so each record is still judged as pydantic judges it."""
    def payload(*fields: str) -> str:
        return "{" + ",".join(fields) + "}"
    model, time, features = '"model_id":"m"', f'"timestamp":{T0}', '"features":{"x":1.5}'
    output = '"prediction":{"label":"a","score":0.5}'
    payloads = [payload(f'"prediction_id":"p{i}"', model, time, features, output) for i in range(3)]
    payloads += [
        payload(output, features, time, model, '"prediction_id":"p3"'),  # reversed
        payload('"prediction_id":"p4"', model, time, features, '"prediction":{"score":1,"label":"b"}'),
        payload('"prediction_id":"p5"', model, '"extra":1', features, output),  # no timestamp
        payload('"prediction_id":"p6"', model, time, features, '"prediction":{"label":"a","value":2}'),
    ]
    records = raw(payloads, "predictions")
    slow = SlowPathLog(4096, 60_000, 5_000)
    batch, dead = predictions_as_pydantic_reads(records, BatchDecoder(slow))
    assert slow.offsets == [5]  # only the record without a timestamp needed pydantic
    assert [r.offset for r in batch.records] == [0, 1, 2, 3, 4, 6] and [d.source_offset for d in dead] == [5]
    assert batch.events[4].prediction.label == "b" and batch.events[4].prediction.score == 1.0
    assert batch.events[5].prediction.value == 2.0


def test_a_batch_beyond_the_byte_cap_is_parsed_value_by_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-call parse copies the batch's values into one array; past a byte cap it is skipped
    (no second copy of a large fetch), with the same results."""
    payloads = [f'{{"prediction_id":"p{i}","label":1,"timestamp":{T0}}}' for i in range(4)]
    records = raw(payloads, "labels")
    want = BATCH.labels(records)
    monkeypatch.setattr(columns, "_TOGETHER_MAX_BYTES", sum(len(p) for p in payloads) - 1)

    def refused(values: Sequence[bytes]) -> None:
        raise AssertionError("parsed together past the cap")
    monkeypatch.setattr(columns, "_parsed_together", refused)
    batch, dead = BATCH.labels(records)
    assert_same(([(r, e) for r, e in zip(want[0].records, want[0].events, strict=True)], want[1]),
                batch.records, batch.events, dead)
    assert len(batch) == 4


def test_a_feature_column_of_floats_with_one_int_is_not_a_float_column() -> None:
    """The feature checks read the value types of the whole batch at once; a column whose types
    differ from the first event's in a later event only (an int among floats, a float among strs)
    must still be judged column by column: its values as parsed, no float64 copy."""
    def value(i: int, x: str, c: str) -> str:
        return (f'{{"prediction_id":"p{i}","model_id":"m","timestamp":{T0},"features":{{"x":{x},"c":{c},'
                f'"y":0.25}},"prediction":0.5}}')
    records = raw([value(0, "1.5", '"a"'), value(1, "2.5", '"b"'), value(2, "3", "4.5")], "predictions")
    batch = predictions_as_pydantic_reads(records)[0]
    assert batch.features is not None and batch.features.names == ("x", "c", "y")
    assert batch.features.numbers[0] is None and batch.features.numbers[1] is None
    assert batch.features.numbers[2] is not None and batch.features.numbers[2].tolist() == [0.25] * 3
    assert_columns_are_the_features(batch)


def test_feature_maps_with_the_same_names_in_another_order_carry_no_columns() -> None:
    """The batch's feature columns are built only when every map holds the same names in the same
    order (the columns' names are each map's order); the same names reordered, or a map with fewer
    names, are still accepted, value by value, without columns."""
    def value(i: int, features: str) -> str:
        return (f'{{"prediction_id":"p{i}","model_id":"m","timestamp":{T0},"features":{features},'
                '"prediction":0.5}')
    for other in ('{"c":"b","x":2.5}', '{"x":2.5}', "{}"):
        records = raw([value(0, '{"x":1.5,"c":"a"}'), value(1, other), value(2, '{"x":3.5,"c":"a"}')],
                      "predictions")
        batch = predictions_as_pydantic_reads(records)[0]
        assert len(batch) == 3 and batch.features is None


def test_feature_maps_whose_keys_only_look_in_order_read_as_pydantic_reads_them() -> None:
    """The one-layout check finds the keys by the colon after their closing quote: a blank there hides
    a key, a string value starting with a colon looks like one, a repeated key adds one. In the first
    two batches the keys so found, row by row, are the names in order; every map must still read as
    pydantic reads it (its keys in its own order)."""
    def value(i: int, features: str) -> str:
        return (f'{{"prediction_id":"p{i}","model_id":"m","timestamp":{T0},"features":{features},'
                '"prediction":{"score":0.5}}')  # (of the compiled pass's shape)
    for maps in (
        # (the second map's hidden "c" lends the third map's first key to the second row)
        ('{"x":1,"c":2}', '{"x":1,"c" :2}', '{"c":0,"x":1,"c":2}'),
        # (a repeated key in two maps: as many keys in all as two maps of "x","c" each, row by row)
        ('{"x":1,"c":2,"x":3}', '{"c":1,"x":2,"c":3}', '{"x":1,"c":2}'),
        ('{"x":1,"c":":"}', '{"x":1,"c":"a"}', '{"x":1,"c":"a"}'),
        ('{"x":1,"c":"a"}', '{"x" :1,"c":"a","x":2}', '{"x":1,"c":"a"}'),
        ('{"x":1,"c":"a"}', '{"\\u0078":1,"c":"a"}', '{"x":1,"c":"a"}'),
    ):
        records = raw([value(i, features) for i, features in enumerate(maps)], "predictions")
        batch = predictions_as_pydantic_reads(records)[0]
        assert len(batch) == 3
        if batch.features is not None:  # (the maps as read hold the same names in the same order)
            assert_columns_are_the_features(batch)


# Feature objects of the compiled pass's one layout ("x", then "c"), some spelled so that the keys'
# order can only be told by reading them: blanks around a colon, a repeated or escaped key, the
# names swapped, values that start with or hold a colon, a quote or a blank.
ODD_LAYOUTS = st.sampled_from([['"c":', '"x":'], ['"x":', '"c":', '"x":'], ['"c":', '"x":', '"c":'],
                               ['"x" :', '"c":'], ['"x":', '"c" :'], ['"c" :', '"x":', '"c":'], ['"x":'],
                               ['"\\u0078":', '"c":'], ['"x": ', '"c": '], ['"x":', '"c":', '"y":']])
LAYOUT_VALUES = st.sampled_from(["1", "2.5", "-0.0", '"a"', "null", "true"])
ODD_LAYOUT_VALUES = st.sampled_from(['":"', '": b"', '" a"', '"a:"', '"\\""'])


@st.composite
def one_layout_feature_batches(draw: st.DrawFn) -> list[str]:
    """Payloads of the compiled pass's shape; most feature objects plain (so the batch reaches the
    key-order check), some spelled oddly, now and then a value of the odd ones."""
    payloads = []
    for i in range(draw(st.integers(1, 8))):
        keys = ['"x":', '"c":'] if draw(st.integers(0, 3)) else draw(ODD_LAYOUTS)
        values = [draw(ODD_LAYOUT_VALUES if draw(st.integers(0, 9)) == 0 else LAYOUT_VALUES) for _ in keys]
        features = "{" + ",".join(key + value for key, value in zip(keys, values, strict=True)) + "}"
        payloads.append(f'{{"prediction_id":"p{i}","model_id":"m","timestamp":{T0},"features":{features},'
                        '"prediction":{"score":0.5}}')
    return payloads


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(one_layout_feature_batches())
def test_feature_maps_of_one_layout_spelled_oddly_read_as_pydantic_reads_them(payloads: list[str]) -> None:
    records = raw(payloads, "predictions")
    batch = predictions_as_pydantic_reads(records)[0]
    assert_columns_are_the_features(batch)
