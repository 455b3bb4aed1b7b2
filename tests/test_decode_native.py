"""The batch decode's C pass (``operators/_decode.c``) against the msgspec pass it stands in front
of: whatever batch the C pass takes gives the very same columns (types, float bits, feature rows),
whatever it does not take is left to msgspec, and it takes the common batches (else the fast path
would silently never run)."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.operators import decode_native, struct_decode
from driftline.operators.columns import BatchDecoder
from driftline.operators.feature_rows import KIND_BOOL, KIND_FLOAT, KIND_INT, KIND_NONE, KIND_STR, FeatureRows
from driftline.operators.validate import Decoder, RawRecord

pytestmark = pytest.mark.skipif(decode_native._decode is None or struct_decode.msgspec is None,
                                reason="the C decode pass (or msgspec) is not built in this install")
NATIVE = decode_native._decode
T0 = 1_767_225_600_000
MAX_BYTES = 1 << 20


@pytest.fixture(autouse=True)
def restored() -> Iterator[None]:
    before = decode_native.NATIVE
    yield
    decode_native.NATIVE = before


def _canonical(value: Any) -> Any:
    """``value`` with every scalar tagged by its type and every float by its bits (1 is not 1.0 or
    True, -0.0 is not 0.0), FeatureRows as its names and rows."""
    if isinstance(value, FeatureRows):
        return ("FeatureRows", _canonical(value.names), _canonical(value.rows))
    if isinstance(value, dict):
        return ("dict", sorted((_canonical(k), _canonical(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_canonical(v) for v in value])
    if isinstance(value, frozenset):
        return ("frozenset", sorted(value))
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    return (type(value).__name__, repr(value))


def _both(kind: str, payloads: list[bytes]) -> tuple[Any, Any, Any]:
    """The C pass's raw answer, and the decode with it and with msgspec alone."""
    raw = NATIVE.predictions(payloads, MAX_BYTES) if kind == "p" else NATIVE.labels(payloads, MAX_BYTES)
    decode = struct_decode.prediction_columns if kind == "p" else struct_decode.label_columns
    decode_native.NATIVE = NATIVE
    fast = decode(payloads, MAX_BYTES)
    decode_native.NATIVE = None
    slow = decode(payloads, MAX_BYTES)
    return raw, fast, slow


def _check(kind: str, payloads: list[bytes]) -> Any:
    raw, fast, slow = _both(kind, payloads)
    if slow is None:  # (the C pass takes a subset of what msgspec takes)
        assert raw is None and fast is None, payloads
    assert _canonical(fast) == _canonical(slow), payloads
    return raw


# JSON numbers written many ways: integers up to and past 18 digits, -0, exponents, fractions with
# many digits, near the float range's ends (subnormals, overflow), leading-zero and malformed ones.
_ODD_NUMBERS = st.sampled_from([
    "1e400", "-1e400", "5e-324", "1e-400", "1234567890123456789", "9223372036854775807",
    "9223372036854775808", "9999999999999999999", "123456789012345678901234567890", "01", "1.", ".5", "1e",
    "-", "+1", "1.7976931348623159e308"])
