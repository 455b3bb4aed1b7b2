"""The common batch's values parsed and type-checked in one compiled pass (``msgspec``), column by
column, without a dict per payload (the feature maps stay dicts): the first try of
:class:`~driftline.operators.columns.BatchDecoder`.

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

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Annotated, Any, Literal

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
        # (names, count and value types are checked per layout by the caller, column by column)
        features: dict[str, Any] | UnsetType = UNSET
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
    """A list per field, and the fields every payload named; None if some named an optional field
    that others left out (then pydantic's fields sets differ from event to event)."""
    n = len(events)
    columns = {name: list(map(attrgetter(name), events)) for name in (*required, *optional)}
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
    place of the fields left out), or None when the batch is not all of the common shape."""
    named = _common(values, max_bytes, "prediction")
    if named is None:
        return None
    columns, present = named
    outputs = _named(columns["prediction"], (), _OUTPUT_FIELDS)
    if outputs is None:
        return None
    n = len(columns["prediction"])
    for name, default in (("schema_version", SCHEMA_VERSION), ("model_version", "1"), ("latency_ms", None)):
        if name not in present:
            columns[name] = [default] * n
    for name in ("features", "segment"):
        if name not in present:
            columns[name] = [{} for _ in range(n)]
    output_columns, output_present = outputs
    for name in _OUTPUT_FIELDS:
        if name not in output_present:
            output_columns[name] = [None] * n
    return (columns, present), (output_columns, output_present)


def label_columns(values: Sequence[bytes | None], max_bytes: int) -> Columns | None:
    """The label payloads as columns (``model_id`` None where left out) and the fields named, or
    None when the batch is not all of the common shape."""
    named = _common(values, max_bytes, "label")
    if named is None:
        return None
    columns, present = named
    if "model_id" not in present:
        columns["model_id"] = [None] * len(columns["prediction_id"])
    return columns, present
