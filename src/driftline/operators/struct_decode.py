"""The common batch's values parsed and type-checked in one compiled pass (``msgspec``), column by
column, without a dict per payload: the first try of :class:`~driftline.operators.columns.BatchDecoder`.
In front of it, where the install built it, the C pass (``_decode.c``, :mod:`decode_native`) reads
the batches it takes (a subset of these: no escapes, no repeated keys, no big integers) into the
same columns, values and types alike, in one pass over each payload's bytes.
A batch whose feature objects all name the same keys in the same order, each value a JSON scalar,
is read without a dict per event too: a tuple of values per event (:class:`FeatureRows`, a dict
made only when an event's map is read; see :func:`_feature_maps`); other batches' feature maps
are dicts.

Each value is decoded on its own into a typed struct that holds exactly the schema's common shape:
every field of its JSON type and range (names of 1..256 characters; a timestamp as a JSON integer
in the schema's range; an output object of label/score/value; a feature map as an object, whose
names and values the caller checks per layout, as it does orjson's). Whatever does not fit (an
extra key, a probabilities map, a shorthand output, a model version written as a number, a string
for a number, invalid JSON, ``NaN`` tokens, a number beyond float range, nesting too deep) makes
the whole batch ``None``: the caller's orjson path, which sends unusual records to pydantic one by
one, judges it instead. So this pass only accepts what pydantic accepts, with the values pydantic
holds; the caller still applies the checks that are not about the JSON's shape (event time against
the record's time, floats of magnitude 2**63 or more, feature layouts). Where orjson and pydantic's
parser differ, ``msgspec`` sides with pydantic: an integer literal beyond 64 bits stays an int, a
repeated key takes its last value.

Without ``msgspec`` installed (it comes with the worker extras) :func:`prediction_columns` and
:func:`label_columns` return None: the orjson path decodes every batch.

>>> columns = label_columns([b'{"prediction_id":"a","label":1,"timestamp":5}',
...                          b'{"timestamp":6,"label":"x","prediction_id":"b"}'], 1024)
>>> columns is None or (columns[0]["label"], sorted(columns[1]))
([1, 'x'], ['label', 'prediction_id', 'timestamp'])
>>> label_columns([b'{"prediction_id":"a","label":NaN,"timestamp":5}'], 1024) is None
True
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt

from driftline.operators import decode_native
from driftline.operators.feature_rows import FeatureRows, TypedFeatureRows
from driftline.schemas.events import MAX_NAME_LENGTH, SCHEMA_VERSION

Columns = tuple[dict[str, list[Any]], frozenset[str]]  # a list per field, and the fields the payloads named

_MAX_EPOCH_MS = 253_402_300_799_999

try:
    import msgspec
except ImportError:  # a light install: the orjson path decodes every batch
    msgspec = None  # type: ignore[assignment]

if msgspec is not None:
    from msgspec import UNSET, Meta, Struct, UnsetType

    Name = Annotated[str, Meta(min_length=1, max_length=MAX_NAME_LENGTH)]
    EpochMillis = Annotated[int, Meta(ge=0, le=_MAX_EPOCH_MS)]
    FeatureValue = bool | int | float | str | None

    class _Output(Struct, forbid_unknown_fields=True, gc=False):
        """The output object of one key set without probabilities (the columns' case)."""

        label: bool | int | str | UnsetType | None = UNSET
        score: float | UnsetType | None = UNSET
        value: float | UnsetType | None = UNSET

    class _Prediction(Struct, forbid_unknown_fields=True, gc=False):
        prediction_id: Name
        model_id: Name
        timestamp: EpochMillis
        prediction: _Output
        schema_version: Literal[1] | UnsetType = UNSET  # (SCHEMA_VERSION)
        model_version: Name | UnsetType = UNSET
        # kept as its JSON text, read by :func:`_feature_maps` (names, count and value types are
        # checked per layout by the caller, column by column)
        features: msgspec.Raw | UnsetType = UNSET
        latency_ms: Annotated[float, Meta(ge=0)] | UnsetType | None = UNSET
        segment: Annotated[dict[Name, Annotated[str, Meta(max_length=MAX_NAME_LENGTH)]],
                           Meta(max_length=16)] | UnsetType = UNSET

    class _Label(Struct, forbid_unknown_fields=True, gc=False):
        prediction_id: Name
        label: bool | int | float | str
        timestamp: EpochMillis
        schema_version: Literal[1] | UnsetType = UNSET
        model_id: Name | UnsetType | None = UNSET

    _PREDICTION_DECODE: Callable[[bytes], Any] = msgspec.json.Decoder(_Prediction).decode
    _FEATURES_DECODE: Callable[[bytes], Any] = msgspec.json.Decoder(dict[str, Any]).decode
    _LABEL_DECODE: Callable[[bytes], Any] = msgspec.json.Decoder(_Label).decode
    _DECODE_ERROR: type[Exception] = msgspec.DecodeError  # (ValidationError is one)

_PREDICTION_REQUIRED = ("prediction_id", "model_id", "timestamp", "prediction")
_PREDICTION_OPTIONAL = ("schema_version", "model_version", "features", "latency_ms", "segment")
_LABEL_REQUIRED = ("prediction_id", "label", "timestamp")
_LABEL_OPTIONAL = ("schema_version", "model_id")
_OUTPUT_FIELDS = ("label", "score", "value")


def _decoded(
    decode: Callable[[bytes], Any], values: Sequence[bytes | None], max_bytes: int
) -> list[Any] | None:
    """Each value decoded on its own, or None if any is missing, too large or does not fit."""
    try:
        if max(map(len, values)) > max_bytes:  # type: ignore[arg-type]
            return None
        return list(map(decode, values))  # type: ignore[arg-type]
    except (TypeError, RecursionError, _DECODE_ERROR):  # (a record without a value; nesting too deep)
        return None


def _named(
    events: Sequence[Any], required: Sequence[str], optional: Sequence[str]
) -> tuple[dict[str, list[Any]], frozenset[str]] | None:
    """A list per field (of the structs ``events``, whose fields are ``required`` and ``optional``),
    and the fields every payload named; None if some named an optional field that others left out
    (then pydantic's fields sets differ from event to event)."""
    n = len(events)
    if n:  # a tuple per event, transposed (0.12 against 0.38 us a prediction by a getter per field)
        fields = type(events[0]).__struct_fields__
        columns = dict(zip(fields, map(list, zip(*map(msgspec.structs.astuple, events), strict=True)),
                           strict=True))
    else:
        columns = {name: [] for name in (*required, *optional)}
    present = set(required)
    for name in optional:
        unset = columns[name].count(UNSET)
        if unset == 0:
            present.add(name)
        elif unset != n:
            return None
    return columns, frozenset(present)


def _common(values: Sequence[bytes | None], max_bytes: int, kind: str) -> Columns | None:
    """One kind's payloads decoded and named as columns, or None (no msgspec, or not the common shape)."""
    if msgspec is None:
        return None
    required: tuple[str, ...]
    optional: tuple[str, ...]
    if kind == "prediction":
        decode, required, optional = _PREDICTION_DECODE, _PREDICTION_REQUIRED, _PREDICTION_OPTIONAL
    else:
        decode, required, optional = _LABEL_DECODE, _LABEL_REQUIRED, _LABEL_OPTIONAL
    events = _decoded(decode, values, max_bytes)
    return None if events is None else _named(events, required, optional)


def prediction_columns(values: Sequence[bytes | None], max_bytes: int) -> tuple[Columns, Columns] | None:
    """The prediction payloads as columns and fields named, and their outputs likewise (defaults in
    place of the fields left out), or None when the batch is not all of the common shape.

    The C pass (:mod:`~driftline.operators.decode_native`) reads the batches it takes into the
    same columns; the rest go through msgspec."""
    if msgspec is None:
        return None
    fast = decode_native.NATIVE
    taken = None if fast is None else fast.predictions(values, max_bytes)
    if taken is not None:
        columns, output_columns = taken
        if "features" in columns:
            names, rows, *typed = columns["features"]
            columns["features"] = TypedFeatureRows(names, rows, tuple(typed))
        present = frozenset(columns).union(("prediction",))  # (its fields are the output columns)
        return _with_defaults(columns, present, output_columns, frozenset(output_columns))
    named = _common(values, max_bytes, "prediction")
    if named is None:
        return None
    columns, present = named
    outputs = _named(columns.pop("prediction"), (), _OUTPUT_FIELDS)
    if outputs is None:
        return None
    if "features" in present:
        maps = _feature_maps(columns["features"])
        if maps is None:
            return None
        columns["features"] = maps  # type: ignore[assignment]  # (a sequence: FeatureRows or dicts)
    return _with_defaults(columns, present, *outputs)


def _with_defaults(
    columns: dict[str, list[Any]], present: frozenset[str], output_columns: dict[str, list[Any]],
    output_present: frozenset[str],
) -> tuple[Columns, Columns]:
    """A prediction batch's columns with defaults in place of the fields its payloads left out."""
    n = len(columns["prediction_id"])
    for name, default in (("schema_version", SCHEMA_VERSION), ("model_version", "1"), ("latency_ms", None)):
        if name not in present:
            columns[name] = [default] * n
    for name in ("features", "segment"):
        if name not in present:
            columns[name] = [{} for _ in range(n)]
    for name in _OUTPUT_FIELDS:
        if name not in output_present:
            output_columns[name] = [None] * n
    return (columns, present), (output_columns, output_present)


def label_columns(values: Sequence[bytes | None], max_bytes: int) -> Columns | None:
    """The label payloads as columns (``model_id`` None where left out) and the fields named, or
    None when the batch is not all of the common shape (the C pass first, as for predictions)."""
    if msgspec is None:
        return None
    fast = decode_native.NATIVE
    taken = None if fast is None else fast.labels(values, max_bytes)
    if taken is not None:
        present = frozenset(taken)
        for name in _LABEL_OPTIONAL:
            if name not in present:  # (as the msgspec pass leaves a field no payload named)
                taken[name] = [UNSET] * len(taken["prediction_id"])
        named: Columns | None = (taken, present)
    else:
        named = _common(values, max_bytes, "label")
    if named is None:
        return None
    columns, present = named
    if "model_id" not in present:
        columns["model_id"] = [None] * len(columns["prediction_id"])
    return columns, present


# The layouts last used keep their decoder (and their key words): a stream of more layouts than
# this (many models, optional features) rebuilds only its rare ones, not every one after a purge.
_MAX_LAYOUT_DECODERS = 256
_QUOTE, _COLON = ord('"'), ord(":")


@functools.lru_cache(maxsize=_MAX_LAYOUT_DECODERS)
def _layout_decoder(names: tuple[str, ...]) -> Callable[[bytes], Any]:
    """A decoder of feature objects holding exactly ``names``, each value a JSON scalar, into one
    struct (no dict): its fields are positional names renamed to the features' (any text)."""
    fields = [f"f{j}" for j in range(len(names))]
    layout = msgspec.defstruct("_Layout", [(field, FeatureValue) for field in fields],
                               rename=dict(zip(fields, names, strict=True)),
                               forbid_unknown_fields=True, gc=False)
    decode: Callable[[bytes], Any] = msgspec.json.Decoder(layout).decode
    return decode


def _keys_in_order(texts: Sequence[bytes], names: tuple[str, ...]) -> bool:
    """Whether every one of the feature objects ``texts``, each read by the layout decoder of
    ``names`` (so holding each name at least once), names exactly ``names``, in that order, each once
    (false where it cannot tell at once: a backslash anywhere, a blank after a quote).

    Without a backslash every quote opens or closes a string, and with no blank after a quote a
    quote followed by a colon closes a key or opens a string value starting with a colon; every
    key's close is one of them. Each text holds all k names, so k such quotes at least: k per text
    in all means each text holds k keys (each name once) and no such value. Each key's bytes with
    its quotes, read back from its close 8 at a time, are then compared with its name's, all keys
    at once. (Only these quotes' positions are taken, not every quote's and their pairs': ~0.1 us
    less a prediction of 25 features.)

    >>> _keys_in_order([b'{"x":1,"c":"a:b"}', b'{"x":2,"c":"d"}'], ("x", "c"))
    True
    >>> _keys_in_order([b'{"a_name_past_8_bytes":1,"k":1}'], ("a_name_past_8_bytes", "k"))  # (words past)
    True
    >>> _keys_in_order([b'{"":1}', b'{"": "a b"}'], ("",))  # (a key shorter than a word; blanks elsewhere)
    True
    >>> [_keys_in_order([b'{"x":1,"c":"a"}', text], ("x", "c")) for text in (
    ...     b'{"c":"a","x":1}', b'{"x":1,"x":1,"c":"a"}', b'{"x":1,"c":"\\\\""}', b'{"x" :1,"c":"a"}',
    ...     b'{"y":1,"c":"a"}', b'{"xx":1,"c":"a"}', b'{"x":1,"c":":"}')]
    [False, False, False, False, False, False, False]
    >>> # (a blank hides a key: the next map's first key would fill its row)
    >>> _keys_in_order([b'{"x":1,"c" :2}', b'{"c":0,"x":1,"c":2}'], ("x", "c"))
    False
    """
    text = b"".join(texts)
    if b"\\" in text:
        return False
    back, words = _key_words(names)
    # (a word read from any key's opening quote fits; the byte after the last one is there)
    padded = text + bytes(8 * len(words))
    data = np.frombuffer(padded, dtype=np.uint8)
    quote = data[:-1] == _QUOTE
    after = data[1:]
    if (quote & (after <= 32)).any():
        return False
    closes = np.flatnonzero(quote & (after == _COLON))
    k = len(names)
    if len(closes) != k * len(texts):
        return False
    # each key's opening quote, were it its name's (a key of another length differs at that quote:
    # none holds a quote; a position before the text reads the first text's brace instead)
    opens = np.maximum(closes.reshape(-1, k) - back, 0)
    # the 8 bytes at each offset of the text as one little-endian word (a view: no copy)
    at = np.ndarray((len(padded) - 7,), dtype="<u8", buffer=padded, strides=(1,))
    for w, (want, mask) in enumerate(words):
        if not np.array_equal(at[opens + 8 * w] & mask, np.broadcast_to(want, opens.shape)):
            return False
    return True


@functools.lru_cache(maxsize=_MAX_LAYOUT_DECODERS)
def _key_words(names: tuple[str, ...]) -> tuple[npt.NDArray[np.int64], list[tuple[Any, Any]]]:
    """Per name, how far its key's opening quote is before its closing one (its length in UTF-8,
    plus one), and per 64-bit word of the longest key with its quotes: each one's bytes in that word
    (zeros past its end) and the mask of them, as little-endian words (:func:`_keys_in_order`)."""
    wanted = [b'"' + name.encode() + b'"' for name in names]
    words = []
    for w in range(-(-max(map(len, wanted)) // 8)):
        chunks = [key[8 * w : 8 * w + 8] for key in wanted]
        words.append((np.frombuffer(b"".join(chunk.ljust(8, b"\0") for chunk in chunks), dtype="<u8"),
                      np.frombuffer(b"".join((b"\xff" * len(chunk)).ljust(8, b"\0") for chunk in chunks),
                                    dtype="<u8")))
    return np.array([len(key) - 1 for key in wanted], dtype=np.int64), words


def _feature_maps(texts: Sequence[Any]) -> Sequence[dict[str, Any]] | None:
    """The feature maps of the feature objects ``texts`` (``msgspec.Raw``), or None if one is not a
    JSON object (or not one msgspec reads). A batch of one layout, every value a JSON scalar, comes
    out as :class:`FeatureRows` (a tuple of values per event, no dict); any other as a dict each.

    >>> maps = _feature_maps([msgspec.Raw(b'{"x":1.5,"c":"a"}'), msgspec.Raw(b'{"x":2,"c":null}')])
    >>> type(maps).__name__, list(maps)
    ('FeatureRows', [{'x': 1.5, 'c': 'a'}, {'x': 2, 'c': None}])
    >>> type(_feature_maps([msgspec.Raw(b'{"x":1}'), msgspec.Raw(b'{"y":1}')])).__name__
    'list'
    """
    try:
        first = _FEATURES_DECODE(texts[0])
        # (the layout's names come from the first object: one written with an escape may hold a
        # quote, a backslash or a control character, which msgspec refuses as a field's name, and
        # the key check refuses escapes anyway)
        if first and b"\\" not in bytes(texts[0]):
            names = tuple(first)
            try:
                structs = list(map(_layout_decoder(names), texts))
            except _DECODE_ERROR:  # another layout somewhere, or a value that is not a scalar
                pass
            else:
                if _keys_in_order(texts, names):
                    return FeatureRows(names, list(map(msgspec.structs.astuple, structs)))
        return list(map(_FEATURES_DECODE, texts))
    except (RecursionError, _DECODE_ERROR):
        return None