_NUMBER_TEXTS = st.one_of(
    st.sampled_from(["0", "-0", "1", "-7", "1.5", "-0.0", "0.0", "1E2", "1e+2", "2.5e-3", "1e300", "9.3e18",
                     "2.2250738585072014e-308", "0e5", "0.000001", "123456789012345678",
                     "0.1234567890123456789012", "9007199254740993", "9007199254740993.0", "4.35679e22",
                     "1.7976931348623157e308"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: f"{f:.17g}"),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(lambda f: f"{f:.6e}"),
    st.integers(-10**18 + 1, 10**18 - 1).map(str),
    st.tuples(st.integers(0, 10**22), st.integers(0, 25), st.integers(-330, 310)).map(
        lambda t: f"{t[0] / 10**t[1]!r}e{t[2]}" if t[1] else f"{t[0]}e{t[2]}"),
)
_TEXT_VALUES = st.one_of(
    st.sampled_from(['"a"', '""', '"é"', '"日本"', '"a:b"', '"a b"', '"' + "é" * 256 + '"']),
    st.text(max_size=8).map(lambda s: '"' + "".join(c for c in s if c not in '\\"' and c >= " "
                                                    and not 0xD800 <= ord(c) < 0xE000) + '"'),
)
_ODD_TEXTS = st.sampled_from(['" a"', '":a"', '"a "', '"\\u00e9"', '"\\"q"', '"\t"'])
_SCALARS = st.one_of(_NUMBER_TEXTS, _TEXT_VALUES, st.sampled_from(["true", "false", "null"]))
_ODD_SCALARS = st.one_of(_ODD_NUMBERS, _ODD_TEXTS, st.sampled_from(["[1]", "{}", "nul", "True"]))
_NAMES = st.sampled_from(['"p"', '"q"', '"é"', '"' + "i" * 256 + '"', '"' + "é" * 256 + '"'])
_ODD_NAMES = st.sampled_from(['""', '"' + "i" * 257 + '"', '"' + "é" * 257 + '"', '"a\\"b"', "1", "null"])
_BLANKS = st.sampled_from(["", "", "", " ", "\n\t ", "\r"])


@st.composite
def _prediction_batches(draw: st.DrawFn) -> list[bytes]:
    """Batches of one shape, most of them taken by the C pass: in a wild batch (one in three) any
    value may be an odd one (of another type, out of range, escaped, malformed)."""
    wild = draw(st.integers(0, 2)) == 0

    def pick(usual: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> str:
        return draw(odd) if wild and draw(st.integers(0, 7)) == 0 else draw(usual)

    third = draw(st.sampled_from(["c", "a name past 8 bytes", "é", ":k", ""]))
    names = draw(st.permutations(["x", "y", third]))
    optional = draw(st.sets(st.sampled_from(["features", "latency_ms", "model_version", "schema_version",
                                             "segment"])))
    output_fields = draw(st.sampled_from([("label",), ("score",), ("label", "score"), ("value",), (),
                                          ("score", "value", "label")]))
    blank = draw(_BLANKS)
    payloads = []
    for _ in range(draw(st.integers(1, 5))):
        model = pick(st.sampled_from(['"m"', '"é"']), _ODD_NAMES)
        time = pick(st.sampled_from([str(T0), "0", "253402300799999"]),
                    st.sampled_from(["-1", "253402300800000", "1E2", str(2**64), "1.0"]))
        fields = [f'"prediction_id":{pick(_NAMES, _ODD_NAMES)}', f'"model_id":{model}', f'"timestamp":{time}']
        kinds = {"label": pick(st.one_of(_NUMBER_TEXTS.filter(lambda t: not any(c in t for c in ".eE")),
                                         _TEXT_VALUES, st.sampled_from(["true", "null"])), _ODD_SCALARS),
                 "score": pick(st.one_of(_NUMBER_TEXTS, st.just("null")), st.sampled_from(["true", '"1"'])),
                 "value": pick(_NUMBER_TEXTS, _ODD_NUMBERS), "extra": "1"}
        keys = list(output_fields) + (["extra"] if wild and not draw(st.integers(0, 30)) else [])
        if wild and keys and not draw(st.integers(0, 10)):
            keys.pop()  # (an output field the other payloads name)
        fields.append('"prediction":{' + ",".join(f'"{k}":{kinds[k]}' for k in keys) + "}")
        if "features" in optional:
            order = names if not wild or draw(st.integers(0, 6)) else list(reversed(names))
            pairs = [f'"{k}"{blank}:{blank}{pick(_SCALARS, _ODD_SCALARS)}' for k in order]
            if wild and not draw(st.integers(0, 12)):
                pairs.append(f'"x":{draw(_SCALARS)}')
            empty = wild and not draw(st.integers(0, 20))
            fields.append('"features":{}' if empty else '"features":{' + ("," + blank).join(pairs) + "}")
        if "latency_ms" in optional:
            fields.append('"latency_ms":' + pick(st.one_of(_NUMBER_TEXTS.map(lambda t: t.lstrip("-")),
                                                           st.sampled_from(["null", "-0", "-0.0"])),
                                                 st.sampled_from(["-1", "-1e-300", "true"])))
        if "model_version" in optional:
            fields.append('"model_version":' + pick(st.just('"2"'), st.sampled_from(['""', "3", "null"])))
        if "schema_version" in optional:
            fields.append('"schema_version":' + pick(st.just("1"), st.sampled_from(["2", "1.0", "true"])))
        if "segment" in optional:
            texts = st.sampled_from(['"eu"', '""', '"' + "v" * 256 + '"'])
            odd_texts = st.sampled_from(["1", '"' + "v" * 257 + '"'])
            keys = draw(st.lists(st.sampled_from(["region", "tier", "é"]), max_size=3, unique=True))
            if wild and not draw(st.integers(0, 4)):
                keys.append(draw(st.sampled_from(["", "region"])))  # (an empty name; one twice)
            fields.append('"segment":{' + ",".join(f'"{k}":{pick(texts, odd_texts)}' for k in keys) + "}")
        if wild and not draw(st.integers(0, 20)):
            fields.append(draw(st.sampled_from(['"extra":1', '"timestamp":5'])))  # (unknown; twice)
        if wild and not draw(st.integers(0, 20)):
            fields.pop(draw(st.integers(0, 3)))  # (a required field left out)
        text = "{" + blank + ("," + blank).join(draw(st.permutations(fields))) + blank + "}"
        if wild and not draw(st.integers(0, 20)):
            text += draw(st.sampled_from([" ", "x", "}"]))
        payloads.append(text.encode())
    return payloads


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_prediction_batches())
def test_a_prediction_batch_decodes_as_the_msgspec_pass_decodes_it(payloads: list[bytes]) -> None:
    _check("p", payloads)


def _decoded_batch(payloads: list[bytes]) -> Any:
    """The batch decoder's events, dead letters and checked feature columns, float bits included."""
    decoder = Decoder(max_message_bytes=MAX_BYTES, max_timestamp_skew_ms=10**16, max_future_skew_ms=10**16)
    records = [RawRecord("t", 0, offset, T0, None, value) for offset, value in enumerate(payloads)]
    batch, dead = BatchDecoder(decoder).predictions(records)
    features = None if batch.features is None else (
        batch.features.names, _canonical(batch.features.columns),
        [None if a is None else (a.dtype.str, a.tobytes()) for a in batch.features.numbers])
    return ([repr(e.model_dump()) for e in batch.events], [d.model_dump() for d in dead], features,
            _canonical(batch.feature_maps))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_prediction_batches())
