"""Event-time interval join of predictions and labels for one shard.

A label joins its prediction iff ``0 <= label_ts - pred_ts <= horizon_ms``. Results are a function
of the two input logs only, never of how they interleave or of when :meth:`LabelJoin.advance` is
called, provided the caller keeps the contract of the architecture:

- only non-late events are fed (``ts >= watermark`` of their own topic before the event), and
- ``advance`` gets watermarks (``max ts seen - allowed lateness``) of events already fed.

Rules, each chosen so that it cannot depend on the interleaving:

- **First label wins**, in label-log order; later labels inside the same prediction's interval are
  counted as ``duplicate_labels``.
- **A label earlier than its prediction does not join** (no clamping to a zero delay): such a label
  is held like any unmatched label and becomes an orphan when the predictions watermark passes its
  timestamp. Clamping would make the result depend on whether the prediction arrived before that
  watermark did, i.e. on the interleaving.
- **Duplicate predictions**: a prediction whose id was accepted before at ``ts0`` is ignored and
  counted iff ``ts <= ts0 + horizon_ms``. A later reuse of the id starts a new prediction; the two
  intervals are then disjoint, so a label matches at most one of them.
- **Exact or conflicting**: every duplicate (prediction or label) is also reported in
  :meth:`LabelJoin.take_duplicates` as a :class:`Duplicate`, ``exact`` iff its payload digest
  equals the digest of the record that won (an at-least-once re-send), else a conflict (same id,
  other content). Each record keeps the 8-byte digest of its payload; a joined one also the
  digest of its label. Ids are remembered as long as expiry needs them (below); a re-send after
  that is late by construction (its time is under both watermarks) and lands in ``late_events``.
- **Held labels** wait for their prediction until ``pred_watermark > label_ts`` and are then
  ``orphan_labels``. A label matching an evicted prediction is an orphan too.
- **Expiry**: a pending prediction is expired (unlabeled) once ``label_watermark > pred_ts +
  horizon_ms``, with ``expired_at = pred_ts + horizon_ms``; its id is forgotten once both watermarks
  passed that time (it is still needed to recognise duplicate predictions and labels until then).

Not interleaving-independent, by nature: the bounds. When ``max_pending``/``max_held`` is hit the
oldest entry (smallest event time) is evicted and counted; how full the state is depends on how far
one topic runs ahead of the other. An evicted prediction is reported by the next
:meth:`LabelJoin.advance` like an expired one, with reason ``'evicted'`` and
``expired_at = pred_ts + horizon_ms`` (the interval it would have expired in); an evicted label
becomes an orphan with reason ``'evicted'``. ``labels_beyond_horizon`` and
``labels_before_prediction`` are diagnostics: counted when such a label arrives while its
prediction is still remembered; the label is also counted in ``orphan_labels`` when it is finally
given up.

State is compact, so a shard can hold millions of pending predictions (``bench/bench_join_state.py``
measures the bytes per pending prediction): each prediction is one packed record -- its id (16 raw
bytes for a canonical UUID, else UTF-8), event time, state and payload digest, once joined its
context and the label's digest, and while pending its context, prediction and features (floats
as packed doubles, the other values as JSON, names interned per feature layout). Records live in
a linear-hashing table of ``bytes`` groups (a few records each, chosen by the CRC-32 of the id),
so there is no Python object per prediction; a time index of id hashes per second of event time
drives expiry, eviction and forgetting.

>>> from driftline.schemas.events import LabelEvent, PredictionEvent
>>> join = LabelJoin(horizon_ms=60_000, max_pending=1000, max_held=1000)
>>> pred = PredictionEvent(prediction_id="p1", model_id="m", timestamp=1_000,
...                        features={"x": 0.5, "c": "a"}, prediction={"label": "yes"})
>>> join.on_prediction(pred, segment="") is None, join.pending_count
(True, 1)
>>> out = join.on_label(LabelEvent(prediction_id="p1", label="yes", timestamp=4_000))
>>> out.label_delay_ms, out.correct, out.features_json
(3000, 1, '{"x":0.5,"c":"a"}')
>>> join.on_label(LabelEvent(prediction_id="p1", label="yes", timestamp=4_000))
>>> join.on_label(LabelEvent(prediction_id="p1", label="no", timestamp=4_000))
>>> [(d.kind, d.exact, d.model_id) for d in join.take_duplicates()]
[('label', True, 'm'), ('label', False, 'm')]
>>> late = PredictionEvent(prediction_id="p2", model_id="m", timestamp=2_000, prediction=0.3)
>>> join.on_prediction(late, segment="region=eu")
>>> [(e.prediction_id, e.segment, e.expired_at) for e in join.advance(70_000, label_watermark_ms=62_001)]
[('p2', 'region=eu', 62000)]
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import functools
import hashlib
import heapq
import json
import math
import operator
import pickle
import struct
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import orjson

from driftline.operators.columns import OutputColumns
from driftline.operators.pending_store import PendingStore, PinnedSegments
from driftline.operators.window_stats import MAX_ABS_VALUE
from driftline.schemas.events import LabelEvent, Prediction, PredictionEvent

COUNTER_NAMES = (
    "duplicate_predictions",
    "duplicate_labels",
    "orphan_labels",
    "labels_beyond_horizon",
    "labels_before_prediction",
    "evicted_pending",
    "evicted_held",
)

_BUCKET_MS = 1000
"""Time index granularity: expiry scans at most one partially expired bucket per advance."""
_MAX_SHAPES = 4096
"""Feature layouts interned; beyond this (e.g. free-form feature names) features are kept as JSON."""
_NO_SHAPE = 0xFFFF
_NO_LABEL = 0xFFFFFFFF
_NEVER = -(2**62)
_MIN_GROUPS = 64
_LOAD = 4
"""Records per group on average: linear hashing splits one group whenever the average passes it."""

_PENDING, _JOINED, _CLOSED = 0, 1, 2
# A record: length (of the whole record), CRC-32 of the id key | id key | event time, state | payload
# digest | pending only: flags, ctx id, shape id, label length, [score], [value], label text,
# features | joined only: ctx id, label digest. The id key is a 16-bit code (_UUID_CODE: 16 raw bytes
# follow, else the UTF-8 length) and the id bytes.
_HEAD = struct.Struct("<II")
_AT = _HEAD.size  # where the id key starts
_CODE = struct.Struct("<H")
_TS = struct.Struct("<qB")
DIGEST_SIZE = 8
_DIGEST_AT = _TS.size  # offset of the digest after the id key
_BODY = _TS.size + DIGEST_SIZE  # offset of the pending/joined part after the id key
_JOINED_TAIL = struct.Struct("<I8s")  # ctx id, label digest
_NO_CTX = 0xFFFFFFFF
_RECORD_FORMAT = 2  # 1: before payload digests
UNKNOWN_DIGEST = bytes(DIGEST_SIZE)
"""Digest of records restored from a checkpoint that predates digests: any duplicate of it is exact."""
_PRED = struct.Struct("<BIHI")
_JOINED_STATE = bytes([_JOINED])
_PENDING_HEADS: dict[int, struct.Struct] = {}
"""A pending record's fixed part (_HEAD, id key, _TS, digest, _PRED) per id key length."""


def _pending_head(key_length: int) -> struct.Struct:
    """:data:`_PENDING_HEADS`' entry for ``key_length``, made on first use."""
    head = _PENDING_HEADS.get(key_length)
    if head is None:
        head = _PENDING_HEADS[key_length] = struct.Struct(f"<II{key_length}sqB{DIGEST_SIZE}sBIHI")
    return head
_DOUBLE = struct.Struct("<d")
_UUID_CODE = 0xFFFF
_UUID_PREFIX = _CODE.pack(_UUID_CODE)
_HAS_SCORE, _HAS_VALUE, _REROUTED = 1, 2, 4
_SPILLED = 8
"""In memory only, never in a checkpoint: the payload after the flags..label length is in the
pending store, and the record holds its reference instead (see :meth:`LabelJoin.set_memory_budget`)."""
_NO_BUDGET = 2**62
_STUB_LENGTH = struct.Struct("<I")  # a record's length, rewritten in place when it is spilled or read back
_BIGINT_JSON = b"!"  # marks non-float values that orjson cannot encode (ints beyond 64 bits)
FloatArray = npt.NDArray[np.float64]


@dataclass(slots=True)
class JoinedOutcome:
    """A prediction with its label: one row of the ``outcomes`` table."""

    prediction_id: str
    model_id: str
    model_version: str
    segment: str
    prediction_time: int
    label_time: int
    label_delay_ms: int
    predicted_label: str
    predicted_score: float | None
    predicted_value: float | None
    label: str
    label_value: float | None
    correct: int | None
    abs_error: float | None
    features_json: str
    rerouted: int = 0
    """Which side reached the join through re-routing: ``REROUTED_PREDICTION | REROUTED_LABEL`` bits."""


REROUTED_PREDICTION, REROUTED_LABEL = 1, 2


@dataclass(slots=True)
class OrphanLabel:
    """A label no prediction joined (``reason`` 'no_prediction'), or one dropped to keep the held
    labels under their bound ('evicted'). ``model_id`` is the one the label names, '' if none."""

    prediction_id: str
    model_id: str
    label_time: int
    reason: str
    source_partition: int = -1  # the label's record, where its source has one (-1: unknown)
    source_offset: int = -1


def _record_position(source: Any) -> tuple[int, int]:
    """(partition, offset) of a source record (a Kafka record), (-1, -1) for anything else."""
    partition, offset = getattr(source, "partition", -1), getattr(source, "offset", -1)
    return (partition, offset) if isinstance(partition, int) and isinstance(offset, int) else (-1, -1)


@dataclass(slots=True)
class Duplicate:
    """A prediction or label whose id (and interval) was taken already; the first one stays.

    ``exact``: the same payload as the first (a re-send); else a conflict. ``model_id``,
    ``model_version`` and ``segment`` are the accepted prediction's. ``source`` is what the caller
    passed along with the duplicate event (e.g. its Kafka record), for its dead letter.
    """

    kind: str  # 'prediction' | 'label'
    prediction_id: str
    event_time: int
    exact: bool
    first_digest: bytes
    digest: bytes
    model_id: str
    model_version: str
    segment: str
    source: Any


def payload_digest(payload: bytes) -> bytes:
    """The digest records keep of a payload (BLAKE2b, 8 bytes).

    >>> payload_digest(b'{"prediction_id":"p"}').hex()
    'fa12c8d55993cd5f'
    """
    hasher = _FRESH_BLAKE2B.copy()  # a copy of a fresh state: ~0.15 us less than the constructor
    hasher.update(payload)
    return hasher.digest()


_FRESH_BLAKE2B = hashlib.blake2b(digest_size=DIGEST_SIZE)
"""Never updated: :func:`payload_digest` hashes into copies of it."""


def _event_digest(event: PredictionEvent | LabelEvent) -> bytes:
    return payload_digest(event.model_dump_json().encode())


@dataclass(frozen=True, slots=True)
class JoinChanges:
    """A join's changes since a checkpoint: the current bytes of every record added
    (``records``, concatenated), the (id key, event time) of those forgotten again (``gone``),
    the state outside the record table (``state``), and a closing (:func:`_closing`: id key, time,
    state, label digest; 21-35 bytes where the closed record takes 43-63) of every record the
    chain held pending that was closed since (``closings``, concatenated; delta format 5: before,
    such a record came whole in ``records``). Records forgotten that were not added need no
    entry: forgetting is a function of the watermarks in ``state``."""

    records: bytes
    gone: list[tuple[bytes, int]]
    state: dict[str, Any]
    closings: bytes = b""


@dataclass(slots=True)
class ExpiredPrediction:
    """A prediction that will get no label (bucketed at ``expired_at``): its horizon passed
    (``reason`` 'horizon') or it was dropped at the ``max_pending`` bound ('evicted')."""

    prediction_id: str
    model_id: str
    model_version: str
    segment: str
    prediction_time: int
    expired_at: int
    reason: str = "horizon"