def test_the_checked_feature_columns_are_those_of_the_msgspec_pass(payloads: list[bytes]) -> None:
    decode_native.NATIVE = NATIVE
    fast = _decoded_batch(payloads)
    decode_native.NATIVE = None
    assert fast == _decoded_batch(payloads)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.one_of(_NAMES, _NAMES, _ODD_NAMES), st.one_of(_SCALARS, _SCALARS, _ODD_SCALARS)),
                min_size=1, max_size=6),
       st.sampled_from(["", ',"model_id":"m"', ',"model_id":null', ',"model_id":""', ',"schema_version":1',
                        ',"schema_version":1,"model_id":"m"', ',"x":1']),
       _BLANKS)
def test_a_label_batch_decodes_as_the_msgspec_pass_decodes_it(
    pairs: list[tuple[str, str]], extra: str, blank: str
) -> None:
    _check("l", [f'{{"prediction_id":{i},{blank}"label":{label},"timestamp":{T0}{extra}}}'.encode()
                 for i, label in pairs])


@settings(max_examples=500, deadline=None)
@given(st.one_of(_NUMBER_TEXTS, _ODD_NUMBERS))
def test_a_float_is_the_double_closest_to_its_text(number: str) -> None:
    raw = NATIVE.labels([f'{{"prediction_id":"p","label":{number},"timestamp":5}}'.encode()], MAX_BYTES)
    try:
        want: Any = float(number) if any(c in number for c in ".eE") else int(number)
    except ValueError:  # (not a JSON number Python reads the same way: not taken)
        want = None
    if raw is not None:
        (got,) = raw["label"]
        assert type(got) is type(want) and (got == want or math.copysign(1, got) == math.copysign(1, want))
        assert _canonical(got) == _canonical(want)


def _many_digit_texts(rng: np.random.Generator) -> list[str]:
    """Float texts past Clinger's case, for the 128-bit path and its boundaries: the repr of random
    doubles of every exponent (subnormals too), 17-19 digit decimals at every power of ten in float
    range and past it, exact ties between two doubles (2**53 + 1 and up: the path must leave each
    to CPython) and the neighbours of powers of ten."""
    bits = rng.integers(0, 2**63, 60_000, dtype=np.int64).view(np.float64)
    texts = [repr(x) for x in bits.tolist() if math.isfinite(x)]
    digits = rng.integers(10**16, 10**19, 60_000, dtype=np.uint64).tolist()
    powers = rng.integers(-360, 330, 60_000).tolist()
    texts += [f"{w}e{q}" for w, q in zip(digits, powers, strict=True)]
    doubles = rng.integers(2**53, 10**19, 20_000, dtype=np.uint64).astype(np.float64).tolist()
    texts += [f"{int(x) + int(math.ulp(x)) // 2}.0" for x in doubles]  # exact ties
    for k in range(-330, 310):
        ten = float(f"1e{k}")
        texts += [repr(math.nextafter(ten, 0.0)), repr(math.nextafter(ten, math.inf)), f"{10**18}e{k - 18}"]
    return [t for t in texts if math.isfinite(float(t))]


def test_a_float_of_many_digits_is_the_double_closest_to_its_text() -> None:
    texts = _many_digit_texts(np.random.default_rng(7))
    got: list[float] = []
    for i in range(0, len(texts), 2_000):
        raw = NATIVE.labels([f'{{"prediction_id":"p","label":{t},"timestamp":5}}'.encode()
                             for t in texts[i: i + 2_000]], MAX_BYTES)
        assert raw is not None
        got += raw["label"]
    want = [float(t) for t in texts]
    wrong = [(t, g, w) for t, g, w in zip(texts, got, want, strict=True) if _canonical(g) != _canonical(w)]
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("old, new", [
    (b'"x0":1e-3', b'"x0":1e19'),  # a float of 2**63 or more in a float column
    (b'"gone":2.5', b'"gone":-1e19'),  # and in a column of floats and nulls
    (b'"gone":2.5', b'"gone":3e300'),
    (b'"n":-4', b'"n":-4.5'),  # (small floats among ints: nothing unusual)
])
def test_a_float_pydantic_must_judge_is_found_in_the_typed_columns(old: bytes, new: bytes) -> None:
    payloads = [_COMMON[0], _COMMON[1].replace(old, new)] * 3
    assert payloads[1] != _COMMON[1] and NATIVE.predictions(payloads, MAX_BYTES) is not None
    decode_native.NATIVE = NATIVE
    fast = _decoded_batch(payloads)
    decode_native.NATIVE = None
    assert fast == _decoded_batch(payloads)
    assert (fast[2] is None) == (b"e19" in new or b"e300" in new)  # (such rows go to pydantic)


# What a model server writes: the simulator's and the benches' payloads, one layout a batch.
_COMMON = [
    (b'{"schema_version":1,"prediction_id":"bench-0-6-v1","model_id":"bench","model_version":"1",'
     b'"timestamp":1767225600060,"features":{"x0":42.5263,"x1":-6.265,"c0":"b","flag":true,"n":3,'
     b'"gone":null},"prediction":{"label":1,"score":0.8731},"latency_ms":4.25,"segment":{"region":"eu"}}'),
    (b'{"schema_version":1,"prediction_id":"bench-0-7-v1","model_id":"bench","model_version":"1",'
     b'"timestamp":1767225600061,"features":{"x0":1e-3,"x1":0,"c0":"a","flag":false,"n":-4,'
     b'"gone":2.5},"prediction":{"label":0,"score":0.0031},"latency_ms":0,"segment":{"region":"us"}}'),
]
_LABEL = b'{"prediction_id":"bench-0-6-v1","label":1,"timestamp":1767225600900,"model_id":"bench"}'