class _Shape:
    """One feature layout: names in order and which positions hold floats.

    Encoded values: the floats as packed doubles, then the other values as a JSON list (or, if one
    is an int beyond 64 bits, which orjson refuses, ``_BIGINT_JSON`` and the standard library's).
    """

    __slots__ = ("_get_floats", "_get_others", "_order", "float_pos", "floats", "keys", "kinds", "other_pos")

    def __init__(self, keys: tuple[str, ...], kinds: tuple[type, ...]) -> None:
        self.keys = keys
        self.kinds = kinds
        self.float_pos = tuple(i for i, kind in enumerate(kinds) if kind is float)
        self.other_pos = tuple(i for i, kind in enumerate(kinds) if kind is not float)
        self.floats = struct.Struct(f"<{len(self.float_pos)}d")
        self._get_floats = _getter(self.float_pos)
        self._get_others = _getter(self.other_pos)
        rank = {pos: i for i, pos in enumerate(self.float_pos + self.other_pos)}
        order = tuple(rank[i] for i in range(len(keys)))
        # floats + others -> key order (None: they already are)
        self._order = None if order == tuple(range(len(keys))) else _getter(order)

    def encode(self, values: tuple[Any, ...]) -> bytes:
        packed = self.floats.pack(*self._get_floats(values))
        if not self.other_pos:
            return packed
        others = self._get_others(values)
        try:
            return packed + orjson.dumps(others)
        except TypeError:
            text = json.dumps(others, separators=(",", ":"), ensure_ascii=False)
            return packed + _BIGINT_JSON + text.encode()

    def json(self, data: bytes, offset: int, end: int) -> str:
        """:func:`features_to_json` of :meth:`decode`, without the dict: each value's JSON text as
        orjson writes it in a list (the floats' from their tuple, the others' as encoded) between
        the keys' texts (:func:`_json_template`); through the dict where an other value is an int
        beyond 64 bits or a string holding a comma (the texts would not split at the commas).

        >>> shape = _Shape(("c", "x", "d"), (str, float, str))
        >>> [shape.json(data, 0, len(data)) for data in (shape.encode(("a", 0.5, "b")),
        ...                                              shape.encode(("a,b", float("nan"), "é")))]
        ['{"c":"a","x":0.5,"d":"b"}', '{"c":"a,b","x":null,"d":"é"}']
        """
        texts: list[bytes] = []
        if self.float_pos:
            texts = orjson.dumps(self.floats.unpack_from(data, offset))[1:-1].split(b",")
        if self.other_pos:
            others = data[offset + self.floats.size : end]
            if others[:1] == _BIGINT_JSON:
                return features_to_json(self.decode(data, offset, end))
            texts += others[1:-1].split(b",")
            if len(texts) != len(self.keys):
                return features_to_json(self.decode(data, offset, end))
            if self._order is not None:
                texts = list(self._order(texts))
        parts = _json_template(self).copy()
        parts[1::2] = texts
        return b"".join(parts).decode()

    def jsons(self, encoded: list[bytes]) -> list[str]:
        """:meth:`json` of each of ``encoded`` (values encoded in this shape), made for the whole
        list at once: every float of the list goes through one ``orjson.dumps`` and every value's
        text into one ``bytes.join``, rows separated by a newline (JSON text from orjson never holds
        a raw one), so that no Python call is made per row but the slicing (a labelled batch's
        outcomes: ~3.7 us a row one by one, 20 floats + 5 strings). Rows with an int beyond 64
        bits or a comma in a string value (their texts do not split at the commas) make the whole
        list go row by row.

        >>> shape = _Shape(("c", "x", "d"), (str, float, str))
        >>> rows = [shape.encode(("a", 0.5, "b")), shape.encode(("é", float("nan"), "\\n"))]
        >>> shape.jsons(rows) == [shape.json(row, 0, len(row)) for row in rows]
        True
        >>> shape.jsons([*rows, shape.encode(("a,b", 1.0, "c"))])[2]
        '{"c":"a,b","x":1.0,"d":"c"}'
        """
        rows, width = len(encoded), len(self.keys)
        if not width or not rows:
            return ["{}"] * rows
        size = self.floats.size
        columns: list[list[bytes]] = []  # each value's text, float values first (as encoded)
        if self.float_pos:
            floats = b"".join(map(_slice_of, encoded, repeat(slice(0, size))))
            texts = _floats_json(floats)[1:-1].split(b",")
            step = len(self.float_pos)
            columns += [texts[i::step] for i in range(step)]
        if self.other_pos:
            step = len(self.other_pos)
            if b"".join(map(_slice_of, encoded, repeat(slice(size, size + 1)))) != b"[" * rows:
                return [self.json(row, 0, len(row)) for row in encoded]  # _BIGINT_JSON
            texts = b",".join(map(_slice_of, encoded, repeat(slice(size + 1, -1)))).split(b",")
            if len(texts) != rows * step:
                return [self.json(row, 0, len(row)) for row in encoded]
            columns += [texts[i::step] for i in range(step)]
        if self._order is not None:
            columns = list(self._order(columns))
        parts = _json_row_template(self) * rows  # per row: (key text, value text) per key
        for i, column in enumerate(columns):
            parts[2 * i + 1 :: 2 * width] = column
        # each row's template opens with "}\n{": strip the first row's "}\n", close the last one's
        return (b"".join(parts)[2:] + b"}").decode().split("\n")

    def decode(self, data: bytes, offset: int, end: int) -> dict[str, Any]:
        values = self.floats.unpack_from(data, offset)
        if self.other_pos:
            rest = data[offset + self.floats.size : end]
            others = json.loads(rest[1:]) if rest[:1] == _BIGINT_JSON else orjson.loads(rest)
            values += tuple(others)
        if self._order is not None:
            values = self._order(values)
        return dict(zip(self.keys, values, strict=True))


@functools.lru_cache(maxsize=_MAX_SHAPES)
def _json_template(shape: _Shape) -> list[bytes]:
    """The JSON object text of a shape's keys, in parts, with an empty part in place of each value
    (orjson's key texts); cached per shape object (an identity hash: no hashing of the keys per call).

    >>> _json_template(_Shape(("x", "y"), (float, str))), _json_template(_Shape((), ()))
    ([b'{"x":', b'', b',"y":', b'', b'}'], [b'{}'])
    """
    parts: list[bytes] = []
    for i, key in enumerate(shape.keys):
        parts += [(b"," if i else b"{") + orjson.dumps(key) + b":", b""]
    return [*parts, b"}"] if parts else [b"{}"]


_slice_of = cast(Callable[[bytes, slice], bytes], operator.getitem)  # mypy cannot pick its overload in map()