def test_the_common_batches_are_taken_by_the_c_pass() -> None:
    raw = _check("p", _COMMON * 50)
    assert raw is not None
    columns, outputs = raw
    names, rows, feature_columns, kinds, doubles = columns["features"]
    assert names == ("x0", "x1", "c0", "flag", "n", "gone") and len(rows) == 100
    assert rows[1] == (1e-3, 0, "a", False, -4, 2.5) and type(rows[1][1]) is int
    # each name's values as a column, the kinds of its values, its floats as doubles
    assert [column[:2] for column in feature_columns] == [list(pair) for pair in zip(*rows[:2], strict=True)]
    assert kinds == (KIND_FLOAT, KIND_FLOAT | KIND_INT, KIND_STR, KIND_BOOL, KIND_INT, KIND_NONE | KIND_FLOAT)
    block = np.frombuffer(doubles, dtype=np.float64).reshape(6, 100)
    assert block[:, :2].tolist() == [[42.5263, 1e-3], [-6.265, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0],
                                     [0.0, 2.5]]
    assert outputs == {"label": [1, 0] * 50, "score": [0.8731, 0.0031] * 50}
    assert _check("l", [_LABEL] * 10) is not None
    fast = struct_decode.prediction_columns(_COMMON, MAX_BYTES)
    assert fast is not None and isinstance(fast[0][0]["features"], FeatureRows)


@pytest.mark.parametrize("payload", [
    _COMMON[0].replace(b'"c0":"b"', b'"c0":"b\\n"'),  # an escape
    _COMMON[0].replace(b'"x1":-6.265', b'"x1":-6.265,"x0":1'),  # a repeated feature name
    _COMMON[0].replace(b'"n":3', b'"n":12345678901234567890'),  # past 18 digits
    _COMMON[0].replace(b'"x0":42.5263', b'"x0":[1]'),  # a nested value
    _COMMON[0].replace(b'"c0":"b"', b'"c0" :"b"'),  # a blank after a quote in the features
    _COMMON[0].replace(b'"latency_ms":4.25', b'"latency_ms":4.25,"latency_ms":4.25'),  # a repeated field
])
def test_what_the_c_pass_leaves_is_decoded_by_msgspec(payload: bytes) -> None:
    for batch in ([_COMMON[1], payload], [payload, payload]):
        assert _check("p", batch) is None
        assert struct_decode.prediction_columns(batch, MAX_BYTES) is not None


@pytest.mark.parametrize("batch", [
    [_COMMON[0], _COMMON[1].replace(b',"score":0.0031', b"")],  # an output field one payload leaves out
    [_COMMON[0], _COMMON[1].replace(b',"latency_ms":0', b"")],  # an optional field likewise
    [_COMMON[0].replace(b"1767225600060", b"253402300800000")],  # an event time past the schema's range
    [_COMMON[0].replace(b'"n":3', b'"n":03')],  # a leading zero: not JSON
    [_COMMON[0].replace(b'"score":0.8731', b'"score":true')],  # a bool for a float
    [_COMMON[0].replace(b'"model_version":"1"', b'"model_version":null')],  # null for a name
])
def test_a_batch_the_msgspec_pass_refuses_the_c_pass_refuses(batch: list[bytes]) -> None:
    assert _check("p", batch) is None
    assert struct_decode.prediction_columns(batch, MAX_BYTES) is None


def test_a_segment_is_bounded_once_a_repeated_name_kept_its_last_text() -> None:
    pairs = [b'"k%d":"v"' % i for i in range(16)]
    for extra, taken in ((b'"k0":"w"', True), (b'"k16":"v"', False)):
        payload = _COMMON[0].replace(b'{"region":"eu"}', b"{" + b",".join([*pairs, extra]) + b"}")
        raw = _check("p", [payload])
        assert (raw is not None) == taken
        if taken:
            assert raw[0]["segment"][0]["k0"] == "w" and len(raw[0]["segment"][0]) == 16


def test_a_batch_of_two_layouts_goes_to_msgspec_whose_maps_are_dicts() -> None:
    other = _COMMON[1].replace(b'"x0":1e-3,"x1":0', b'"x1":0,"x0":1e-3')
    assert _check("p", [_COMMON[0], other]) is None
    fast = struct_decode.prediction_columns([_COMMON[0], other], MAX_BYTES)
    assert fast is not None and type(fast[0][0]["features"]) is list


@pytest.mark.parametrize("text", [b"\xff", b"\xed\xa0\x80", b"\xc3"])  # (not UTF-8; a surrogate; cut short)
def test_a_text_that_is_not_utf8_is_not_taken(text: bytes) -> None:
    assert _check("p", [_COMMON[0].replace(b'"c0":"b"', b'"c0":"' + text + b'"')]) is None
    assert _check("l", [_LABEL.replace(b'"label":1', b'"label":"' + text + b'"')]) is None


def test_values_not_bytes_or_too_long_are_not_taken() -> None:
    assert NATIVE.predictions([_COMMON[0], None], MAX_BYTES) is None
    assert NATIVE.predictions(_COMMON, len(_COMMON[0]) - 1) is None
    assert NATIVE.predictions([], MAX_BYTES) is None and NATIVE.labels([bytearray(_LABEL)], MAX_BYTES) is None


def test_the_texts_a_batch_repeats_are_one_str_each_and_none_is_kept_past_the_batch() -> None:
    """Model ids, versions, categories, class labels and segment texts repeated over a batch come
    as one str each (downstream groupings and look-ups then hash each once); texts that share a
    slot of the C pass's table displace each other and still decode as msgspec decodes them; and
    no str of one batch is handed out again in the next (the table is emptied after each)."""
    payloads = [_COMMON[i % 2].replace(b"bench-0-", b"p%d-" % i) for i in range(40)]
    columns, _ = NATIVE.predictions(payloads, MAX_BYTES)
    rows = columns["features"][1]
    for name in ("model_id", "model_version"):
        assert len(set(map(id, columns[name]))) == 1
    assert len({id(row[2]) for row in rows}) == 2  # "b" and "a"
    assert len({id(segment["region"]) for segment in columns["segment"]}) == 2
    assert len(set(map(id, columns["prediction_id"]))) == 40
    again, _ = NATIVE.predictions(payloads, MAX_BYTES)
    assert again["model_id"][0] == columns["model_id"][0]
    assert again["model_id"][0] is not columns["model_id"][0]
    assert again["features"][1][0][2] is not rows[0][2]
    labels = NATIVE.labels([_LABEL.replace(b'"label":1', b'"label":"yes"')] * 3, MAX_BYTES)
    assert len(set(map(id, labels["label"]))) == 1 and labels["label"][0] == "yes"
    assert NATIVE.labels([_LABEL.replace(b'"label":1', b'"label":"yes"')], MAX_BYTES)["label"][0] \
        is not labels["label"][0]
    # 2,000 distinct categories and model ids in one batch: every slot taken and displaced
    many = [_COMMON[0].replace(b'"c0":"b"', b'"c0":"v%d"' % i)
            .replace(b'"model_id":"bench"', b'"model_id":"m%d"' % (i % 700)) for i in range(2000)]
    _check("p", many)
    decoded = NATIVE.predictions(many, MAX_BYTES)[0]
    assert [row[2] for row in decoded["features"][1]] == [f"v{i}" for i in range(2000)]
    assert decoded["model_id"] == [f"m{i % 700}" for i in range(2000)]