def _floats_json(packed: bytes) -> bytes:
    """The JSON list of the little-endian doubles ``packed``, as ``orjson.dumps`` writes a tuple of
    them (NaN and infinities as null): through numpy, with no float object made per value (orjson
    writes a float64 array's items as it writes floats; test_op_join_outcomes checks it).

    >>> _floats_json(struct.pack("<3d", 0.5, float("nan"), 1e16))
    b'[0.5,null,1e+16]'
    """
    try:
        return orjson.dumps(np.frombuffer(packed, "<f8"), option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # a big-endian machine: orjson takes native arrays only
        return orjson.dumps(struct.unpack(f"<{len(packed) // 8}d", packed))


@functools.lru_cache(maxsize=_MAX_SHAPES)
def _json_row_template(shape: _Shape) -> list[bytes]:
    """:func:`_json_template` as one row of :meth:`_Shape.jsons`: the previous row's close, a
    newline and the object's open before the first key.

    >>> _json_row_template(_Shape(("x", "y"), (float, str)))
    [b'}\\n{"x":', b'', b',"y":', b'']
    """
    parts = _json_template(shape)[:-1]
    return [b"}\n" + parts[0], *parts[1:]]


_Layout = tuple[tuple[str, ...], tuple[type, ...]]  # feature names and value types, in order
# A label that joined a pending record: (prediction id, bytes holding the record, where its body
# starts and the record ends in them, label time, label, whether the label was re-routed)
_Joined = tuple[str, bytes, int, int, int, bool | int | float | str, bool]


def _packed_features(
    names: Sequence[str], columns: Sequence[Sequence[Any]], numbers: Sequence[FloatArray | None]
) -> tuple[_Layout, list[bytes]] | None:
    """The layout of features given as columns (a value per event, every event carrying every name)
    and each event's encoding in it (:meth:`_Shape.encode`, at once: the floats as one float64
    block); None if the events' value types differ (then each event has its own layout).

    >>> layout, packed = _packed_features(("x", "c"), ([0.5, 1.5], ["a", "b"]), (np.array([0.5, 1.5]), None))
    >>> layout, packed[1] == _Shape(*layout).encode((1.5, "b"))
    ((('x', 'c'), (<class 'float'>, <class 'str'>)), True)
    """
    if not names:
        return None
    kinds: list[type] = []
    arrays: list[FloatArray] = []  # the float columns, in order
    for column, floats in zip(columns, numbers, strict=True):
        types = {float} if floats is not None else set(map(type, column))
        if len(types) != 1:
            return None
        kinds.append(types.pop())
        if kinds[-1] is float:
            arrays.append(np.asarray(column, dtype=np.float64) if floats is None else floats)
    layout = (tuple(names), tuple(kinds))
    shape = _Shape(*layout)
    n = len(columns[0])
    if arrays:
        block = np.column_stack(arrays).astype("<f8", copy=False)
        packed = block.view(f"V{shape.floats.size}").ravel().tolist()  # each row's bytes, in C
    else:
        packed = [b""] * n
    if shape.other_pos:
        try:
            others = list(map(orjson.dumps, zip(*[columns[p] for p in shape.other_pos], strict=True)))
        except TypeError:  # an int beyond 64 bits: encoded event by event
            return None
        packed = list(map(operator.add, packed, others))
    return layout, packed


def _getter(positions: tuple[int, ...]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The items at ``positions``, as a tuple (``itemgetter`` returns a bare item for one position)."""
    if len(positions) > 1:
        return operator.itemgetter(*positions)
    if positions:
        (only,) = positions
        return lambda values: (values[only],)
    return lambda values: ()


def features_to_json(features: Mapping[str, Any]) -> str:
    """Features as compact JSON; NaN/inf become null (JSON has no such numbers).

    >>> features_to_json({"a": float("nan"), "b": 2**70, "c": True})
    '{"a":null,"b":1180591620717411303424,"c":true}'
    """
    try:
        return orjson.dumps(features).decode()
    except TypeError:  # an int beyond 64 bits: the standard library encodes it exactly
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in features.items()}
        return json.dumps(clean, separators=(",", ":"), ensure_ascii=False)


def normalise_label(value: bool | int | float | str) -> str:
    """The text form labels are compared in: ``True`` -> ``"true"``, ``1.0`` -> ``"1"``.

    >>> [normalise_label(v) for v in (True, 1, 1.0, 0.25, "Yes")]
    ['true', '1', '1', '0.25', 'Yes']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    return value


def _label_value(value: bool | int | float | str) -> float | None:
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


# A score-only prediction can be judged against a binary label: its vocabulary gives the classes.
_BINARY = {"1": ("1", "0"), "0": ("1", "0"), "true": ("true", "false"), "false": ("true", "false")}


def _predicted_text(prediction: Prediction) -> str | None:
    if prediction.label is not None:
        return normalise_label(prediction.label)
    if prediction.probabilities:
        probabilities = prediction.probabilities
        return max(probabilities, key=probabilities.__getitem__)  # first of equal maxima
    return None


def _pending_tail(prediction: Prediction) -> tuple[int, int, bytes]:
    """What a pending record keeps of a prediction: its flags (score, value), the length of its
    class text (:data:`_NO_LABEL`: none) and the bytes after the record's fixed part, before the
    features (score and value as doubles if set, the class text)."""
    text = _predicted_text(prediction)
    label = b"" if text is None else text.encode()
    flags, numbers = 0, b""
    if prediction.score is not None:
        flags, numbers = _HAS_SCORE, _DOUBLE.pack(prediction.score)
    if prediction.value is not None:
        flags |= _HAS_VALUE
        numbers += _DOUBLE.pack(prediction.value)
    return flags, _NO_LABEL if text is None else len(label), numbers + label


def _pending_tails(predictions: Sequence[Prediction]) -> list[tuple[int, int, bytes]]:
    """:func:`_pending_tail` of each prediction: the common batch (class labels and scores, no value)
    at once, each distinct label's text found once.

    >>> outputs = [Prediction(label=1, score=0.25), Prediction(label=True, score=0.5), Prediction(value=2.0)]
    >>> _pending_tails(outputs[:2]) == list(map(_pending_tail, outputs[:2]))
    True
    """
    n = len(predictions)
    if not n:
        return []
    if isinstance(predictions, OutputColumns):  # the decoder's columns: no object per output
        labels, score_column, values = list(predictions.labels), predictions.scores, predictions.values
    else:
        labels = list(map(_get_label, predictions))
        score_column, values = list(map(_get_score, predictions)), list(map(_get_value, predictions))
    # a class label decides the text whatever the probabilities
    if set(values) != {None} or set(map(type, score_column)) != {float} or None in labels:
        return list(map(_pending_tail, predictions))
    scores = np.fromiter(score_column, dtype="<f8", count=n)
    kinds = list(map(type, labels))
    texts = {key: normalise_label(key[1]).encode() for key in set(zip(kinds, labels, strict=True))}
    label_bytes = list(map(texts.__getitem__, zip(kinds, labels, strict=True)))
    tails = map(operator.add, scores.view("V8").tolist(), label_bytes)
    return list(zip(repeat(_HAS_SCORE, n), map(len, label_bytes), tails, strict=True))


_get_label = operator.attrgetter("label")
_get_score = operator.attrgetter("score")
_get_value = operator.attrgetter("value")


class _WholeGroups:
    """A join's record groups as its checkpoint pickles them: a spilling join's groups are made
    whole (their spilled payloads read back) only when the pickler reaches each, so a base of
    millions of spilled records holds one whole group beside its pickle, not every record whole
    (with the checkpoint's pickler, which does not memoize ``fresh_items``: a memo keeps them all).
    It unpickles as :class:`_RestoredGroups`, which a restore under a memory budget spills as the
    groups arrive. ``groups`` must not change meanwhile: a checkpoint pickles a join while batches
    are kept out, a base a copy of its groups (:meth:`LabelJoin.base_copy`), reading payloads with
    ``read`` (None: groups as they are). ``one_by_one``: through Python, so that a thread pickling a
    copy lets the live join's thread run (the pickler's own loop over a list never lets go of the
    GIL).

    >>> import pickle
    >>> join = LabelJoin(1_000, max_pending=10, max_held=10)
    >>> pickle.loads(pickle.dumps(_WholeGroups(join._groups, bytes))).groups == join._groups
    True
    """

    __slots__ = ("_groups", "_one_by_one", "_read")

    def __init__(self, groups: list[bytes], read: Callable[[bytes], bytes] | None,
                 one_by_one: bool = True) -> None:
        self._groups = groups
        self._read = read
        self._one_by_one = one_by_one

    def __iter__(self) -> Iterator[bytes]:
        read = self._read
        if read is None:
            return (group for group in self._groups) if self._one_by_one else iter(self._groups)
        return (_whole_group(group, read) for group in self._groups)

    fresh_items = __iter__  # a checkpoint's pickler does not memoize them (pipeline.state)

    def __reduce__(self) -> tuple[type[_RestoredGroups], tuple[()], None, Iterator[bytes]]:
        return _RestoredGroups, (), None, iter(self)

    def __eq__(self, other: object) -> bool:
        """Equal to the groups it pickles (a list, or another join's)."""
        if not isinstance(other, _WholeGroups | list):
            return NotImplemented
        return list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class _RestoreBudget:
    budget: int
    directory: Path | str | None
    segment_ms: int


_RESTORE_BUDGET: contextvars.ContextVar[_RestoreBudget | None] = contextvars.ContextVar(
    "driftline_join_restore_budget", default=None)


@contextlib.contextmanager
def restoring_under_budget(budget_bytes: int, directory: Path | str | None = None,
                           segment_ms: int = 900_000) -> Iterator[None]:
    """Joins unpickled inside (a base checkpoint's, in this thread) keep their records under
    ``budget_bytes`` while their groups arrive: pending payloads go to a new
    :class:`~driftline.operators.pending_store.PendingStore` in ``directory`` once the groups
    kept whole fill 3/4 of the budget, so a restore's peak is the table of stubs plus the
    budget, not every record whole (0: no budget, nothing changes). The join then runs with
    that store and budget (:meth:`LabelJoin.set_memory_budget` with the same budget keeps them).

    >>> from driftline.schemas.events import PredictionEvent
    >>> join = LabelJoin(horizon_ms=60_000, max_pending=1000, max_held=1000)
    >>> for i in range(100):
    ...     _ = join.on_prediction(PredictionEvent(prediction_id=f"p{i}", model_id="m", timestamp=i,
    ...                                            features={"x": 0.5}, prediction=0.9), segment="")
    >>> blob = pickle.dumps(join)
    >>> with restoring_under_budget(1):
    ...     restored = pickle.loads(blob)
    >>> restored.spilled_count, pickle.loads(pickle.dumps(restored))._groups == join._groups
    (100, True)
    >>> restored.set_memory_budget(0)
    """
    token = _RESTORE_BUDGET.set(_RestoreBudget(budget_bytes, directory, segment_ms) if budget_bytes else None)
    try:
        yield
    finally:
        _RESTORE_BUDGET.reset(token)


class _RestoredGroups:
    """A base's record table as it unpickles: pickle hands it the groups a thousand at a time
    (``extend``). Under :func:`restoring_under_budget`, groups are kept whole while they fit in 3/4
    of the budget and every later group's pending payloads go to ``store`` as it arrives (a
    thousand groups at once: :func:`_stub_groups`)."""

    __slots__ = ("groups", "room", "store")

    def __init__(self) -> None:
        self.groups: list[bytes] = []
        budget = _RESTORE_BUDGET.get()
        self.store = None if budget is None else PendingStore(budget.directory, budget.segment_ms)
        self.room = 0 if budget is None else budget.budget * 3 // 4

    def extend(self, groups: list[bytes]) -> None:
        store = self.store
        if store is None:
            self.groups.extend(groups)
            return
        kept = 0
        for group in groups:  # whole while they fit; once one does not, the rest are stubs
            if len(group) > self.room:
                self.room = 0
                break
            self.room -= len(group)
            kept += 1
        self.groups.extend(groups[:kept])
        for start in range(kept, len(groups), _STUB_BATCH):
            self.groups.extend(_stub_groups(groups[start : start + _STUB_BATCH], store))

    def append(self, group: bytes) -> None:
        self.extend([group])


_STUB_BATCH = 256
"""Groups stubbed at once: numpy's copies of them (a few each) stay under a megabyte."""
_WholeGroups.fresh_container = _RestoredGroups  # type: ignore[attr-defined]


class LabelJoin:
    """Joins one shard's predictions with their labels in event time (see the module docstring).

    ``advance`` returns the predictions that expired unlabeled or were evicted since the last call,
    sorted by ``(expired_at, prediction_id)``. ``counters`` maps each name of :data:`COUNTER_NAMES`
    to a count.
    """

    def __init__(self, horizon_ms: int, max_pending: int, max_held: int) -> None:
        if horizon_ms < 0 or max_pending < 1 or max_held < 1:
            raise ValueError("horizon_ms must be >= 0 and the bounds >= 1")
        self.horizon_ms = horizon_ms
        self.max_pending = max_pending
        self.max_held = max_held
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_NAMES, 0)
        # Records of every remembered prediction, in groups chosen by linear hashing of the id's
        # CRC-32: ``len(_groups) == _low + _split``; the records of one id keep their arrival order.
        self._groups: list[bytes] = [b""] * _MIN_GROUPS
        self._low = _MIN_GROUPS
        self._split = 0
        self._records = 0
        self._pending = 0
        self._ctx: list[tuple[str, str, str]] = []
        self._ctx_ids: dict[tuple[str, str, str], int] = {}
        self._shapes: list[_Shape] = []
        self._shape_ids: dict[tuple[tuple[str, ...], tuple[type, ...]], int] = {}
        self._held: dict[int, tuple[str, int, bool | int | float | str]] = {}  # seq -> (id, ts, label)
        self._held_seq = 0
        self._held_meta: dict[int, tuple[str, bool]] = {}  # seq -> (model_id, rerouted), if either is set
        self.orphans: list[OrphanLabel] = []  # given up since the last take_orphans()
        self._held_digests: dict[int, tuple[bytes, Any]] = {}  # seq -> (payload digest, source)
        self.duplicates: list[Duplicate] = []  # met since the last take_duplicates()
        self.evicted: list[ExpiredPrediction] = []  # pending predictions evicted since the last advance()
        self._pred_wm = _NEVER
        self._label_wm = _NEVER
        self._due: list[str] = []  # predictions that arrived after the labels watermark passed their expiry
        # While a caller checkpoints incrementally (None: nobody asked, so nothing is kept): the
        # (id key, event time) of every record added since the last take_changes() (a delta
        # carries its current bytes), and a closing (:func:`_closing`) of every record the chain
        # held already that was closed since (its key, time, new state and label digest).
        self._added: set[tuple[bytes, int]] | None = None
        self._closings: list[bytes] = []
        self._no_store()
        self._rebuild_indexes()

    def _no_store(self) -> None:
        """No memory budget: every record whole in memory (a checkpoint never holds a store)."""
        self._store: PendingStore | None = None
        self._pinned: PinnedSegments | None = None  # a base copy's view of the store it was taken from
        self._copy = False  # a base copy (base_copy): pickled in a thread while the join goes on
        self._budget = 0
        self._check_at = _NO_BUDGET  # record bytes added past which the budget is looked at
        self._spilling = False
        self._spilled_key: int | None = None  # newest bucket whose pending payloads were spilled
        # Over the budget at the last look: a new pending record goes to the store as it comes.
        self._through = False
        # Buckets that may hold whole pending records (added while not over the budget), once the
        # first pass over every bucket is done; None: not known (each bucket from _spilled_key on).
        self._unspilled: set[int] | None = None
        self._unspilled_heap: list[int] = []  # the same seconds, oldest first

    def _rebuild_indexes(self) -> None:
        """Derived structures, from the records (a base checkpoint keeps the time index)."""
        # an upper bound of the bytes of all records (exact here; additions counted, shrinking not)
        self._estimate = sum(map(len, self._groups))
        # second of event time -> CRC-32 of the id of each record stored with such a time
        self._buckets: dict[int, array[int]] = {}
        for group in self._groups:
            for pos, _, klen in _walk(group):
                bucket = _TS.unpack_from(group, pos + _AT + klen)[0] // _BUCKET_MS
                if bucket not in self._buckets:
                    self._buckets[bucket] = array("I")
                self._buckets[bucket].append(_HEAD.unpack_from(group, pos)[1])
        self._bucket_keys = sorted(self._buckets)
        self._rebuild_small_indexes()

    def _rebuild_small_indexes(self) -> None:
        """Derived structures of the state outside the record table."""
        self._held_ids: dict[str, list[int]] = {}
        for seq, (pid, _, _) in self._held.items():
            self._held_ids.setdefault(pid, []).append(seq)
        self._held_heap = [(ts, seq) for seq, (_, ts, _) in self._held.items()]
        heapq.heapify(self._held_heap)
        self._ctx_ids = {ctx: i for i, ctx in enumerate(self._ctx)}
        self._shape_ids = {(s.keys, s.kinds): i for i, s in enumerate(self._shapes)}
        self._evict_key: int | None = None  # bucket whose pending entries _evict_queue holds
        self._evict_queue: list[tuple[int, str]] = []

    # -- public surface ---------------------------------------------------------------------

    @property
    def pending_count(self) -> int:
        return self._pending

    @property
    def held_count(self) -> int:
        return len(self._held)

    def earliest_held_label_ts(self) -> int | None:
        """Event time of the oldest label still waiting for its prediction (amortised O(log n))."""
        heap = self._held_heap
        while heap and heap[0][1] not in self._held:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def on_prediction(
        self,
        event: PredictionEvent,
        segment: str,
        rerouted: bool = False,
        digest: bytes | None = None,
        source: Any = None,
    ) -> JoinedOutcome | None:
        """``rerouted``: it reached this join through re-routing (reported in the outcome).

        ``digest``: :func:`payload_digest` of the record's payload (default: of the event's JSON);
        ``source`` is handed back in the :class:`Duplicate` if this prediction is one.
        """
        if digest is None:
            digest = _event_digest(event)
        ctx = (event.model_id, event.model_version, segment)
        outcomes, _ = self.on_predictions([event.prediction_id], [event.timestamp], [ctx], [event.prediction],
                                          [event.features], [digest], [source], rerouted)
        return outcomes[0] if outcomes else None

    def on_predictions(
        self,
        prediction_ids: Sequence[str],
        timestamps: Sequence[int],
        contexts: Sequence[tuple[str, str, str]],
        predictions: Sequence[Prediction],
        features: Sequence[Mapping[str, Any]],
        digests: Sequence[bytes],
        sources: Sequence[Any],
        rerouted: bool = False,
        columns: tuple[Sequence[str], Sequence[Sequence[Any]], Sequence[FloatArray | None]] | None = None,
    ) -> tuple[list[JoinedOutcome], list[int]]:
        """:meth:`on_prediction` for each event of decoded columns, in order (a value per event;
        ``contexts``: (model id, model version, segment tags)): the outcomes, in order, and the
        positions of the events that were duplicate predictions. ``columns``: ``features`` as
        (names, a column per name, each all-float column as float64 or None), every event carrying
        every name: the features of a batch of one layout are then packed at once.

        >>> join = LabelJoin(horizon_ms=60_000, max_pending=10, max_held=10)
        >>> _ = join.on_label(LabelEvent(prediction_id="b", label=1, timestamp=2_000))
        >>> outcomes, duplicates = join.on_predictions(
        ...     ["a", "b", "a"], [1_000, 1_500, 1_200], [("m", "1", "")] * 3, [Prediction(value=1.0)] * 3,
        ...     [{"x": 0.5}] * 3, [payload_digest(p) for p in (b"a", b"b", b"a")], [None] * 3)
        >>> [(o.prediction_id, o.abs_error) for o in outcomes], duplicates, join.pending_count
        ([('b', 0.0)], [2], 1)
        """
        duplicates: list[int] = []
        outcomes: list[JoinedOutcome] = []
        encoded = None if columns is None else _packed_features(*columns)
        tails = _pending_tails(predictions)
        layout: _Layout | None = None
        known: int | None = None  # the layout's shape id
        packs: Sequence[bytes | None]
        if encoded is None:
            packs = [None] * len(tails)
        else:  # one layout: its shape id is looked up once (interned with its first pending record)
            layout, packs = encoded
            known = self._shape_ids.get(layout)
        keys = _id_keys(prediction_ids)
        crcs = list(map(zlib.crc32, keys))
        horizon, encode = self.horizon_ms, self._encode
        groups, buckets, added, ctx_ids = self._groups, self._buckets, self._added, self._ctx_ids
        # (predictions read by index, where a held label claims one: the decoder's columns make
        # an object per output only when read)
        for i, (pid, key, crc, ts, ctx, values, digest, source, tail, packed) in enumerate(zip(
                prediction_ids, keys, crcs, timestamps, contexts, features, digests, sources,
                tails, packs, strict=True)):
            gid = crc & (self._low - 1)  # self._gid(crc), inline
            if gid < self._split:
                gid = crc & (2 * self._low - 1)
            group = self._groups[gid]
            # a C-level substring test first: most ids are new
            if key in group and self._duplicate_prediction(group, key, pid, ts, ctx, digest, source):
                duplicates.append(i)
                continue
            if self._held_ids:
                outcome = self._claimed(gid, key, crc, pid, ts, ctx, predictions[i], values, rerouted, digest)
                if outcome is not None:
                    outcomes.append(outcome)
                    continue
            if packed is not None and known is None:
                # the batch's layout is new: interned with its first pending record (as _encode
                # does), so that every later one of the batch takes the inline path below
                known = self._shape_id(cast(_Layout, layout))
            if packed is None or known == _NO_SHAPE:
                record = encode(ts, ctx, values, key, crc, rerouted, digest, tail,
                                None if packed is None else (cast(_Layout, layout), packed, known))
            else:  # _encode of a batch's known layout, inline (a call per prediction)
                shape_id = known
                flags, label_len, output = tail
                ctx_id = ctx_ids.get(ctx)
                if ctx_id is None:
                    ctx_id = self._ctx_id(ctx)
                head = _PENDING_HEADS.get(len(key)) or _pending_head(len(key))
                features_bytes = packed
                record = head.pack(head.size + len(output) + len(features_bytes), crc, key, ts, _PENDING,
                                   digest, flags | _REROUTED if rerouted else flags, ctx_id, shape_id,
                                   label_len) + output + features_bytes
            bucket = ts // _BUCKET_MS
            if self._through:
                record = self._spill_record(record, ts)
            elif self._unspilled is not None and bucket not in self._unspilled:
                self._unspilled.add(bucket)
                heapq.heappush(self._unspilled_heap, bucket)
            # _add, inline
            if added is not None:
                added.add((key, ts))
            groups[gid] += record
            self._records += 1
            self._estimate += len(record)
            crcs_at = buckets.get(bucket)
            if crcs_at is None:
                buckets[bucket] = crcs_at = array("I")
                bisect.insort(self._bucket_keys, bucket)
            crcs_at.append(crc)
            while self._records > _LOAD * len(groups):
                self._split_group()
            self._pending += 1
            if self._estimate > self._check_at:
                self._check_budget()
            if ts + horizon < self._label_wm:  # no label can still come: expire at the next advance
                self._due.append(pid)
            if self._evict_key is not None and bucket <= self._evict_key:
                self._evict_key = None
            while self._pending > self.max_pending:
                self._evict_oldest_pending()
        return outcomes, duplicates

    def _duplicate_prediction(
        self, group: bytes, key: bytes, pid: str, ts: int, ctx: tuple[str, str, str], digest: bytes,
        source: Any,
    ) -> bool:
        """Whether a prediction (id key ``key``, at ``ts``) is a duplicate of a record of ``group``;
        if so it is counted and reported."""
        at = _AT + len(key)
        for pos in _find(group, key):
            if ts <= _TS.unpack_from(group, pos + at)[0] + self.horizon_ms:
                self.counters["duplicate_predictions"] += 1
                first = group[pos + at + _DIGEST_AT : pos + at + _BODY]
                self.duplicates.append(Duplicate(
                    "prediction", pid, ts, first in (digest, UNKNOWN_DIGEST), first, digest, *ctx, source,
                ))
                return True
        return False

    def _claimed(
        self,
        gid: int,
        key: bytes,
        crc: int,
        pid: str,
        ts: int,
        ctx: tuple[str, str, str],
        prediction: Prediction,
        features: Mapping[str, Any],
        rerouted: bool,
        digest: bytes,
    ) -> JoinedOutcome | None:
        """The outcome of a new prediction that a held label joins (its record added, joined), or
        None if none does."""
        winner = self._claim_held(pid, ts, ctx)
        if winner is None:
            return None
        tail = _JOINED_TAIL.pack(self._ctx_id(ctx), winner[3])
        self._add(gid, crc, _closed(key, crc, ts, _JOINED, digest, tail), ts)
        label_ts, label, label_rerouted, _ = winner
        outcome = _outcome(pid, ctx, ts, _predicted_text(prediction), prediction.score, prediction.value,
                           features_to_json(features), label_ts, normalise_label(label), _label_value(label))
        outcome.rerouted = (REROUTED_PREDICTION if rerouted else 0) | (
            REROUTED_LABEL if label_rerouted else 0)
        return outcome

    def on_label(
        self, event: LabelEvent, rerouted: bool = False, digest: bytes | None = None, source: Any = None
    ) -> JoinedOutcome | None:
        """``rerouted``: it reached this join through re-routing (reported in the outcome).

        ``digest`` and ``source`` as for :meth:`on_prediction`.
        """
        if digest is None:
            digest = _event_digest(event)
        joined: list[_Joined] = []
        key = _id_key(event.prediction_id)
        self._label(event.prediction_id, key, zlib.crc32(key), event.timestamp, event.label, event.model_id,
                    rerouted, digest, source, joined)
        return self._outcomes(joined)[0] if joined else None

    def on_labels(
        self,
        prediction_ids: Sequence[str],
        timestamps: Sequence[int],
        labels: Sequence[bool | int | float | str],
        model_ids: Sequence[str | None],
        digests: Sequence[bytes],
        sources: Sequence[Any],
        rerouted: bool = False,
    ) -> list[JoinedOutcome]:
        """:meth:`on_label` for each event of decoded columns, in order (a value per event): the
        outcomes, in order.

        >>> join = LabelJoin(horizon_ms=60_000, max_pending=10, max_held=10)
        >>> _ = join.on_prediction(PredictionEvent(prediction_id="a", model_id="m", timestamp=1_000,
        ...                                        prediction={"label": "yes"}), segment="")
        >>> outcomes = join.on_labels(["a", "a", "b"], [1_500, 1_600, 1_700], ["yes", "no", "no"], [None] * 3,
        ...                           [payload_digest(p) for p in (b"1", b"2", b"3")], [None] * 3)
        >>> [(o.prediction_id, o.correct) for o in outcomes], join.counters["duplicate_labels"]
        ([('a', 1)], 1)
        >>> join.held_count
        1
        """
        label = self._label
        joined: list[_Joined] = []
        keys = _id_keys(prediction_ids)
        # A label that joins a pending record, the common case, is handled here (as _label does,
        # inline, with the closed record spliced from the pending one's bytes); any other goes
        # through _label, which walks its group again.
        groups, store, added, horizon = self._groups, self._store, self._added, self.horizon_ms
        low, split = self._low - 1, self._split
        high = 2 * low + 1
        unpack_head, unpack_ts, pack_head = _HEAD.unpack_from, _TS.unpack_from, _HEAD.pack
        for pid, key, crc, ts, value, model_id, digest, source in zip(
                prediction_ids, keys, map(zlib.crc32, keys), timestamps, labels, model_ids, digests, sources,
                strict=True):
            gid = crc & low  # self._gid(crc), inline
            if gid < split:
                gid = crc & high
            group = groups[gid]
            pos, size, at = 0, len(group), _AT + len(key)
            while pos < size:  # the first record of this id whose interval holds the label decides
                length = unpack_head(group, pos)[0]
                if group.startswith(key, pos + _AT):
                    pred_ts, state = unpack_ts(group, pos + at)
                    if pred_ts <= ts <= pred_ts + horizon:
                        break
                pos += length
            if pos >= size or state != _PENDING:
                label(pid, key, crc, ts, value, model_id, rerouted, digest, source, joined)
                continue
            self._pending -= 1
            end = pos + length
            body = pos + at + _BODY
            # the closed record: head, id key, time, state, payload digest, ctx id (as in the
            # pending record's _PRED), the label's digest (_closed with a _JOINED_TAIL)
            groups[gid] = b"".join((group[:pos], pack_head(at + _BODY + _JOINED_TAIL.size, crc),
                                    group[pos + _AT : body - DIGEST_SIZE - 1], _JOINED_STATE,
                                    group[body - DIGEST_SIZE : body], group[body + 1 : body + 5], digest,
                                    group[end:]))
            if added is not None and (key, pred_ts) not in added:  # _note_closing, inline
                self._closings.append(_closing(key, pred_ts, _JOINED, digest))
            if group[body] & _SPILLED and store is not None:
                # the stub to the flags..label length, then the payload: all the outcome reads
                payload_at = body + _PRED.size
                record = group[pos:payload_at] + store.get(group[payload_at:end])
                joined.append((pid, record, at, len(record), ts, value, rerouted))
            else:
                joined.append((pid, group, pos + at, end, ts, value, rerouted))
        return self._outcomes(joined)

    def _label(
        self,
        pid: str,
        key: bytes,
        crc: int,
        ts: int,
        label: bool | int | float | str,
        model_id: str | None,
        rerouted: bool,
        digest: bytes,
        source: Any,
        joined: list[_Joined],
    ) -> None:
        """:meth:`on_label` of an event's values (``key``: :func:`_id_key` of its id, ``crc`` that
        key's CRC-32); a label that joins adds its pending record to ``joined`` (:meth:`_outcomes`
        makes the outcomes of a batch at once)."""
        horizon = self.horizon_ms
        gid = crc & (self._low - 1)  # self._gid(crc), inline
        if gid < self._split:
            gid = crc & (2 * self._low - 1)
        group = self._groups[gid]
        # The records of this id in arrival order (as _find, inline): the first whose interval
        # holds the label decides.
        pos, size, at = 0, len(group), _AT + len(key)
        seen: list[int] = []
        while pos < size:
            length = _HEAD.unpack_from(group, pos)[0]
            if group.startswith(key, pos + _AT):
                pred_ts, state = _TS.unpack_from(group, pos + at)
                if pred_ts <= ts <= pred_ts + horizon:
                    if state != _PENDING:
                        if state == _JOINED:
                            self.counters["duplicate_labels"] += 1
                            body = pos + at + _BODY
                            ctx_id, first = _JOINED_TAIL.unpack_from(group, body)
                            self._add_duplicate("label", pid, ts, first, digest, ctx_id, source)
                        else:
                            self._orphan(pid, model_id or "", ts, "no_prediction", source)
                        return
                    self._pending -= 1
                    end = pos + length
                    body = pos + at + _BODY
                    tail = _JOINED_TAIL.pack(_PRED.unpack_from(group, body)[1], digest)
                    closed = _closed(key, crc, pred_ts, _JOINED, group[body - DIGEST_SIZE : body], tail)
                    self._groups[gid] = b"".join((group[:pos], closed, group[end:]))
                    self._note_closing(key, pred_ts, _JOINED, digest)
                    store = self._store
                    if group[body] & _SPILLED and store is not None:
                        # the stub to the flags..label length, then the payload: all the outcome reads
                        payload_at = body + _PRED.size
                        record = group[pos:payload_at] + store.get(group[payload_at:end])
                        joined.append((pid, record, at, len(record), ts, label, rerouted))
                    else:
                        joined.append((pid, group, pos + at, end, ts, label, rerouted))
                    return
                seen.append(pred_ts)
            pos += length
        if seen:
            if any(pred_ts > ts for pred_ts in seen):
                self.counters["labels_before_prediction"] += 1
            else:
                self.counters["labels_beyond_horizon"] += 1
        if ts < self._pred_wm:  # its prediction could only come late now
            self._orphan(pid, model_id or "", ts, "no_prediction", source)
            return
        seq = self._held_seq
        self._held_seq += 1
        self._held[seq] = (pid, ts, label)
        if model_id or rerouted:
            self._held_meta[seq] = (model_id or "", rerouted)
        self._held_digests[seq] = (digest, source)
        self._held_ids.setdefault(pid, []).append(seq)
        heapq.heappush(self._held_heap, (ts, seq))
        while len(self._held) > self.max_held:
            oldest_ts, oldest = heapq.heappop(self._held_heap)
            if oldest in self._held:
                self.orphans.append(self._held_orphan(oldest, oldest_ts, "evicted"))
                self._drop_held(oldest)
                self.counters["evicted_held"] += 1

    def take_duplicates(self) -> list[Duplicate]:
        """The duplicates met since the last call, in the order they were met."""
        duplicates, self.duplicates = self.duplicates, []
        return duplicates

    def _add_duplicate(
        self, kind: str, pid: str, ts: int, first: bytes, digest: bytes, ctx_id: int, source: Any
    ) -> None:
        model_id, model_version, segment = ("", "", "") if ctx_id == _NO_CTX else self._ctx[ctx_id]
        exact = first in (digest, UNKNOWN_DIGEST)
        self.duplicates.append(
            Duplicate(kind, pid, ts, exact, first, digest, model_id, model_version, segment, source)
        )

    def take_orphans(self) -> list[OrphanLabel]:
        """The labels given up since the last call, in the order they were given up."""
        orphans, self.orphans = self.orphans, []
        return orphans

    def _orphan(self, pid: str, model_id: str, ts: int, reason: str, source: Any) -> None:
        self.counters["orphan_labels"] += 1
        self.orphans.append(OrphanLabel(pid, model_id, ts, reason, *_record_position(source)))

    def _held_orphan(self, seq: int, ts: int, reason: str) -> OrphanLabel:
        source = self._held_digests.get(seq, (UNKNOWN_DIGEST, None))[1]
        return OrphanLabel(self._held[seq][0], self._held_meta.get(seq, ("", False))[0], ts, reason,
                           *_record_position(source))

    def advance(self, pred_watermark_ms: int, label_watermark_ms: int) -> list[ExpiredPrediction]:
        """Apply both watermarks (they never move back): orphan, expire and forget state."""
        self._pred_wm = pred_wm = max(self._pred_wm, pred_watermark_ms)
        old_label_wm = self._label_wm
        self._label_wm = label_wm = max(old_label_wm, label_watermark_ms)
        heap = self._held_heap
        while heap and heap[0][0] < pred_wm:
            ts, seq = heapq.heappop(heap)
            if seq in self._held:
                self.orphans.append(self._held_orphan(seq, ts, "no_prediction"))
                self.counters["orphan_labels"] += 1
                self._drop_held(seq)
        if len(heap) > 2 * len(self._held) + 64:  # joined labels left stale entries behind
            self._held_heap = [(ts, seq) for ts, seq in heap if seq in self._held]
            heapq.heapify(self._held_heap)

        # Every pending prediction with ts < cut expires now. They are in the buckets from the old
        # cut on (older ones expired before) or, if they came after their expiry, in _due; closing
        # every pending record under the cut in the groups those hold is the same thing.
        expired: list[ExpiredPrediction] = []
        cut, old_cut = label_wm - self.horizon_ms, old_label_wm - self.horizon_ms
        gids: set[int] = {self._gid(zlib.crc32(_id_key(pid))) for pid in self._due}
        self._due = []
        if cut > old_cut:
            keys = self._bucket_keys
            for key in keys[bisect.bisect_left(keys, old_cut // _BUCKET_MS) :]:
                if key * _BUCKET_MS >= cut:
                    break
                gids.update(map(self._gid, self._buckets[key]))
        for gid in gids:
            self._expire(gid, cut, expired)
        if self._store is not None:  # every prediction older than the cut has expired or joined
            self._store.drop_before(cut)
            self._store.flush()
        self._forget(min(pred_wm, label_wm) - self.horizon_ms)
        expired += self.evicted
        self.evicted = []
        expired.sort(key=lambda e: (e.expired_at, e.prediction_id))
        return expired

    # -- checkpointing ------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        store = self._store if self._pinned is None else self._pinned
        groups = _WholeGroups(self._groups, None if store is None else store.get, one_by_one=self._copy)
        # The time index too: rebuilding it walks every record in Python (~2 us each), longer
        # than reading it (4 bytes a record).
        return {**self._outside_table(), "groups": groups, "low": self._low, "split": self._split,
                "buckets": self._buckets}

    def base_copy(self) -> LabelJoin:
        """A copy of this join as it is now, to pickle a base from (in another thread too) while
        this join goes on: it pickles as this join would now. Its record table is a copy of the
        list of groups (each an immutable ``bytes``: pointers, not records) and of the time
        index's arrays; the state outside the table (small) is copied by pickling it. A spilling
        join's store is pinned (:meth:`PendingStore.pin`): the copy reads its payloads back from
        the segments as they are now, which the store keeps until :meth:`release_copy`. The copy's
        groups are pickled one by one through Python (:class:`_WholeGroups`), so the pickling
        thread lets this join's thread run. The changes tracked so far are forgotten: the next
        delta follows the base.

        >>> from driftline.schemas.events import PredictionEvent
        >>> join = LabelJoin(horizon_ms=60_000, max_pending=10, max_held=10)
        >>> def predict(pid: str, ts: int) -> None:
        ...     _ = join.on_prediction(PredictionEvent(prediction_id=pid, model_id="m", timestamp=ts,
        ...                                            prediction=0.5), segment="")
        >>> predict("p1", 1_000)
        >>> before = pickle.loads(pickle.dumps(join))
        >>> copy = join.base_copy()
        >>> predict("p2", 2_000)
        >>> restored = pickle.loads(pickle.dumps(copy))
        >>> restored._groups == before._groups, restored.pending_count, join.pending_count
        (True, 1, 2)
        >>> copy.release_copy()
        """
        pinned = None if self._store is None else self._store.pin()
        state = pickle.loads(pickle.dumps(self._outside_table(), pickle.HIGHEST_PROTOCOL))
        copy = LabelJoin.__new__(LabelJoin)
        copy.__setstate__({**state, "groups": list(self._groups), "low": self._low, "split": self._split,
                           "buckets": {second: crcs[:] for second, crcs in self._buckets.items()}})
        copy._pinned, copy._copy = pinned, True
        self.reset_changes()
        return copy

    def release_copy(self) -> None:
        """This copy (:meth:`base_copy`) was pickled: its store may delete what it kept since."""
        if self._pinned is not None:
            self._pinned.release()
            self._pinned = None

    def _outside_table(self) -> dict[str, Any]:
        """The state but the record table (small: counters, held labels, interned names, watermarks)."""
        return {
            "horizon_ms": self.horizon_ms,
            "max_pending": self.max_pending,
            "max_held": self.max_held,
            "counters": self.counters,
            "record_count": self._records,
            "pending": self._pending,
            "ctx": self._ctx,
            "shapes": [(s.keys, s.kinds) for s in self._shapes],
            "held": self._held,
            "held_seq": self._held_seq,
            "held_meta": self._held_meta,
            "held_digests": self._held_digests,
            "duplicates": self.duplicates,
            "record_format": _RECORD_FORMAT,
            "orphans": self.orphans,
            "evicted": self.evicted,
            "pred_wm": self._pred_wm,
            "label_wm": self._label_wm,
            "due": self._due,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.horizon_ms = state["horizon_ms"]
        self.max_pending = state["max_pending"]
        self.max_held = state["max_held"]
        self.counters = state["counters"]
        groups = state["groups"]
        restored = groups if isinstance(groups, _RestoredGroups) else None  # absent before format 4
        if isinstance(groups, _WholeGroups):  # a state from __getstate__, not unpickled
            groups = list(groups)
        self._groups = groups if restored is None else restored.groups
        if state.get("record_format", 1) == 1:  # a checkpoint from before payload digests
            self._groups = [_upgrade_v1_group(group) for group in self._groups]
        self._held_digests = state.get("held_digests", {})
        self.duplicates = state.get("duplicates", [])
        self._low = state["low"]
        self._split = state["split"]
        self._records = state["record_count"]
        self._pending = state["pending"]
        self._ctx = state["ctx"]
        self._shapes = [_Shape(keys, kinds) for keys, kinds in state["shapes"]]
        self._held = state["held"]
        self._held_seq = state["held_seq"]
        self._held_meta = state.get("held_meta", {})  # absent in checkpoints before re-routing
        self.orphans = state.get("orphans", [])
        self.evicted = state.get("evicted", [])  # absent in checkpoints before evictions were reported
        self._pred_wm = state["pred_wm"]
        self._label_wm = state["label_wm"]
        self._due = state["due"]
        self._added, self._closings = None, []
        self._no_store()
        if restored is not None and restored.store is not None:
            self._adopt_store(restored.store)
        buckets = state.get("buckets")  # absent in checkpoints before it was kept
        if buckets is None or state.get("record_format", 1) == 1:
            self._rebuild_indexes()
        else:
            self._estimate = sum(map(len, self._groups))
            self._buckets = buckets
            self._bucket_keys = sorted(buckets)
            self._rebuild_small_indexes()

    # -- incremental checkpoints --------------------------------------------------------------

    def track_changes(self) -> None:
        """Remember from now on which records change, for :meth:`take_changes` (idempotent)."""
        if self._added is None:
            self._added = set()

    @property
    def changed_count(self) -> int:
        """Records changed since the last checkpoint: what the next delta carries (and a restore
        applies, one lookup and splice each): those added, whole, and those closed, as closings."""
        return len(self._added) + len(self._closings) if self._added is not None else 0

    def reset_changes(self) -> None:
        """Forget the changes so far: a full snapshot was just taken."""
        if self._added is not None:
            self._added, self._closings = set(), []

    def _note_closing(self, key: bytes, ts: int, state: int, label_digest: bytes = b"") -> None:
        """The record of ``key`` at ``ts`` was just closed (pending to ``state``): a closing for the
        next delta, unless the record was added since the last checkpoint (then the delta carries
        it whole, as it is then)."""
        added = self._added
        if added is not None and (key, ts) not in added:
            self._closings.append(_closing(key, ts, state, label_digest))

    def take_changes(self) -> JoinChanges:
        """What changed since tracking started or the last call (see :class:`JoinChanges`).

        >>> import pickle
        >>> from driftline.schemas.events import LabelEvent, PredictionEvent
        >>> join = LabelJoin(horizon_ms=60_000, max_pending=10, max_held=10)
        >>> join.track_changes()
        >>> _ = join.on_prediction(PredictionEvent(prediction_id="p1", model_id="m", timestamp=1_000,
        ...                                        prediction=0.5), segment="")
        >>> base = pickle.dumps(join)
        >>> label = LabelEvent(prediction_id="p1", label="1", timestamp=2_000)
        >>> _ = join.reset_changes(), join.on_label(label)
        >>> changes = join.take_changes()
        >>> changes.records, len(changes.closings)  # p1 was in the base: its closing alone
        (b'', 21)
        >>> restored = pickle.loads(base)
        >>> restored.apply_changes(changes)
        >>> restored.pending_count, restored.on_label(label)
        (0, None)
        >>> [d.exact for d in restored.take_duplicates()]
        [True]
        """
        added = self._added or set()
        closings = self._closings
        if self._added is not None:
            self._added, self._closings = set(), []
        # one id's records in event-time order: their arrival order
        records, gone = self.current_records(sorted(added))
        return JoinChanges(b"".join(records), gone, self._outside_table(), b"".join(closings))

    def current_records(self, keys: Iterable[tuple[bytes, int]]
                        ) -> tuple[list[bytes], list[tuple[bytes, int]]]:
        """The current whole bytes of the records named by (id key, event time), in ``keys``' order,
        and the keys of those the table no longer holds."""
        records: list[bytes] = []
        gone: list[tuple[bytes, int]] = []
        for key, ts in keys:
            found = self._locate(key, ts)
            if found is None:
                gone.append((key, ts))
            else:
                gid, pos, end = found
                records.append(self._whole(self._groups[gid][pos:end]))
        return records, gone

    def apply_changes(self, changes: JoinChanges) -> None:
        """Bring this join (restored from the checkpoint ``changes`` follows) to the state
        ``changes`` was taken in; ValueError if the result disagrees with the counts it recorded."""
        # first: a record closed, forgotten and added again in one interval comes whole after it
        self._apply_closings(getattr(changes, "closings", b""))  # absent before delta format 5
        records = changes.records
        starts = _record_starts(records)
        stub = self._store is not None and self._unspilled is not None  # restored under a budget
        if stub and starts:  # pending records as stubs, so no second needs walking for whole ones after
            assert self._store is not None
            ends = np.array([len(records)])
            records = _stub_records(records, np.array(starts, np.int64), ends, self._store)[0]
            starts = _record_starts(records)
        self._put_records(records, starts)
        for key, ts in changes.gone:
            self._put(zlib.crc32(key), key, ts, None)
        state = changes.state
        for name in ("horizon_ms", "max_pending", "max_held", "counters", "duplicates", "orphans"):
            setattr(self, name, state[name])
        self.evicted = state.get("evicted", [])
        self._ctx = state["ctx"]
        self._shapes = [_Shape(keys, kinds) for keys, kinds in state["shapes"]]
        self._held, self._held_seq = state["held"], state["held_seq"]
        self._held_meta, self._held_digests = state["held_meta"], state["held_digests"]
        self._pred_wm, self._label_wm, self._due = state["pred_wm"], state["label_wm"], state["due"]
        self._rebuild_small_indexes()
        # Records forgotten since the previous checkpoint: forgetting depends on the cut alone.
        self._forget(min(self._pred_wm, self._label_wm) - self.horizon_ms)
        if not stub:
            self._unspilled = self._spilled_key = None  # the records put back are whole, in any second
        if self._estimate > self._check_at:
            self._check_budget()
        expected = (state["record_count"], state["pending"])
        if (self._records, self._pending) != expected:
            raise ValueError(f"join changes do not apply: {self._records} records, {self._pending} pending "
                             f"after applying them, the checkpoint recorded {expected[0]} and {expected[1]}")

    def _put_records(self, records: bytes, starts: list[int]) -> None:
        """:meth:`_put` of each of a delta's records (concatenated, starting at ``starts``), in
        order, with the same result byte for byte but without Python per record where it can:
        a record whose id is in its group (rare: a chain holds a delta's new records only when
        one was forgotten and added again) goes through :meth:`_put`; the others are appended.
        Appending them all after the splits their count calls for leaves every group's records
        in the order :meth:`_add` one by one leaves them (a split keeps the order of the records
        it moves, and each group gets its new records last, in the delta's order), and each
        second of the time index gets their id hashes in that order too."""
        count = len(starts)
        if not count:
            return
        data = np.frombuffer(records, np.uint8)
        pos = np.array(starts, np.int64)
        lengths = _u32_at(data, pos)
        crcs = _u32_at(data, pos + 4)
        code = data[pos + _AT].astype(np.int64) | data[pos + _AT + 1].astype(np.int64) << 8
        at = pos + _AT + np.where(code == _UUID_CODE, 18, 2 + code)
        stamps = _i64_at(data, at)
        pending = data[at + 8] == _PENDING
        ends = (pos + lengths).tolist()
        recs = list(map(records.__getitem__, map(slice, starts, ends)))
        keys = list(map(records.__getitem__, map(slice, (pos + _AT).tolist(), at.tolist())))
        groups = self._groups
        new = np.ones(count, bool)
        holding = map(groups.__getitem__, self._gids(crcs).tolist())
        present = np.fromiter(map(operator.contains, holding, keys), bool, count)
        stamp_list = stamps.tolist()
        for i in np.flatnonzero(present).tolist():  # a C-level substring test first, as _locate
            if self._locate(keys[i], stamp_list[i]) is not None:
                self._put(int(crcs[i]), keys[i], stamp_list[i], recs[i])
                new[i] = False
        add = np.flatnonzero(new)
        if not add.size:
            return
        if self._added is not None:
            self._added.update(zip(map(keys.__getitem__, add.tolist()), stamps[add].tolist(), strict=True))
        self._records += add.size
        self._pending += int(np.count_nonzero(pending[add]))
        self._estimate += int(lengths[add].sum())
        splits = -(-self._records // _LOAD) - len(groups)  # as many as _add's would have made
        if splits > 0:
            self._split_groups(splits)
        # The new records of each group, joined in the delta's order, appended to it.
        gids = self._gids(crcs[add])
        order = np.argsort(gids, kind="stable")
        sorted_gids = gids[order]
        first = np.flatnonzero(np.concatenate(([True], sorted_gids[1:] != sorted_gids[:-1])))
        ordered = list(map(recs.__getitem__, add[order].tolist()))
        bounds = [*first.tolist(), add.size]
        tails = ordered if len(first) == add.size else list(
            map(b"".join, map(ordered.__getitem__, map(slice, bounds[:-1], bounds[1:]))))
        targets = sorted_gids[first].tolist()
        grown = map(operator.add, map(groups.__getitem__, targets), tails)
        any(map(groups.__setitem__, targets, grown))  # every group put (setitem returns None): a loop in C
        # The time index: each second's id hashes in the delta's order, new seconds as _add makes them.
        seconds = stamps[add] // _BUCKET_MS
        added_crcs = crcs[add].astype(np.uint32)
        found, first_at = np.unique(seconds, return_index=True)
        for second in found[np.argsort(first_at)].tolist():
            bucket = self._buckets.get(second)
            if bucket is None:
                self._buckets[second] = bucket = array("I")
                bisect.insort(self._bucket_keys, second)
            bucket.frombytes(added_crcs[seconds == second].tobytes())

    def _split_groups(self, count: int) -> None:
        """:meth:`_split_group` ``count`` times, the groups of each run of the split pointer (up to
        where the table doubles) parsed and cut together."""
        groups = self._groups
        while count:
            low, at = self._low, self._split
            runs = min(count, low - at)
            olds = groups[at : at + runs]
            sizes = np.fromiter(map(len, olds), np.int64, runs)
            buf = b"".join(olds)
            data = np.frombuffer(buf, np.uint8)
            starts = _group_record_starts(data, sizes)
            lengths = _u32_at(data, starts)
            owner = np.searchsorted(np.cumsum(sizes), starts, side="right")
            # each group's records that stay, then those that move, each in their order
            piece = 2 * owner + (_u32_at(data, starts + 4) & low != 0)
            order = np.argsort(piece, kind="stable")
            whole = b"".join(map(buf.__getitem__, map(slice, starts[order].tolist(),
                                                      (starts + lengths)[order].tolist())))
            ends = np.cumsum(np.bincount(piece, lengths, minlength=2 * runs).astype(np.int64)).tolist()
            parts = list(map(whole.__getitem__, map(slice, [0, *ends[:-1]], ends)))
            groups[at : at + runs] = parts[0::2]
            groups.extend(parts[1::2])
            self._split = at + runs
            if self._split == low:
                self._low, self._split = 2 * low, 0
            count -= runs

    def _gids(self, crcs: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """:meth:`_gid` of each id hash."""
        gids = crcs & (self._low - 1)
        return np.where(gids < self._split, crcs & (2 * self._low - 1), gids)

    def _apply_closings(self, closings: bytes) -> None:
        """Close the pending records ``closings`` name (:func:`_closing`) as the live join closed
        them: the closed record keeps the pending one's head CRC, payload digest and context id.
        The closings of distinct groups are applied together (:meth:`_close_records`); a group
        named twice takes its second closing in a second round, and so on."""
        if not closings:
            return
        starts, klens = _closing_starts(closings)
        data = np.frombuffer(closings, np.uint8)
        pos = np.array(starts, np.int64)
        klen = np.array(klens, np.int64)
        stamps = _i64_at(data, pos + klen)
        states = data[pos + klen + 8]
        ends = (pos + klen).tolist()
        keys = list(map(closings.__getitem__, map(slice, starts, ends)))
        digest_at = (pos + klen + _TS.size).tolist()
        digest_to = [at + DIGEST_SIZE for at in digest_at]
        digests = list(map(closings.__getitem__, map(slice, digest_at, digest_to)))
        crcs = np.fromiter(map(zlib.crc32, keys), np.int64, len(keys))
        gids = self._gids(crcs)
        order = np.argsort(gids, kind="stable")
        sorted_gids = gids[order]
        first = np.concatenate(([True], sorted_gids[1:] != sorted_gids[:-1]))
        run_start = np.maximum.accumulate(np.where(first, np.arange(len(keys)), 0))
        rank = np.empty(len(keys), np.int64)
        rank[order] = np.arange(len(keys)) - run_start
        for turn in range(int(rank.max()) + 1):
            chosen = np.flatnonzero(rank == turn)
            self._close_records(gids[chosen], [keys[i] for i in chosen.tolist()], stamps[chosen],
                                states[chosen], [digests[i] for i in chosen.tolist()])

    def _close_records(self, gids: npt.NDArray[np.int64], keys: list[bytes], stamps: npt.NDArray[np.int64],
                       states: npt.NDArray[np.uint8], label_digests: list[bytes]) -> None:
        """Close the pending record of each (``keys``, ``stamps``) in its group ``gids`` (distinct)
        as :meth:`_close_one` does, the groups parsed and rebuilt together: the record is found
        as the first occurrence of its id key in its group that starts a record of that event
        time; any other case (an id with an earlier record there, or none) goes through
        :meth:`_close_one`."""
        groups = self._groups
        gid_list = gids.tolist()
        olds = list(map(groups.__getitem__, gid_list))
        found = np.fromiter(map(bytes.find, olds, keys), np.int64, len(keys))
        sizes = np.fromiter(map(len, olds), np.int64, len(olds))
        buf = bytearray().join(olds)
        data = np.frombuffer(buf, np.uint8)  # patched in place below
        group_ends = np.cumsum(sizes)
        cand = group_ends - sizes + found - _AT  # where the record would start
        klen = np.fromiter(map(len, keys), np.int64, len(keys))
        ok = (found >= _AT) & np.isin(states, (_JOINED, _CLOSED))
        records = _group_record_starts(data, sizes)
        if records.size:  # the key where a record of the group starts, then its time and state
            at = np.searchsorted(records, cand)
            ok &= (at < records.size) & (records[np.minimum(at, records.size - 1)] == cand)
            maybe = np.flatnonzero(ok)
            ts_at = cand[maybe] + _AT + klen[maybe]
            ok[maybe] = (_i64_at(data, ts_at) == stamps[maybe]) & (data[ts_at + 8] == _PENDING)
        else:
            ok[:] = False
        slow = np.flatnonzero(~ok).tolist()
        fast = np.flatnonzero(ok)
        if fast.size:
            cand, klen, new_states = cand[fast], klen[fast], states[fast]
            ts_at = cand + _AT + klen
            joined = new_states == _JOINED
            body = ts_at + _BODY  # where the pending record's _PRED starts: the closed one ends there
            rec_end = cand + _u32_at(data, cand)
            # a closed record: the pending one's head (its length changed), id key, time (its
            # state changed) and payload digest, then a joined one's context id and label digest
            tail_size = np.where(joined, _JOINED_TAIL.size, 0)
            # A joined record's tail is written where its pending _PRED began (the context id moved
            # one byte back, the label's digest after it) and the rest of the pending record cut.
            room = ~joined | (rec_end - body >= _JOINED_TAIL.size)
            if not room.all():  # a pending record without payload: shorter than the joined tail
                slow += fast[~room].tolist()
                keep = np.flatnonzero(room)
                fast, cand, klen, new_states = fast[keep], cand[keep], klen[keep], new_states[keep]
                ts_at, joined, body, rec_end, tail_size = (ts_at[keep], joined[keep], body[keep],
                                                           rec_end[keep], tail_size[keep])
            new_length = body - cand + tail_size
            for byte in range(4):
                data[cand + byte] = new_length >> 8 * byte & 0xFF
            data[ts_at + 8] = new_states
            tail_at = body[joined]
            data[tail_at[:, None] + _FOUR] = data[tail_at[:, None] + 1 + _FOUR]
            label = b"".join([label_digests[i] for i in fast[joined].tolist()])
            data[tail_at[:, None] + 4 + _EIGHT] = np.frombuffer(label, np.uint8).reshape(-1, DIGEST_SIZE)
            patched = bytes(buf)
            group_starts = (group_ends - sizes)[fast].tolist()
            heads = map(patched.__getitem__, map(slice, group_starts, (body + tail_size).tolist()))
            rests = map(patched.__getitem__, map(slice, rec_end.tolist(), group_ends[fast].tolist()))
            # any(): setitem returns None, so every group is put (a loop in C)
            any(map(groups.__setitem__, gids[fast].tolist(), map(operator.add, heads, rests)))
            self._pending -= fast.size
        for i in slow:
            self._close_one(keys[i], int(stamps[i]), int(states[i]), label_digests[i])

    def _close_one(self, key: bytes, ts: int, state: int, label_digest: bytes) -> None:
        """Close the pending record of ``key`` at ``ts`` (``state``: joined or closed) as the live
        join closed it; ValueError if there is none."""
        found = self._locate(key, ts)
        at = -1 if found is None else found[1] + _AT + len(key)
        group = b"" if found is None else self._groups[found[0]]
        if found is None or group[at + 8] != _PENDING or state not in (_JOINED, _CLOSED):
            raise ValueError(f"join changes do not apply: no pending record of {_pid(key)!r} at {ts} "
                             "to close")
        gid, start, end = found
        tail = b""
        if state == _JOINED:  # the context id as in the pending record's _PRED, the label's digest
            tail = group[at + _BODY + 1 : at + _BODY + 5] + label_digest
        crc = _HEAD.unpack_from(group, start)[1]
        closed = _closed(key, crc, ts, state, group[at + _DIGEST_AT : at + _BODY], tail)
        self._groups[gid] = b"".join((group[:start], closed, group[end:]))
        self._pending -= 1

    def _locate(self, key: bytes, ts: int) -> tuple[int, int, int] | None:
        """(group, start, end) of the record of id key ``key`` at event time ``ts``, if remembered.

        An id has at most one record per event time: a second prediction within the horizon is a
        duplicate, so one id's records have distinct (increasing) times."""
        gid = self._gid(zlib.crc32(key))
        group = self._groups[gid]
        if key not in group:  # a C-level substring test first: a new record's id is not there
            return None
        at = _AT + len(key)
        for pos in _find(group, key):
            if _TS.unpack_from(group, pos + at)[0] == ts:
                return gid, pos, pos + _HEAD.unpack_from(group, pos)[0]
        return None

    def _put(self, crc: int, key: bytes, ts: int, record: bytes | None) -> None:
        """Replace, add (``record``) or drop (None) the record of ``key`` at ``ts``."""
        found = self._locate(key, ts)
        if record is not None:
            self._pending += _TS.unpack_from(record, _AT + len(key))[1] == _PENDING
        if found is None:
            if record is not None:
                self._add(self._gid(crc), crc, record, ts)
            return
        gid, pos, end = found
        group = self._groups[gid]
        self._pending -= _TS.unpack_from(group, pos + _AT + len(key))[1] == _PENDING
        if record is None:
            self._records -= 1
        else:
            self._estimate += len(record)
        self._groups[gid] = b"".join((group[:pos], record or b"", group[end:]))

    # -- memory budget ------------------------------------------------------------------------

    def _adopt_store(self, store: PendingStore) -> None:
        """Run with the store a restore under a budget (:func:`restoring_under_budget`) spilled
        into: every pending record not kept whole is a stub, and those kept whole fit in 3/4 of
        the budget, so no second needs walking (:attr:`_unspilled` empty)."""
        budget = _RESTORE_BUDGET.get()
        assert budget is not None
        self._store, self._budget = store, budget.budget
        self._check_at = 0  # look at the budget at the next prediction
        self._unspilled, self._unspilled_heap = set(), []

    def set_memory_budget(
        self, budget_bytes: int, directory: Path | str | None = None, segment_ms: int = 900_000
    ) -> None:
        """Keep the records in memory under ``budget_bytes`` (0: no budget, all in memory) by
        moving the payloads of pending predictions (context, prediction, features) to a
        :class:`~driftline.operators.pending_store.PendingStore` in ``directory``: over the
        budget, those of new predictions as they come, and those kept whole before, oldest second
        of event time first. Results and checkpoints are the same either way: a spilled record
        is read back whole wherever its payload is needed (a join, a checkpoint).

        >>> from driftline.schemas.events import LabelEvent, PredictionEvent
        >>> join = LabelJoin(horizon_ms=60_000, max_pending=1000, max_held=1000)
        >>> join.set_memory_budget(1)  # one byte: every payload goes to disk
        >>> for pid, ts in (("p1", 1_000), ("p2", 3_000)):
        ...     event = PredictionEvent(prediction_id=pid, model_id="m", timestamp=ts,
        ...                             features={"x": 0.5, "y": 2.0, "z": 4.0}, prediction=0.9)
        ...     _ = join.on_prediction(event, segment="")
        >>> join.spilled_count, join.store_bytes
        (2, 64)
        >>> join.on_label(LabelEvent(prediction_id="p1", label="1", timestamp=2_000)).features_json
        '{"x":0.5,"y":2.0,"z":4.0}'
        >>> join.set_memory_budget(0)
        """
        if budget_bytes < 0:
            raise ValueError("budget_bytes must be >= 0 (0: no budget)")
        if not budget_bytes:
            if self._store is not None:
                self._groups = list(map(self._whole_group, self._groups))
                self._store.close()
            self._no_store()
            self._estimate = sum(map(len, self._groups))
            return
        if self._store is not None and budget_bytes == self._budget:
            return  # restored under this budget (restoring_under_budget), or set again: as it is
        if self._store is None:
            self._store = PendingStore(directory, segment_ms)
        self._budget = budget_bytes
        self._spilling = self._through = False
        self._unspilled = None
        self._check_at = 0  # look at the budget at the next prediction

    @property
    def spilled_count(self) -> int:
        """Pending predictions whose payload is in the pending store (walks the table: for tests
        and metrics, not per event)."""
        count = 0
        for group in self._groups:
            for pos, _, klen in _walk(group):
                at = pos + _AT + klen
                count += group[at + 8] == _PENDING and bool(group[at + _BODY] & _SPILLED)
        return count

    @property
    def store_bytes(self) -> int:
        """Bytes of the pending store's segment files (0 without a budget)."""
        return 0 if self._store is None else self._store.bytes_on_disk

    def _check_budget(self) -> None:
        """The records may be over the budget. If so, new pending records go to the store as they
        come (:meth:`_spill_record`, until a look finds the records under the budget), and the
        oldest second holding whole pending payloads is spilled (never the newest second), one
        per call (a restore that starts far over the budget catches up over the next predictions
        instead of stalling the first), until the records are under 3/4 of it. A second is walked
        again only if whole pending records were added to it since (:attr:`_unspilled`): spilling
        finds a record by walking its group, several records, so once per record at most."""
        store = self._store
        if store is None:
            self._check_at = _NO_BUDGET
            return
        if not self._spilling:  # a new round: the exact figure (the estimate ignores shrinking)
            self._estimate = sum(map(len, self._groups))
            self._through = self._estimate > self._budget
            if not self._through:
                self._check_at = self._budget
                return
            self._spilling = True
        # Never the newest second: it is still filling (a second already spilled keeps the records
        # that arrive in it later in memory until they are looked at again).
        keys = self._bucket_keys
        if self._unspilled is None:
            start = 0 if self._spilled_key is None else bisect.bisect_right(keys, self._spilled_key)
            if start < len(keys) - 1:
                key = keys[start]
                self._estimate -= self._spill_bucket(store, key)
                self._spilled_key = key
            done = start + 2 >= len(keys)
            if done:  # every bucket looked at once: from now on only those with whole records added
                self._unspilled, self._unspilled_heap = set(keys[-1:]), keys[-1:]
        else:
            newest = keys[-1] if keys else None
            heap = self._unspilled_heap
            while heap and heap[0] not in self._buckets:  # forgotten since
                self._unspilled.discard(heapq.heappop(heap))
            if heap and heap[0] != newest:
                key = heapq.heappop(heap)
                self._unspilled.discard(key)
                self._estimate -= self._spill_bucket(store, key)
            done = not heap or heap[0] == newest
        if self._estimate <= self._budget * 3 // 4 or done:
            # Done, or nothing left to spill (closed records and late arrivals fill the budget):
            # look again once another eighth of it was added.
            self._spilling = False
            self._check_at = max(self._budget, self._estimate + self._budget // 8)
        else:
            self._check_at = -1

    def _spill_bucket(self, store: PendingStore, key: int) -> int:
        """Move the payloads of bucket ``key``'s pending records not spilled yet to ``store`` (one
        append for the whole second); the bytes this saved. A record becomes a stub: its head with
        the length changed, id key, time, digest, the flags (+ _SPILLED) to label length, and the
        payload's reference."""
        low, split = self._low, self._split
        high = 2 * low - 1
        low -= 1
        gids = {crc & low if crc & low >= split else crc & high for crc in self._buckets[key]}
        first, last = key * _BUCKET_MS, (key + 1) * _BUCKET_MS
        groups, unpack_head, unpack_ts = self._groups, _HEAD.unpack_from, _TS.unpack_from
        payloads: list[bytes] = []
        found: list[tuple[int, list[tuple[int, int, int]]]] = []  # (group, [(start, end, flags at)])
        for gid in gids:
            group = groups[gid]
            spots: list[tuple[int, int, int]] = []
            pos, size = 0, len(group)
            while pos < size:  # as _walk, inline
                end = pos + unpack_head(group, pos)[0]
                code = group[pos + _AT] | group[pos + _AT + 1] << 8
                at = pos + _AT + (18 if code == _UUID_CODE else 2 + code)
                ts, state = unpack_ts(group, at)
                head = at + _BODY
                if (state == _PENDING and first <= ts < last and not group[head] & _SPILLED
                        and end > head + _PRED.size):
                    spots.append((pos, end, head))
                    payloads.append(group[head + _PRED.size : end])
                pos = end
            if spots:
                found.append((gid, spots))
        if not payloads:
            return 0
        refs = iter(store.put_many(last - 1, payloads))
        saved = 0
        for gid, spots in found:
            group = groups[gid]
            out = bytearray()
            kept = 0
            for pos, end, head in spots:
                out += group[kept:pos]
                stub = len(out)
                out += group[pos : head + _PRED.size]
                ref = next(refs)
                out += ref
                stub_tail = _PRED.size + len(ref)
                _STUB_LENGTH.pack_into(out, stub, head - pos + stub_tail)
                out[stub + head - pos] |= _SPILLED
                kept = end
                saved += end - head - stub_tail
            out += group[kept:]
            groups[gid] = bytes(out)
        return saved

    def _spill_record(self, record: bytes, ts: int) -> bytes:
        """A new pending record (at event time ``ts``) with its payload moved to the store."""
        code = record[_AT] | record[_AT + 1] << 8
        head = _AT + (18 if code == _UUID_CODE else 2 + code) + _BODY
        payload_at = head + _PRED.size
        if len(record) == payload_at or self._store is None:
            return record
        stub = bytearray(record[:payload_at])
        stub += self._store.put(ts, record[payload_at:])
        _STUB_LENGTH.pack_into(stub, 0, len(stub))
        stub[head] |= _SPILLED
        return bytes(stub)

    def _whole(self, record: bytes) -> bytes:
        """``record`` as it was encoded: a spilled one with its payload read back."""
        return record if self._store is None else _whole_record(record, self._store.get)

    def _whole_group(self, group: bytes) -> bytes:
        """A group with every spilled record read back."""
        return group if self._store is None else _whole_group(group, self._store.get)

    # -- internals ----------------------------------------------------------------------------

    def _gid(self, crc: int) -> int:
        """The group of an id hash (linear hashing: groups below the split pointer are split)."""
        gid = crc & (self._low - 1)
        if gid < self._split:
            gid = crc & (2 * self._low - 1)
        return gid

    def _add(self, gid: int, crc: int, record: bytes, ts: int) -> None:
        """Append a record (of an id with hash ``crc``, at event time ``ts``) to its group."""
        if self._added is not None:
            self._added.add((_record_key(record), ts))
        self._groups[gid] += record
        self._records += 1
        self._estimate += len(record)
        second = ts // _BUCKET_MS
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = bucket = array("I")
            bisect.insort(self._bucket_keys, second)
        bucket.append(crc)
        while self._records > _LOAD * len(self._groups):
            self._split_group()

    def _split_group(self) -> None:
        """Split the group at the split pointer between itself and a new last group."""
        low, at = self._low, self._split
        group = self._groups[at]
        stay: list[bytes] = []
        move: list[bytes] = []
        pos, size = 0, len(group)
        while pos < size:
            length, crc = _HEAD.unpack_from(group, pos)
            (move if crc & low else stay).append(group[pos : pos + length])
            pos += length
        self._groups[at] = b"".join(stay)
        self._groups.append(b"".join(move))
        self._split = at + 1
        if self._split == low:
            self._low, self._split = 2 * low, 0

    def _merge_group(self) -> None:
        """Undo the last split: the last group goes back into the one it was split from."""
        if self._split == 0:
            self._low //= 2
            self._split = self._low
        self._split -= 1
        last = self._groups.pop()
        self._groups[self._split] += last

    def _ctx_id(self, ctx: tuple[str, str, str]) -> int:
        """The interned id of a (model, version, segment) context."""
        ctx_id = self._ctx_ids.get(ctx)
        if ctx_id is None:
            ctx_id = self._ctx_ids[ctx] = len(self._ctx)
            self._ctx.append(ctx)
        return ctx_id

    def _encode(
        self,
        ts: int,
        ctx: tuple[str, str, str],
        features: Mapping[str, Any],
        key: bytes,
        crc: int,
        rerouted: bool,
        digest: bytes,
        tail: tuple[int, int, bytes],
        encoded: tuple[_Layout, bytes, int | None] | None = None,
    ) -> bytes:
        """The record of a pending prediction whose id key is ``key`` (hash ``crc``); ``tail``:
        :func:`_pending_tail` of its prediction; ``encoded``: its features' layout, their encoding in
        that layout and the layout's shape id if known, when the caller has them."""
        if encoded is None:
            values = tuple(features.values())
            shape_id = self._shape_id((tuple(features), tuple(map(type, values))))
        else:
            layout, packed, known = encoded
            shape_id = self._shape_id(layout) if known is None else known
        if shape_id == _NO_SHAPE:
            packed = features_to_json(features).encode()
        elif encoded is None:
            packed = self._shapes[shape_id].encode(values)
        flags, label_len, prediction = tail
        body = b"".join((key, _TS.pack(ts, _PENDING), digest,
                         _PRED.pack(flags | _REROUTED if rerouted else flags, self._ctx_id(ctx), shape_id,
                                    label_len),
                         prediction, packed))
        return _HEAD.pack(_AT + len(body), crc) + body

    def _shape_id(self, layout: _Layout) -> int:
        """The interned id of a feature layout (:data:`_NO_SHAPE` once :data:`_MAX_SHAPES` are)."""
        shape_id = self._shape_ids.get(layout)
        if shape_id is None:
            if len(self._shapes) >= _MAX_SHAPES:
                return _NO_SHAPE
            shape_id = self._shape_ids[layout] = len(self._shapes)
            self._shapes.append(_Shape(*layout))
        return shape_id

    def _outcomes(self, joined: Sequence[_Joined]) -> list[JoinedOutcome]:
        """The outcomes of labels that joined pending records (:meth:`_label`), in order; each
        distinct label's text and value are found once, the features' JSON of the batch at once
        (:meth:`_features_jsons`)."""
        labels: dict[tuple[type, bool | int | float | str], tuple[str, float | None]] = {}
        ctxs = self._ctx
        ts_of, pred_of, double = _TS.unpack_from, _PRED.unpack_from, _DOUBLE.unpack_from
        outcomes = []
        shape_ids: list[int] = []
        features: list[bytes] = []
        for pid, data, start, end, label_ts, label, rerouted in joined:
            pred_ts = ts_of(data, start)[0]
            offset = start + _BODY
            flags, ctx_id, shape_id, label_len = pred_of(data, offset)
            offset += _PRED.size
            score = value = None
            if flags & _HAS_SCORE:
                score = double(data, offset)[0]
                offset += 8
            if flags & _HAS_VALUE:
                value = double(data, offset)[0]
                offset += 8
            text = None
            if label_len != _NO_LABEL:
                text = data[offset : offset + label_len].decode()
                offset += label_len
            shape_ids.append(shape_id)
            features.append(data[offset:end])
            seen = labels.get((label.__class__, label))
            if seen is None:
                seen = labels[(label.__class__, label)] = (normalise_label(label), _label_value(label))
            label_text, label_value = seen
            # _outcome, inline (a call per label); the features' JSON is set below, for the batch at once
            regression = value is not None and text is None
            correct = abs_error = None
            if text is not None:
                correct = int(text == label_text)
            elif score is not None and label_text in _BINARY:
                positive, negative = _BINARY[label_text]
                text = positive if score >= 0.5 else negative
                correct = int(text == label_text)
            if (value is not None and label_value is not None
                    and max(abs(value), abs(label_value)) <= MAX_ABS_VALUE):
                abs_error = abs(value - label_value)
            model_id, model_version, segment = ctxs[ctx_id]
            bits = (REROUTED_PREDICTION if flags & _REROUTED else 0) | (REROUTED_LABEL if rerouted else 0)
            outcomes.append(JoinedOutcome(
                pid, model_id, model_version, segment, pred_ts, label_ts, label_ts - pred_ts, text or "",
                score, value, "" if regression else label_text, label_value if regression else None, correct,
                abs_error, "", bits))
        for outcome, features_json in zip(outcomes, self._features_jsons(shape_ids, features), strict=True):
            outcome.features_json = features_json
        return outcomes

    def _features_jsons(self, shape_ids: list[int], features: list[bytes]) -> list[str]:
        """The features' JSON text of each record (its features as encoded in shape ``shape_ids[i]``),
        each shape's records at once (:meth:`_Shape.jsons`)."""
        distinct = set(shape_ids)
        if len(distinct) == 1:
            (only,) = distinct
            if only == _NO_SHAPE:
                return list(map(bytes.decode, features))
            return self._shapes[only].jsons(features)
        out = [""] * len(features)
        for shape_id in distinct:
            at = [i for i, s in enumerate(shape_ids) if s == shape_id]
            mine = [features[i] for i in at]
            if shape_id == _NO_SHAPE:
                texts = list(map(bytes.decode, mine))
            else:
                texts = self._shapes[shape_id].jsons(mine)
            for i, text in zip(at, texts, strict=True):
                out[i] = text
        return out

    def _claim_held(
        self, pid: str, pred_ts: int, ctx: tuple[str, str, str]
    ) -> tuple[int, bool | int | float | str, bool, bytes] | None:
        """The first held label (in label-log order) inside the interval, with its digest; later
        ones are duplicates (of the prediction whose context is ``ctx``)."""
        seqs = self._held_ids.get(pid)
        if not seqs:
            return None
        winner = None
        for seq in list(seqs):
            _, ts, label = self._held[seq]
            if pred_ts <= ts <= pred_ts + self.horizon_ms:
                digest, source = self._held_digests.get(seq, (UNKNOWN_DIGEST, None))
                if winner is None:
                    winner = (ts, label, self._held_meta.get(seq, ("", False))[1], digest)
                else:
                    self.counters["duplicate_labels"] += 1
                    self._add_duplicate("label", pid, ts, winner[3], digest, self._ctx_id(ctx), source)
                self._drop_held(seq)
        return winner

    def _drop_held(self, seq: int) -> None:
        pid = self._held.pop(seq)[0]
        self._held_meta.pop(seq, None)
        self._held_digests.pop(seq, None)
        seqs = self._held_ids[pid]
        seqs.remove(seq)
        if not seqs:
            del self._held_ids[pid]

    def _close(self, pid: str, pred_ts: int) -> tuple[str, str, str] | None:
        """Close the pending record of ``pid`` at ``pred_ts``; its (model, version, segment) if
        there was one."""
        key = _id_key(pid)
        crc = zlib.crc32(key)
        gid = self._gid(crc)
        group = self._groups[gid]
        at = _AT + len(key)
        for pos in _find(group, key):
            ts, state = _TS.unpack_from(group, pos + at)
            if ts == pred_ts and state == _PENDING:
                end = pos + _HEAD.unpack_from(group, pos)[0]
                digest = group[pos + at + _DIGEST_AT : pos + at + _BODY]
                closed = _closed(key, crc, ts, _CLOSED, digest)
                self._groups[gid] = b"".join((group[:pos], closed, group[end:]))
                self._note_closing(key, ts, _CLOSED)
                self._pending -= 1
                ctx: tuple[str, str, str] = self._ctx[_PRED.unpack_from(group, pos + at + _BODY)[1]]
                return ctx
        return None

    def _expire(self, gid: int, cut: int, out: list[ExpiredPrediction]) -> None:
        """Close every pending record of group ``gid`` older than ``cut``, as expired."""
        group = self._groups[gid]
        parts: list[bytes] = []
        kept = 0
        for pos, end, klen in _walk(group):
            at = pos + _AT + klen
            pred_ts, state = _TS.unpack_from(group, at)
            if state != _PENDING or pred_ts >= cut:
                continue
            key = group[pos + _AT : at]
            digest = group[at + _DIGEST_AT : at + _BODY]
            crc = _HEAD.unpack_from(group, pos)[1]
            parts += (group[kept:pos], _closed(key, crc, pred_ts, _CLOSED, digest))
            self._note_closing(key, pred_ts, _CLOSED)
            kept = end
            self._pending -= 1
            model_id, model_version, segment = self._ctx[_PRED.unpack_from(group, at + _BODY)[1]]
            expired_at = pred_ts + self.horizon_ms
            out.append(ExpiredPrediction(_pid(key), model_id, model_version, segment, pred_ts, expired_at))
        if parts:
            parts.append(group[kept:])
            self._groups[gid] = b"".join(parts)

    def _forget(self, cut: int) -> None:
        """Drop every record older than ``cut`` (whole buckets only: keeping more changes nothing)."""
        keys = self._bucket_keys
        gone = 0
        while gone < len(keys) and (keys[gone] + 1) * _BUCKET_MS <= cut:
            gone += 1
        if not gone:
            return
        limit = (keys[gone - 1] + 1) * _BUCKET_MS  # every record older is in one of these buckets
        gids: set[int] = set()
        for key in keys[:gone]:
            gids.update(map(self._gid, self._buckets.pop(key)))
        del keys[:gone]
        for gid in gids:
            group = self._groups[gid]
            records = _walk(group)
            kept = [group[pos:end] for pos, end, klen in records
                    if _TS.unpack_from(group, pos + _AT + klen)[0] >= limit]
            self._records -= len(records) - len(kept)
            self._groups[gid] = b"".join(kept)
        self._evict_key, self._evict_queue = None, []
        while len(self._groups) > _MIN_GROUPS and self._records < len(self._groups):
            self._merge_group()

    def _evict_oldest_pending(self) -> None:
        while True:
            if self._evict_key is None or not self._evict_queue:
                self._fill_evict_queue()
            ts, pid = self._evict_queue.pop()
            ctx = self._close(pid, ts)
            if ctx is not None:
                self.counters["evicted_pending"] += 1
                self.evicted.append(ExpiredPrediction(pid, *ctx, ts, ts + self.horizon_ms, "evicted"))
                return

    def _fill_evict_queue(self) -> None:
        """Pending entries of the oldest bucket holding any, newest first (popped from the end)."""
        start = 0 if self._evict_key is None else bisect.bisect_right(self._bucket_keys, self._evict_key)
        for key in self._bucket_keys[start:]:
            queue = []
            for gid in set(map(self._gid, self._buckets[key])):
                group = self._groups[gid]
                for pos, _, klen in _walk(group):
                    at = pos + _AT + klen
                    ts, state = _TS.unpack_from(group, at)
                    if state == _PENDING and ts // _BUCKET_MS == key:
                        queue.append((ts, _pid(group[pos + _AT : at])))
            if queue:
                queue.sort(reverse=True)
                self._evict_key, self._evict_queue = key, queue
                return
        raise AssertionError("pending count is positive but no pending record was found")


def _whole_record(record: bytes, read: Callable[[bytes], bytes]) -> bytes:
    """``record`` as it was encoded: a spilled one with its payload read back by ``read``."""
    code = record[_AT] | record[_AT + 1] << 8
    head = _AT + (18 if code == _UUID_CODE else 2 + code) + _BODY
    if record[head - _BODY + 8] != _PENDING or not record[head] & _SPILLED:
        return record
    payload_at = head + _PRED.size
    whole = bytearray(record[:payload_at])
    whole += read(record[payload_at:])
    _STUB_LENGTH.pack_into(whole, 0, len(whole))
    whole[head] &= ~_SPILLED
    return bytes(whole)


def _whole_group(group: bytes, read: Callable[[bytes], bytes]) -> bytes:
    """A group with every spilled record read back by ``read``."""
    return b"".join(_whole_record(group[pos:end], read) for pos, end, _ in _walk(group))


def _stub_group(group: bytes, store: PendingStore) -> bytes:
    """``group`` with the payload of every pending record not spilled yet moved to ``store`` (each
    to the segment of its own event time) and the record made a stub, as :meth:`LabelJoin._spill_bucket`
    makes them."""
    unpack_head, unpack_ts = _HEAD.unpack_from, _TS.unpack_from
    out = bytearray()
    kept = pos = 0
    size = len(group)
    while pos < size:  # as _walk, inline
        end = pos + unpack_head(group, pos)[0]
        code = group[pos + _AT] | group[pos + _AT + 1] << 8
        at = pos + _AT + (18 if code == _UUID_CODE else 2 + code)
        ts, state = unpack_ts(group, at)
        head = at + _BODY
        if state == _PENDING and not group[head] & _SPILLED and end > head + _PRED.size:
            out += group[kept:pos]
            stub = len(out)
            out += group[pos : head + _PRED.size]
            ref = store.put(ts, group[head + _PRED.size : end])
            out += ref
            _STUB_LENGTH.pack_into(out, stub, head - pos + _PRED.size + len(ref))
            out[stub + head - pos] |= _SPILLED
            kept = end
        pos = end
    if not kept:
        return group
    out += group[kept:]
    return bytes(out)


def _stub_groups(groups: list[bytes], store: PendingStore) -> list[bytes]:
    """:func:`_stub_group` of each of ``groups``, with numpy instead of Python per record (a
    restore stubs every record of a base: ~4 us each in Python, 10M at 10M pending): the groups
    are parsed together, one record of every group per round, and the payloads of each segment
    go to the store as one block. Every group is returned as a new ``bytes``.

    >>> join = LabelJoin(horizon_ms=10**9, max_pending=100, max_held=10)
    >>> for i in range(40):
    ...     _ = join.on_prediction(PredictionEvent(prediction_id=f"p{i}", model_id="m", timestamp=i * 400_000,
    ...                                            features={"x": float(i)}, prediction=0.5), segment="")
    >>> _ = join.on_label(LabelEvent(prediction_id="p3", label="1", timestamp=1_300_000))
    >>> one, many = PendingStore(), PendingStore()
    >>> stubs = [_stub_group(group, one) for group in join._groups]
    >>> _stub_groups(join._groups, many) == stubs
    True
    >>> [_whole_group(group, many.get) for group in _stub_groups(join._groups, many)] == join._groups
    True
    >>> one.close(), many.close()
    (None, None)
    """
    sizes = np.fromiter(map(len, groups), np.int64, len(groups))
    buf = b"".join(groups)
    starts = _group_record_starts(np.frombuffer(buf, np.uint8), sizes)
    return _stub_records(buf, starts, np.cumsum(sizes), store)


def _stub_records(buf: bytes, pos: npt.NDArray[np.int64], ends: npt.NDArray[np.int64],
                  store: PendingStore) -> list[bytes]:
    """The pieces of ``buf`` (records starting at ``pos``, the pieces ending at ``ends``) with
    their pending payloads moved to ``store`` (see :func:`_stub_groups`)."""
    sizes = np.diff(ends, prepend=0)
    data = np.frombuffer(buf, np.uint8)
    end = pos + _u32_at(data, pos)
    code = data[pos + _AT].astype(np.int64) | data[pos + _AT + 1].astype(np.int64) << 8
    at = pos + _AT + np.where(code == _UUID_CODE, 18, 2 + code)
    pending = np.flatnonzero(data[at + 8] == _PENDING)  # a closed record may end where its flags would be
    head = at[pending] + _BODY
    payload_at = head + _PRED.size
    chosen = (data[head] & _SPILLED == 0) & (end[pending] > payload_at)
    rec, head, payload_at = pending[chosen], head[chosen], payload_at[chosen]
    if not rec.size:
        return [buf[a:b] for a, b in zip((ends - sizes).tolist(), ends.tolist(), strict=True)]
    rec_pos, rec_end = pos[rec], end[rec]
    lengths = rec_end - payload_at
    stamps = data[at[rec][:, None] + np.arange(8)].view("<i8").ravel()
    segments = stamps // store.segment_ms
    # Each segment's payloads as one block (records in order within it): slices of ``buf``
    # joined (faster here than numpy's per-byte indexing); and their references.
    order = np.argsort(segments, kind="stable")
    bounds = np.flatnonzero(np.diff(segments[order])) + 1
    sorted_lengths = lengths[order]
    froms, tos = payload_at[order].tolist(), rec_end[order].tolist()
    ref_rows: list[npt.NDArray[np.uint8]] = []
    for first, last in zip([0, *bounds.tolist()], [*bounds.tolist(), rec.size], strict=True):
        block = b"".join([buf[a:b] for a, b in zip(froms[first:last], tos[first:last], strict=True)])
        ref_rows.append(store.put_block(int(stamps[order[first]]), block, sorted_lengths[first:last]))
    width = ref_rows[0].shape[1]
    if all(rows.shape[1] == width for rows in ref_rows):
        refs = np.empty((rec.size, width), np.uint8)
        refs[order] = np.concatenate(ref_rows)
        widths = np.full(rec.size, width)
        refs = refs.ravel()
    else:  # a segment past 4 GiB: its references are longer
        widths = np.empty(rec.size, np.int64)
        widths[order] = np.concatenate([np.full(len(rows), rows.shape[1]) for rows in ref_rows])
        flat = np.concatenate([rows.ravel() for rows in ref_rows])
        ref_at = np.empty(rec.size, np.int64)  # where each record's reference starts in ``flat``
        ref_at[order] = np.cumsum(widths[order]) - widths[order]
        refs = flat[_spans(ref_at, widths)]
    # The groups without the payloads, each record's reference where its payload began.
    removed = np.cumsum(lengths) - lengths  # payload bytes before each record's
    added = np.cumsum(widths) - widths
    # Runs of bytes kept and of payloads (then of references) in turn: one boolean a byte.
    edges = np.empty(2 * rec.size + 2, np.int64)
    edges[0], edges[1:-1:2], edges[2:-1:2], edges[-1] = 0, payload_at, rec_end, data.size
    runs = np.diff(edges)
    turns = np.arange(2 * rec.size + 1) % 2 == 0
    kept = data[np.repeat(turns, runs)]
    runs[1::2] = widths
    is_kept = np.repeat(turns, runs)
    out = np.empty(is_kept.size, np.uint8)
    out[is_kept] = kept
    out[~is_kept] = refs
    start = rec_pos - removed + added
    size = payload_at - rec_pos + widths
    for byte in range(4):
        out[start + byte] = size >> 8 * byte & 0xFF
    out[start + head - rec_pos] |= _SPILLED
    before = np.searchsorted(rec_pos, ends, side="left")  # records stubbed before each group's end
    new_ends = (ends - np.concatenate(([0], np.cumsum(lengths)))[before]
                + np.concatenate(([0], np.cumsum(widths)))[before])
    whole = out.tobytes()
    starts = np.concatenate(([0], new_ends[:-1]))
    return [whole[a:b] for a, b in zip(starts.tolist(), new_ends.tolist(), strict=True)]


_FOUR = np.arange(4)


def _u32_at(data: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The little-endian uint32 at each offset ``at`` of ``data``."""
    return data[at[:, None] + _FOUR].view("<u4").ravel().astype(np.int64)


def _spans(starts: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The offsets of the spans (``starts``, ``lengths``), one after the other."""
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))


def _i64_at(data: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The little-endian int64 at each offset ``at`` of ``data``."""
    return data[at[:, None] + _EIGHT].view("<i8").ravel()


_EIGHT = np.arange(8)
_STATE_BYTES = tuple(bytes([state]) for state in (_PENDING, _JOINED, _CLOSED))


def _group_record_starts(data: npt.NDArray[np.uint8], sizes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Where each record starts in ``data``, groups of ``sizes`` bytes one after the other: one
    record of every group per round (a group holds a few), in order."""
    ends = np.cumsum(sizes)
    rounds = []
    cur, limit = ends[sizes > 0] - sizes[sizes > 0], ends[sizes > 0]
    while cur.size:
        rounds.append(cur)
        cur = cur + _u32_at(data, cur)
        more = cur < limit
        cur, limit = cur[more], limit[more]
    return np.sort(np.concatenate(rounds)) if rounds else np.zeros(0, np.int64)


def _record_starts(records: bytes) -> list[int]:
    """Where each of concatenated records starts."""
    starts = []
    pos, size, unpack = 0, len(records), _STUB_LENGTH.unpack_from
    while pos < size:
        starts.append(pos)
        pos += unpack(records, pos)[0]
    return starts


def _closing_starts(closings: bytes) -> tuple[list[int], list[int]]:
    """Where each of concatenated closings (:func:`_closing`) starts, and its id key's length."""
    starts, key_lengths = [], []
    pos, size = 0, len(closings)
    while pos < size:
        code = closings[pos] | closings[pos + 1] << 8
        klen = 18 if code == _UUID_CODE else 2 + code
        starts.append(pos)
        key_lengths.append(klen)
        pos += klen + _TS.size + (DIGEST_SIZE if closings[pos + klen + 8] == _JOINED else 0)
    return starts, key_lengths


def _record_key(record: bytes) -> bytes:
    """The id key of a record."""
    code = _CODE.unpack_from(record, _AT)[0]
    return record[_AT : _AT + (18 if code == _UUID_CODE else 2 + code)]


def _id_key(pid: str) -> bytes:
    """How a prediction id is stored: a canonical (lowercase) UUID as its 16 bytes, else as UTF-8.

    >>> ids = ("0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5a", "0B9F6C2E-4A51-4C0E-9D3A-8F1E2B7C6D5A", "p", "\\ud800")
    >>> [len(_id_key(p)) for p in ids], all(_pid(_id_key(p)) == p for p in ids)
    ([18, 38, 3, 5], True)
    """
    if len(pid) == 36 and pid[8:24:5] == "----":
        digits = pid.replace("-", "")
        if len(digits) == 32:
            try:
                raw = bytes.fromhex(digits)
            except ValueError:
                raw = b""
            if raw.hex() == digits:  # lowercase hex digits only: the id text comes back exactly
                return _UUID_PREFIX + raw
    data = pid.encode("utf-8", "surrogatepass")
    if len(data) >= _UUID_CODE:
        raise ValueError("prediction id longer than 65534 bytes")
    return _CODE.pack(len(data)) + data


def _id_keys(pids: Sequence[str]) -> list[bytes]:
    """:func:`_id_key` of each id: a batch without an id of a UUID's length (36) is encoded without a
    Python call per id.

    >>> ids = ["p", "0b9f6c2e-4a51-4c0e-9d3a-8f1e2b7c6d5a", "é"]
    >>> _id_keys(ids) == list(map(_id_key, ids)) and _id_keys(ids[::2]) == list(map(_id_key, ids[::2]))
    True
    """
    if not pids or 36 in set(map(len, pids)):
        return list(map(_id_key, pids))
    data = list(map(str.encode, pids, repeat("utf-8"), repeat("surrogatepass")))
    if max(map(len, data)) >= _UUID_CODE:
        return list(map(_id_key, pids))  # raises for the long one
    return list(map(operator.add, map(_CODE.pack, map(len, data)), data))


def _pid(key: bytes) -> str:
    """The prediction id of a stored id key (inverse of :func:`_id_key`)."""
    if key[:2] == _UUID_PREFIX:
        h = key[2:].hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return key[2:].decode("utf-8", "surrogatepass")


_CLOSED_UUID = struct.Struct("<II18sqB8s")


def _closed(key: bytes, crc: int, ts: int, state: int, digest: bytes, tail: bytes = b"") -> bytes:
    """The record of a prediction no longer pending: its id, event time, state and payload digest,
    then ``tail`` (a joined one's context and label digest)."""
    if len(key) == 18 and not tail:
        return _CLOSED_UUID.pack(_CLOSED_UUID.size, crc, key, ts, state, digest)
    size = _AT + len(key) + _BODY + len(tail)
    return b"".join((_HEAD.pack(size, crc), key, _TS.pack(ts, state), digest, tail))


def _closing(key: bytes, ts: int, state: int, label_digest: bytes = b"") -> bytes:
    """What a delta says of a record its chain holds pending and that was closed since: the id key,
    event time and new state (:data:`_TS`), and a joined one's label digest; the rest of the closed
    record (head CRC, payload digest, context id) a restore takes from the pending one."""
    return b"".join((key, _TS.pack(ts, state), label_digest))


def _closing_keys(closings: bytes) -> list[tuple[bytes, int]]:
    """(id key, event time) of each of concatenated closings (:func:`_closing`).

    >>> _closing_keys(_closing(_id_key("a"), 5, _JOINED, bytes(8)) + _closing(_id_key("b"), 7, _CLOSED))
    [(b'\\x01\\x00a', 5), (b'\\x01\\x00b', 7)]
    """
    starts, key_lengths = _closing_starts(closings)
    return [(closings[pos : pos + klen], _TS.unpack_from(closings, pos + klen)[0])
            for pos, klen in zip(starts, key_lengths, strict=True)]


def _upgrade_v1_group(group: bytes) -> bytes:
    """A group of format-1 records (no digests) in the current format, digests unknown."""
    parts = []
    for pos, end, klen in _walk(group):
        at = pos + _AT + klen
        crc = _HEAD.unpack_from(group, pos)[1]
        state = _TS.unpack_from(group, at)[1]
        rest = group[at + _TS.size : end]
        if state == _JOINED:
            rest = _JOINED_TAIL.pack(_NO_CTX, UNKNOWN_DIGEST)
        head = _HEAD.pack(_AT + klen + _BODY + len(rest), crc)
        parts.append(b"".join((head, group[pos + _AT : at + _TS.size], UNKNOWN_DIGEST, rest)))
    return b"".join(parts)


def _walk(group: bytes) -> list[tuple[int, int, int]]:
    """(start, end, id key length) of each record of a group, in order."""
    out = []
    pos, size = 0, len(group)
    while pos < size:
        end = pos + _HEAD.unpack_from(group, pos)[0]
        code = _CODE.unpack_from(group, pos + _AT)[0]
        out.append((pos, end, 18 if code == _UUID_CODE else 2 + code))
        pos = end
    return out


def _find(group: bytes, key: bytes) -> list[int]:
    """Start of each record of the id ``key`` in a group, in order."""
    out = []
    pos, size = 0, len(group)
    while pos < size:
        if group.startswith(key, pos + _AT):
            out.append(pos)
        pos += _HEAD.unpack_from(group, pos)[0]
    return out


def _outcome(
    pid: str,
    ctx: tuple[str, str, str],
    pred_ts: int,
    predicted: str | None,
    score: float | None,
    value: float | None,
    features_json: str,
    label_ts: int,
    label_text: str,
    label_value: float | None,
) -> JoinedOutcome:
    """The outcome of a prediction with a label (``label_text``: :func:`normalise_label` of it,
    ``label_value``: :func:`_label_value`)."""
    # A value and no class: regression. The outcomes table keeps a regression's truth in
    # label_value only and a class in label only (label is LowCardinality: no float texts there).
    regression = value is not None and predicted is None
    correct = None
    if predicted is not None:
        correct = int(predicted == label_text)
    elif score is not None and label_text in _BINARY:
        positive, negative = _BINARY[label_text]
        predicted = positive if score >= 0.5 else negative
        correct = int(predicted == label_text)
    abs_error = None
    if value is not None and label_value is not None and max(abs(value), abs(label_value)) <= MAX_ABS_VALUE:
        abs_error = abs(value - label_value)  # an invalid value (beyond the bound) measures no error
    model_id, model_version, segment = ctx
    # positional, in field order (pid, model, version, segment, times, delay, prediction, label, ...)
    return JoinedOutcome(pid, model_id, model_version, segment, pred_ts, label_ts, label_ts - pred_ts,
                         predicted or "", score, value, "" if regression else label_text,
                         label_value if regression else None, correct, abs_error, features_json)
