"""Decode a fetched batch at once: the columnar front of stage 1.

:class:`BatchDecoder` accepts and rejects exactly what :class:`~driftline.operators.validate.Decoder`
accepts and rejects, with the same dead letters (kinds and messages): the pydantic models stay the
contract. A batch whose every payload has the common shape (one set of fields, an output object
without probabilities, ...) is first decoded in one compiled pass into typed structs and read out
as columns (:mod:`~driftline.operators.struct_decode`, with ``msgspec``: no dict per payload, only
its feature map, and the field checks done while parsing). Any other batch is parsed with one
``orjson`` call (each value on its own terms: see :func:`_parsed_together`; one by one when that
fails) and the common well-formed shape is checked in plain Python field by field, column by
column (a type set and a min/max per column of the batch where it is uniform, not a test per
value); either way the feature maps are checked per layout here, and the event times against the
records' times.
Whatever is unusual (invalid JSON, ``NaN`` tokens, RFC 3339 timestamps, a type pydantic would coerce
or reject, ...) goes through the pydantic path, record by record, so its messages stay pydantic's.
Accepted events come out in log order as columns (:class:`PredictionBatch`, :class:`LabelBatch`: ids,
model keys, event times as int64, feature maps, outputs, ...), the values pydantic's models would
hold; no event object is built per event (:meth:`PredictionBatch.event` builds one on request, without
a second validation: for a late event's row, and for the tests that compare with pydantic's).

Two differences between the parsers are handled here: ``orjson`` turns an integer literal beyond
64 bits into a float (pydantic keeps an int), so any float of magnitude 2**63 or more is left to
pydantic; and ``orjson`` rejects ``NaN``/``Infinity`` tokens and overflowing literals, which pydantic
accepts (as non-finite floats): a parse error always falls back.

>>> decoder = BatchDecoder(Decoder(max_message_bytes=1024, max_timestamp_skew_ms=60_000))
>>> batch, dead = decoder.predictions([
...     RawRecord("p", 0, 7, 1_000, b"a", b'{"prediction_id":"a","model_id":"m","timestamp":1000,'
...               b'"features":{"x":1,"c":"u"},"prediction":0.5}'),
...     RawRecord("p", 0, 8, 1_000, b"b", b'{"prediction_id":"b","model_id":"m","timestamp":1000,'
...               b'"features":{"x":NaN},"prediction":0.5}'),
...     RawRecord("p", 0, 9, 1_000, b"c", b'{"prediction_id":"c","timestamp":1000,"prediction":1}'),
... ])
>>> [r.offset for r in batch.records], batch.prediction_ids, [p.value for p in batch.predictions]
([7, 8], ['a', 'b'], [0.5, 0.5])
>>> batch.timestamps.tolist(), dead[0].error_kind.value, dead[0].error_message
([1000, 1000], 'validation_error', 'model_id: Field required')
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import orjson

from driftline.operators import struct_decode
from driftline.operators.feature_rows import KIND_FLOAT, FeatureRows, TypedFeatureRows
from driftline.operators.validate import Decoder, RawRecord
from driftline.schemas.events import (
    MAX_FEATURES,
    MAX_NAME_LENGTH,
    SCHEMA_VERSION,
    DeadLetter,
    LabelEvent,
    Prediction,
    PredictionEvent,
)

Int64Array = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_MAX_EPOCH_MS = 253_402_300_799_999
_BIG = 2.0**63  # orjson's float for an integer literal it cannot hold as an int is at least this large
_ASK = object()  # "let pydantic decide" from a field check
_NONE = type(None)
_EXACT_FEATURE_TYPES = frozenset({str, bool, int, _NONE})
_FEATURE_TYPES = _EXACT_FEATURE_TYPES | {float}
_LABEL_TYPES = frozenset({str, bool, int, float})
_NUMBER_OR_NULL = frozenset({int, float, _NONE})
_PREDICTION_FIELDS = frozenset(PredictionEvent.model_fields)
_PREDICTION_REQUIRED = frozenset({"prediction_id", "model_id", "timestamp", "prediction"})
_LABEL_FIELDS = frozenset(LabelEvent.model_fields)
_LABEL_REQUIRED = frozenset({"prediction_id", "label", "timestamp"})
_OUTPUT_FIELDS = frozenset(Prediction.model_fields)

_ModelT = TypeVar("_ModelT", PredictionEvent, LabelEvent, Prediction)
_EventT = TypeVar("_EventT", PredictionEvent, LabelEvent)

_new = object.__new__
_set = object.__setattr__


def _built(cls: type[_ModelT], values: dict[str, Any], fields_set: Iterable[str]) -> _ModelT:
    """An instance of ``cls`` holding ``values`` (every field, in declaration order), as pydantic's
    validation would have built it from a payload naming ``fields_set``: no second validation."""
    instance = _new(cls)
    _set(instance, "__dict__", values)
    _set(instance, "__pydantic_fields_set__", set(fields_set))
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance


def _is_name(value: Any) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_NAME_LENGTH


def _number(value: Any) -> Any:
    """A finite JSON number as pydantic's float field holds it, else _ASK."""
    kind = type(value)
    if kind is float:
        return value if -_BIG < value < _BIG else _ASK
    if kind is int:
        return float(value)
    return _ASK


def _optional_number(value: Any) -> Any:
    return None if value is None else _number(value)


def _prediction_output(value: Any) -> Prediction | None:
    """The :class:`Prediction` of a well-formed ``prediction`` field, else None (ask pydantic)."""
    kind = type(value)
    if kind is dict:
        if not value.keys() <= _OUTPUT_FIELDS:
            return None
        label = value.get("label")
        if type(label) not in _EXACT_FEATURE_TYPES:  # str, int, bool or null, as in the schema
            return None
        score = _optional_number(value.get("score"))
        number = _optional_number(value.get("value"))
        probabilities = value.get("probabilities")
        if probabilities is not None:
            if type(probabilities) is not dict:
                return None
            probabilities = {k: _number(p) for k, p in probabilities.items()}
            if _ASK in probabilities.values() or not all(map(_is_name, probabilities)):
                return None
        if score is _ASK or number is _ASK:
            return None
        values = {"label": label, "score": score, "probabilities": probabilities, "value": number}
        return _built(Prediction, values, value)
    # The shorthands: a bare string/bool is a class label, a bare number a regression value.
    if kind is str or kind is bool:
        return _built(Prediction, {"label": value, "score": None, "probabilities": None, "value": None},
                      ("label",))
    number = _number(value)
    if number is _ASK:
        return None
    return _built(Prediction, {"label": None, "score": None, "probabilities": None, "value": number},
                  ("value",))


class OutputColumns(Sequence[Prediction]):
    """The outputs of a batch of one key set without ``probabilities`` (the common column) as
    columns: each event's class label, score and value, and the fields its payload named. Read by
    index it is the :class:`Prediction` pydantic would have built, made on request; the stage-1
    readers (the join's pending records, the windows, the multivariate scores) read the columns, so
    the common batch builds no object per output (~1 us an event, and its freeing).

    >>> outputs = OutputColumns([1, None], [0.5, None], [None, 2.0], frozenset({"label", "score"}))
    >>> outputs[0], len(outputs), outputs[0].model_fields_set == {"label", "score"}
    (Prediction(label=1, score=0.5, probabilities=None, value=None), 2, True)
    """

    __slots__ = ("labels", "present", "scores", "values")

    def __init__(self, labels: Sequence[Any], scores: Sequence[float | None], values: Sequence[float | None],
                 present: frozenset[str]) -> None:
        self.labels = labels
        self.scores = scores
        self.values = values
        self.present = present

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return _built(Prediction, {"label": self.labels[i], "score": self.scores[i], "probabilities": None,
                                   "value": self.values[i]}, self.present)

    def take(self, rows: Sequence[int]) -> OutputColumns:
        """The outputs at ``rows``, in that order."""
        return OutputColumns([self.labels[i] for i in rows], [self.scores[i] for i in rows],
                             [self.values[i] for i in rows], self.present)


def _prediction_outputs(column: Sequence[Any]) -> Sequence[Prediction | None]:
    """:func:`_prediction_output` of each value. The common column, objects of one key set
    without ``probabilities``, is checked per field (a type set and a min/max per field) and comes
    out as :class:`OutputColumns` (no None in it); any other column value by value."""
    if not column or set(map(type, column)) != {dict}:
        return list(map(_prediction_output, column))
    names = tuple(column[0])
    present = frozenset(names)
    if set(map(len, column)) != {len(names)} or not present <= _OUTPUT_FIELDS or "probabilities" in present:
        return list(map(_prediction_output, column))
    n = len(column)
    try:  # as many keys each, all of the first's: one key set (the order does not matter here)
        fields = _transposed(column, names, None) if names else {}
    except KeyError:
        return list(map(_prediction_output, column))
    labels = fields.get("label", (None,) * n)
    scores = _number_column(fields.get("score", (None,) * n))
    values = _number_column(fields.get("value", (None,) * n))
    if scores is None or values is None or not set(map(type, labels)) <= _EXACT_FEATURE_TYPES:
        return list(map(_prediction_output, column))
    return OutputColumns(labels, scores, values, present)


def _number_column(column: Sequence[Any]) -> Sequence[Any] | None:
    """A column of optional numbers as pydantic's optional float field holds them (floats finite
    and below 2**63 in magnitude as they are, ints as floats, nulls), or None if any value is not."""
    types = set(map(type, column))
    if not types <= _NUMBER_OR_NULL:
        return None
    if types == {_NONE}:
        return column
    numbers = [v for v in column if v is not None] if _NONE in types else column
    if float in types and not (min(numbers) > -_BIG and max(numbers) < _BIG):
        return None
    return column if int not in types else [None if v is None else float(v) for v in column]


def _columns_by_key_set(
    parsed: Sequence[Any], fields: frozenset[str], required: frozenset[str]
) -> list[tuple[frozenset[str], list[int], dict[str, Sequence[Any]]]]:
    """The parsed objects whose keys are some of ``fields`` and all of ``required``, grouped by key
    set: per group the keys, the objects' positions and one column per key (the key order within an
    object does not matter: each value is read by its name)."""
    if parsed and set(map(type, parsed)) == {dict}:
        names = tuple(parsed[0])
        present = frozenset(names)
        if set(map(len, parsed)) == {len(names)} and required <= present <= fields:
            try:  # the common batch: one key set, checked by the transposition itself
                return [(present, list(range(len(parsed))), _transposed(parsed, names, None))]
            except KeyError:  # some object has other keys (as many): grouped below
                pass
    groups = []
    for names, rows in _by_layout(parsed).items():
        present = frozenset(names)
        if required <= present <= fields:
            groups.append((present, rows, _transposed(parsed, names, rows)))
    return groups


def _by_layout(parsed: Sequence[Any]) -> dict[tuple[str, ...], list[int]]:
    """Positions of the parsed objects per key layout (the keys in their order)."""
    layouts: dict[tuple[str, ...], list[int]] = {}
    for i, obj in enumerate(parsed):
        if type(obj) is dict:
            names = tuple(obj)
            rows = layouts.get(names)
            if rows is None:
                layouts[names] = [i]
            else:
                rows.append(i)
    return layouts


def _bad_names(column: Sequence[Any]) -> list[int]:
    """Positions in ``column`` that are not identifiers (str of 1..256 characters)."""
    if set(map(type, column)) == {str}:
        lengths = list(map(len, column))
        if min(lengths) > 0 and max(lengths) <= MAX_NAME_LENGTH:
            return []
    return [j for j, v in enumerate(column) if not _is_name(v)]


def _bad_times(column: Sequence[Any]) -> list[int]:
    """Positions in ``column`` that are not epoch milliseconds as a JSON integer in the schema's range."""
    if set(map(type, column)) == {int} and min(column) >= 0 and max(column) <= _MAX_EPOCH_MS:
        return []
    return [j for j, v in enumerate(column) if type(v) is not int or not 0 <= v <= _MAX_EPOCH_MS]


def _bad_versions(column: Sequence[Any]) -> list[int]:
    if set(map(type, column)) == {int} and set(column) == {SCHEMA_VERSION}:
        return []
    return [j for j, v in enumerate(column) if type(v) is not int or v != SCHEMA_VERSION]


def _segment_ok(segment: dict[Any, Any]) -> bool:
    return len(segment) <= 16 and all(map(_is_name, segment)) and all(
        type(v) is str and len(v) <= MAX_NAME_LENGTH for v in segment.values())


def _bad_segments(column: Sequence[Any]) -> list[int]:
    """Positions in ``column`` that are not segment maps: none when the keys and values of all the
    maps together pass the checks at once, else each distinct map is checked once."""
    if set(map(type, column)) == {dict} and max(map(len, column)) <= 16:
        keys = list(chain.from_iterable(column))  # a parsed JSON object's keys are str
        if not keys:
            return []
        key_lengths = list(map(len, keys))
        names = keys[: len(column[0])]
        if names and keys == names * len(column):  # one layout (see _unusual_feature_rows): by name
            read = itemgetter(*names)
            values = list(map(read, column)) if len(names) == 1 \
                else list(chain.from_iterable(map(read, column)))
        else:
            values = list(chain.from_iterable(map(dict.values, column)))
        if (min(key_lengths) > 0 and max(key_lengths) <= MAX_NAME_LENGTH and set(map(type, values)) == {str}
                and max(map(len, values)) <= MAX_NAME_LENGTH):
            return []
    checked: dict[tuple[tuple[Any, Any], ...], bool] = {}
    bad = []
    for j, segment in enumerate(column):
        if type(segment) is not dict:
            bad.append(j)
        elif segment:
            try:
                items = tuple(segment.items())
                hash(items)
            except TypeError:  # a list or object value: not a segment map, checked alone
                items = ()
            ok = checked.get(items) if items else None
            if ok is None:
                ok = _segment_ok(segment)
                if items:
                    checked[items] = ok
            if not ok:
                bad.append(j)
    return bad


def _latencies(column: Sequence[Any], bad: set[int]) -> Sequence[Any]:
    """The latencies as pydantic holds them (float or None); adds the positions it would reject."""
    types = set(map(type, column))
    if types == {_NONE} or (types == {float} and min(column) >= 0 and max(column) < _BIG):
        return column
    out = [None if v is None else _number(v) for v in column]
    bad.update(j for j, v in enumerate(out) if v is _ASK or (v is not None and v < 0))
    return out


@dataclass(slots=True)
class _Group:
    """Fast-path values of some records of a batch (one key set): a column per field, a value
    per record at ``rows`` (the records' positions in the batch), pydantic's fields set ``present``."""

    rows: list[int]
    columns: dict[str, Sequence[Any]]
    present: frozenset[str]

    def keep(self, dropped: set[int]) -> _Group:
        """The group without the records at positions ``dropped`` of ``rows``."""
        if not dropped:
            return self
        kept = [j for j in range(len(self.rows)) if j not in dropped]
        return _Group([self.rows[j] for j in kept],
                      {name: [column[j] for j in kept] for name, column in self.columns.items()},
                      self.present)


def _transposed(
    parsed: Sequence[Any], names: tuple[str, ...], rows: list[int] | None
) -> dict[str, Sequence[Any]]:
    """The objects at ``rows`` (None: all of them; all holding the keys ``names``) as one column
    per key."""
    objects = parsed if rows is None or len(rows) == len(parsed) else [parsed[i] for i in rows]
    # a list per key read straight from the objects: no tuple per object to transpose (zip over
    # itemgetter's tuples cost 0.51 against 0.39 us a prediction, 0.22 against 0.16 a label)
    return {name: [obj[name] for obj in objects] for name in names}


def _prediction_groups(parsed: Sequence[Any]) -> list[_Group]:
    """The fast-path columns of the parsed payloads of the common well-formed shape, one group per
    key set; a payload in none of them is left to pydantic. Checked per field column (a type set
    and a min/max per column, where the batch is uniform); feature values are checked apart
    (:func:`_unusual_feature_rows`)."""
    groups = []
    for present, rows, columns in _columns_by_key_set(parsed, _PREDICTION_FIELDS, _PREDICTION_REQUIRED):
        n = len(rows)
        bad: set[int] = set()
        bad.update(_bad_names(columns["prediction_id"]), _bad_names(columns["model_id"]),
                   _bad_times(columns["timestamp"]))
        if "schema_version" in columns:
            bad.update(_bad_versions(columns["schema_version"]))
        versions: Sequence[Any] = columns.get("model_version", ("1",) * n)
        if set(map(type, versions)) != {str}:
            versions = [str(v) if type(v) is int else v for v in versions]
        bad.update(_bad_names(versions))
        features: Sequence[Any] = columns.get("features", ())
        if features and not (set(map(type, features)) == {dict}
                             and max(map(len, features)) <= MAX_FEATURES):
            bad.update(j for j, f in enumerate(features) if type(f) is not dict or len(f) > MAX_FEATURES)
        segments: Sequence[Any] = columns.get("segment", ())
        if segments:
            bad.update(_bad_segments(segments))
        latencies = _latencies(columns["latency_ms"], bad) if "latency_ms" in columns else (None,) * n
        outputs = _prediction_outputs(columns["prediction"])
        if not isinstance(outputs, OutputColumns):  # (which holds no None)
            bad.update(j for j, output in enumerate(outputs) if output is None)
        out = {
            "prediction_id": columns["prediction_id"], "model_id": columns["model_id"],
            "model_version": versions,
            "timestamp": columns["timestamp"], "features": features or [{} for _ in range(n)],
            "prediction": outputs, "latency_ms": latencies, "segment": segments or [{} for _ in range(n)],
        }
        groups.append(_Group(rows, out, present).keep(bad))
    return groups


def _label_groups(parsed: Sequence[Any]) -> list[_Group]:
    """The fast-path columns of the label payloads of the common well-formed shape (as
    :func:`_prediction_groups`)."""
    groups = []
    for present, rows, columns in _columns_by_key_set(parsed, _LABEL_FIELDS, _LABEL_REQUIRED):
        n = len(rows)
        bad: set[int] = set()
        bad.update(_bad_names(columns["prediction_id"]), _bad_times(columns["timestamp"]))
        if "schema_version" in columns:
            bad.update(_bad_versions(columns["schema_version"]))
        models: Sequence[Any] = columns.get("model_id", (None,) * n)
        model_types = set(map(type, models))
        if model_types == {str}:
            bad.update(_bad_names(models))
        elif model_types != {_NONE}:
            bad.update(j for j, m in enumerate(models) if not (m is None or _is_name(m)))
        labels = columns["label"]
        types = set(map(type, labels))
        if not types <= _LABEL_TYPES or (float in types and not all(-_BIG < v < _BIG for v in labels
                                                                    if type(v) is float)):
            bad.update(j for j, v in enumerate(labels) if not _label_ok(v))
        out = {"prediction_id": columns["prediction_id"], "label": labels, "timestamp": columns["timestamp"],
               "model_id": models}
        groups.append(_Group(rows, out, present).keep(bad))
    return groups


def _struct_prediction_groups(
    fields: struct_decode.Columns, outputs: struct_decode.Columns
) -> list[_Group] | None:
    """The one group of a batch :func:`struct_decode.prediction_columns` decoded (its types and
    ranges checked there), without the records whose latency is a float of magnitude 2**63 or more
    (as :func:`_prediction_groups`); None (the orjson path) where a score or value is one."""
    (columns, present), (output_columns, output_present) = fields, outputs
    scores = _number_column(output_columns["score"])
    values = _number_column(output_columns["value"])
    if scores is None or values is None:
        return None
    bad: set[int] = set()
    latencies = _latencies(columns["latency_ms"], bad)
    out = {
        "prediction_id": columns["prediction_id"], "model_id": columns["model_id"],
        "model_version": columns["model_version"], "timestamp": columns["timestamp"],
        "features": columns["features"],
        "prediction": OutputColumns(output_columns["label"], scores, values, output_present),
        "latency_ms": latencies, "segment": columns["segment"],
    }
    return [_Group(list(range(len(columns["prediction_id"]))), out, present).keep(bad)]


def _label_group(columns: dict[str, list[Any]], present: frozenset[str]) -> _Group:
    """The one group of a batch :func:`struct_decode.label_columns` decoded, without the records
    whose label is a float of magnitude 2**63 or more (as :func:`_label_groups`)."""
    labels = columns["label"]
    bad: set[int] = set()
    if float in set(map(type, labels)) and not all(-_BIG < v < _BIG for v in labels if type(v) is float):
        bad.update(j for j, v in enumerate(labels) if not _label_ok(v))
    out: dict[str, Sequence[Any]] = {"prediction_id": columns["prediction_id"], "label": labels,
                                     "timestamp": columns["timestamp"], "model_id": columns["model_id"]}
    return _Group(list(range(len(labels))), out, present).keep(bad)


def _label_ok(value: Any) -> bool:
    kind = type(value)
    return kind is str or kind is bool or kind is int or (kind is float and -_BIG < value < _BIG)


def _unusual_feature_rows(
    features: Sequence[dict[str, Any]], shared: list[FeatureColumns],
) -> set[int]:
    """Positions of feature maps pydantic must judge: a bad name, too many, a value of another type
    than str/bool/int/float/null, or a float that may stand for a huge integer literal. Checked per
    distinct name layout and column, so the common batch costs one type test per column. When every
    map has one layout and none is unusual, its columns are appended to ``shared``."""
    if isinstance(features, TypedFeatureRows) and features.typed is not None:
        return _unusual_typed_rows(features, shared)
    layouts: dict[tuple[str, ...], list[int]] = {}
    n = len(features)
    rows_of_one_layout = isinstance(features, FeatureRows)
    first = list(features[0]) if features and not rows_of_one_layout else []
    if rows_of_one_layout:  # read so by the compiled pass: no dict to walk
        layouts[cast(FeatureRows, features).names] = list(range(n))
    elif set(map(len, features)) <= {len(first)} and list(chain.from_iterable(features)) == first * n:
        # The common batch: one layout. All the maps' keys in a row are ``first`` repeated exactly
        # when every map holds ``first`` in that order (each map as long as the first, and a map's
        # keys are distinct, so no map can straddle two repeats).
        layouts[tuple(first)] = list(range(n))
    else:
        for row, names in enumerate(map(tuple, features)):
            rows = layouts.get(names)
            if rows is None:
                layouts[names] = [row]
            else:
                rows.append(row)
    unusual: set[int] = set()
    for names, rows in layouts.items():
        if not names:
            continue
        if _names_refused(names):
            unusual.update(rows)
            continue
        k = len(names)
        if len(layouts) == 1:  # every map holds these names in this order: its values row after row
            flat = list(chain.from_iterable(cast(FeatureRows, features).rows if rows_of_one_layout
                                            else map(dict.values, features)))
            columns: Sequence[Sequence[Any]] = [flat[j::k] for j in range(k)]
            first_types = list(map(type, flat[:k]))
            # one type per column, the first map's, when the values' types repeat the first map's
            # (one comparison over the batch instead of a type set per column)
            kinds = [{kind} for kind in first_types] if list(map(type, flat)) == first_types * n \
                else [set(map(type, column)) for column in columns]
        else:
            columns = list(_transposed(features, names, rows).values())
            kinds = [set(map(type, column)) for column in columns]
        numbers: list[FloatArray | None] = [None] * k
        floats = [j for j, types in enumerate(kinds) if types == {float}]
        if floats:  # the float columns as one block, its range checked at once
            # one flat pass (np.array of a list of lists first discovers the nesting: 0.63 against
            # 0.53 us a prediction for 20 columns), the same doubles
            block = np.fromiter(chain.from_iterable(columns[j] for j in floats), dtype=np.float64,
                                count=len(floats) * len(rows)).reshape(len(floats), len(rows))
            for j, array in zip(floats, block, strict=True):
                numbers[j] = array
            unusual.update(rows[i] for i in _big_float_events(block))
        for column, types in zip(columns, kinds, strict=True):
            if types <= _EXACT_FEATURE_TYPES or types == {float}:
                continue
            unusual.update(
                rows[i] for i, v in enumerate(column)
                if type(v) not in _FEATURE_TYPES or (type(v) is float and not -_BIG < v < _BIG)
            )
        if len(layouts) == 1 and not unusual:
            shared.append(FeatureColumns(names, columns, numbers))
    return unusual


def _names_refused(names: tuple[str, ...]) -> bool:
    """Whether a layout's names are for pydantic to refuse: too many, or one empty or too long."""
    return len(names) > MAX_FEATURES or min(map(len, names)) == 0 or max(map(len, names)) > MAX_NAME_LENGTH


def _big_float_events(block: FloatArray) -> list[int]:
    """The events (columns of ``block``, a row per float feature) holding a float of magnitude
    2**63 or more: one that may stand for a huge integer literal, for pydantic to judge."""
    if block.min() > -_BIG and block.max() < _BIG:  # (no NaN is read from JSON)
        return []
    return np.flatnonzero((np.abs(block) >= _BIG).any(axis=0)).tolist()


def _unusual_typed_rows(features: TypedFeatureRows, shared: list[FeatureColumns]) -> set[int]:
    """:func:`_unusual_feature_rows` of rows the C decode pass read with their columns, kinds and
    floats (taken off the rows: they are not kept with the batch): the same checks, no walk."""
    assert features.typed is not None
    columns, kinds, doubles = features.typed
    features.typed = None
    names, n = features.names, len(features)
    if not names:
        return set()
    if _names_refused(names):
        return set(range(n))
    k = len(names)
    numbers: list[FloatArray | None] = [None] * k
    floats = [j for j, kind in enumerate(kinds) if kind == KIND_FLOAT]
    unusual: set[int] = set()
    if floats:  # the float columns as one block (rows of the pass's buffer), its range checked at once
        block = np.frombuffer(doubles, dtype=np.float64).reshape(k, n)
        block = block[floats] if len(floats) < k else block
        for j, array in zip(floats, block, strict=True):
            numbers[j] = array
        unusual.update(_big_float_events(block))
    for column, kind in zip(columns, kinds, strict=True):
        if kind & KIND_FLOAT and kind != KIND_FLOAT:  # floats among other kinds: each float's range
            unusual.update(i for i, v in enumerate(column) if type(v) is float and not -_BIG < v < _BIG)
    if not unusual:
        shared.append(FeatureColumns(names, columns, numbers))
    return unusual


@dataclass(frozen=True, slots=True)
class FeatureColumns:
    """The feature values of a batch whose events all carry the same ``names``: one column per name
    (a value per event, in batch order) and, where every value is a float, the column as float64."""

    names: tuple[str, ...]
    columns: Sequence[Sequence[Any]]
    numbers: Sequence[FloatArray | None]


_PREDICTION_COLUMNS = ("prediction_id", "model_id", "model_version", "timestamp", "features", "prediction",
                       "latency_ms", "segment")
_LABEL_COLUMNS = ("prediction_id", "label", "timestamp", "model_id")


@dataclass(slots=True)
class PredictionBatch:
    """The accepted prediction events of a batch, in log order, as columns (a value per event): no
    event object is built unless asked for (:meth:`event`, :attr:`events`)."""

    records: list[RawRecord]
    prediction_ids: Sequence[str]
    model_ids: Sequence[str]
    model_versions: Sequence[str]
    timestamps: Int64Array
    feature_maps: Sequence[dict[str, Any]]
    # OutputColumns for the common batch (its readers take the columns; an object is made on read)
    predictions: Sequence[Prediction]
    latencies: Sequence[float | None]
    segments: Sequence[dict[str, str]]
    # per event, the fields its payload named (pydantic's model_fields_set)
    fields_set: Sequence[Set[str]]
    # the events' features as columns, when the checks built them for exactly these events
    features: FeatureColumns | None = None

    @classmethod
    def empty(cls) -> PredictionBatch:
        return cls([], (), (), (), np.zeros(0, dtype=np.int64), (), (), (), (), ())

    def __len__(self) -> int:
        return len(self.records)

    def event(self, i: int) -> PredictionEvent:
        """Event ``i`` as the pydantic model (built without a second validation)."""
        values = {
            "schema_version": SCHEMA_VERSION, "prediction_id": self.prediction_ids[i],
            "model_id": self.model_ids[i],
            "model_version": self.model_versions[i], "timestamp": int(self.timestamps[i]),
            "features": self.feature_maps[i], "prediction": self.predictions[i],
            "latency_ms": self.latencies[i],
            "segment": self.segments[i],
        }
        return _built(PredictionEvent, values, self.fields_set[i])

    @property
    def events(self) -> list[PredictionEvent]:
        return [self.event(i) for i in range(len(self))]


@dataclass(slots=True)
class LabelBatch:
    """The accepted label events of a batch, in log order, as columns (a value per event)."""

    records: list[RawRecord]
    prediction_ids: Sequence[str]
    labels: Sequence[bool | int | float | str]
    timestamps: Int64Array
    model_ids: Sequence[str | None]
    fields_set: Sequence[Set[str]]

    @classmethod
    def empty(cls) -> LabelBatch:
        return cls([], (), (), np.zeros(0, dtype=np.int64), (), ())

    def __len__(self) -> int:
        return len(self.records)

    def event(self, i: int) -> LabelEvent:
        """Event ``i`` as the pydantic model (built without a second validation)."""
        values = {"schema_version": SCHEMA_VERSION, "prediction_id": self.prediction_ids[i],
                  "label": self.labels[i], "timestamp": int(self.timestamps[i]),
                  "model_id": self.model_ids[i]}
        return _built(LabelEvent, values, self.fields_set[i])

    @property
    def events(self) -> list[LabelEvent]:
        return [self.event(i) for i in range(len(self))]


def _without_unusual_features(groups: list[_Group], shared: list[FeatureColumns]) -> list[_Group]:
    """The groups without the records whose features pydantic must judge (checked in batch order,
    :func:`_unusual_feature_rows`)."""
    if len(groups) == 1:
        (group,) = groups
        return [group.keep(_unusual_feature_rows(group.columns["features"], shared))]
    order = sorted((row, g, j) for g, group in enumerate(groups) for j, row in enumerate(group.rows))
    unusual = _unusual_feature_rows([groups[g].columns["features"][j] for _, g, j in order], shared)
    dropped: list[set[int]] = [set() for _ in groups]
    for position in unusual:
        _, g, j = order[position]
        dropped[g].add(j)
    return [group.keep(d) for group, d in zip(groups, dropped, strict=True)]


# Between two values of a batch parsed as one JSON array: a string no payload can hold (drawn at
# start-up, never written anywhere), so a value is known to have parsed on its own terms when
# every other element of the array is this string (see _parsed_together).
_MARK = secrets.token_hex(8)
_SEPARATOR = b',"' + _MARK.encode() + b'",'
# The one call copies the batch's values into one array: beyond this many bytes they are parsed one
# by one (no second copy of a large fetch in memory; the call saves ~0.2 us a record, not a copy).
_TOGETHER_MAX_BYTES = 16 << 20


def _parsed_together(values: Sequence[bytes]) -> list[Any] | None:
    """Each value parsed as JSON, all in one ``orjson`` call over ``[v1,MARK,v2,MARK,...]``, or
    None when that array does not parse as 2n-1 elements with the mark at every odd position (then
    some value is not JSON on its own: the caller parses them one at a time).

    The marks make the one call judge each value as a parse of that value alone would. No payload
    can produce the mark, so each of the n-1 marks found at an odd position of the array is a
    separator's, parsed at the array's top level: the bytes between two marks were parsed from the
    start of an element to its end, one whole element, which is what ``orjson.loads`` of those bytes
    accepts. Without the marks, unbalanced values could pair up into the right count of elements
    (``[1`` and ``2]`` merge, ``3,4`` splits) and hand a record another record's bytes."""
    try:
        parsed: list[Any] = orjson.loads(b"[" + _SEPARATOR.join(values) + b"]")
    except orjson.JSONDecodeError:
        return None
    if len(parsed) != 2 * len(values) - 1 or parsed[1::2].count(_MARK) != len(values) - 1:
        return None
    return parsed[::2]


class BatchDecoder:
    """The batch form of ``decoder`` (see the module docstring): the same acceptance, the same
    dead letters, in the same order."""

    __slots__ = ("decoder",)

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder

    def predictions(self, records: Sequence[RawRecord]) -> tuple[PredictionBatch, list[DeadLetter]]:
        """Decode prediction records; the batch and the dead letters keep the input order."""
        if not records:
            return PredictionBatch.empty(), []
        decoded = struct_decode.prediction_columns([record.value for record in records],
                                                   self.decoder.max_message_bytes)
        groups = _struct_prediction_groups(*decoded) if decoded is not None else None
        if groups is None:  # not all of the common shape: parsed by orjson, unusual records by pydantic
            groups = [g for g in _prediction_groups(self._parsed(records)) if g.rows]
        shared: list[FeatureColumns] = []
        if groups:
            groups = _without_unusual_features(groups, shared)
        candidates = sum(len(g.rows) for g in groups)
        records_out, columns, fields_set, times, dead = self._settle(
            records, groups, self.decoder.predictions, _PREDICTION_COLUMNS)
        # The checked columns are the batch's when every record was a candidate and none was dropped.
        features = shared[0] if shared and len(records_out) == candidates == len(records) else None
        batch = PredictionBatch(records_out, columns["prediction_id"], columns["model_id"],
                                columns["model_version"], times, columns["features"], columns["prediction"],
                                columns["latency_ms"], columns["segment"], fields_set, features)
        return batch, dead

    def labels(self, records: Sequence[RawRecord]) -> tuple[LabelBatch, list[DeadLetter]]:
        """Decode label records; the batch and the dead letters keep the input order."""
        if not records:
            return LabelBatch.empty(), []
        decoded = struct_decode.label_columns([record.value for record in records],
                                              self.decoder.max_message_bytes)
        if decoded is not None:
            groups = [_label_group(*decoded)]
        else:  # not all of the common shape: parsed by orjson, unusual records by pydantic
            groups = [g for g in _label_groups(self._parsed(records)) if g.rows]
        records_out, columns, fields_set, times, dead = self._settle(
            records, groups, self.decoder.labels, _LABEL_COLUMNS)
        batch = LabelBatch(records_out, columns["prediction_id"], columns["label"], times,
                           columns["model_id"], fields_set)
        return batch, dead

    def _parsed(self, records: Sequence[RawRecord]) -> list[Any]:
        """Each record's parsed value, or None where it is screened out (:meth:`Decoder.screen`) or
        is not JSON orjson reads."""
        max_bytes, loads = self.decoder.max_message_bytes, orjson.loads
        values: list[bytes | None] = [record.value for record in records]
        try:
            lengths = list(map(len, values))  # type: ignore[arg-type]
            together = max(lengths) <= max_bytes and sum(lengths) <= _TOGETHER_MAX_BYTES
        except TypeError:  # a record without a value (None has no len)
            together = False
        if together:
            parsed = _parsed_together(values)  # type: ignore[arg-type]
            if parsed is not None:
                return parsed
            # one at a time below: only the bad ones are None
        parsed = []
        for value in values:
            if value is None or len(value) > max_bytes:
                parsed.append(None)
                continue
            try:
                parsed.append(loads(value))
            except orjson.JSONDecodeError:
                parsed.append(None)
        return parsed

    def _settle(
        self,
        records: Sequence[RawRecord],
        groups: Sequence[_Group],
        slow: Callable[[Sequence[RawRecord]], tuple[list[tuple[RawRecord, Any]], list[DeadLetter]]],
        names: tuple[str, ...],
    ) -> tuple[list[RawRecord], dict[str, Sequence[Any]], Sequence[Set[str]], Int64Array, list[DeadLetter]]:
        """The accepted records, their columns, fields sets and event times, and the dead letters,
        in log order: the time checks (:meth:`Decoder.check_time`) on the fast-path records at once,
        ``slow`` (the pydantic path) for the rest."""
        decoder = self.decoder
        n = len(records)
        if len(groups) == 1 and len(groups[0].rows) == n:  # the common batch: every record is in it
            event_ts = np.fromiter(groups[0].columns["timestamp"], dtype=np.int64, count=n)
            flagged = np.zeros(n, dtype=bool)
        else:
            event_ts = np.zeros(n, dtype=np.int64)
            flagged = np.ones(n, dtype=bool)
            for group in groups:
                event_ts[group.rows] = group.columns["timestamp"]
                flagged[group.rows] = False
        record_ts = np.array([record.timestamp_ms for record in records], dtype=np.int64)
        skew = event_ts - record_ts
        flagged |= (record_ts >= 0) & ((np.abs(skew) > decoder.max_timestamp_skew_ms)
                                       | (skew > decoder.max_future_skew_ms))
        if len(groups) == 1 and not flagged.any():  # the common batch: its one group's columns
            (group,) = groups
            return list(records), group.columns, (group.present,) * n, event_ts, []
        where: list[tuple[_Group, int] | None] = [None] * n
        for group in groups:
            for j, row in enumerate(group.rows):
                where[row] = (group, j)
        out: dict[str, list[Any]] = {name: [] for name in names}
        appends = [(name, out[name].append) for name in names]
        fields_set: list[Set[str]] = []
        good_records: list[RawRecord] = []
        dead: list[DeadLetter] = []
        for record, place, check in zip(records, where, flagged.tolist(), strict=True):
            if place is None:
                slow_good, slow_dead = slow((record,))
                dead.extend(slow_dead)
                for slow_record, event in slow_good:
                    good_records.append(slow_record)
                    for name, append in appends:
                        append(getattr(event, name))
                    fields_set.append(event.model_fields_set)
                continue
            group, j = place
            columns = group.columns
            if check:
                out_of_range = decoder.check_time(record, record.value or b"", columns["timestamp"][j])
                if out_of_range is not None:
                    dead.append(out_of_range)
                    continue
            good_records.append(record)
            for name, append in appends:
                append(columns[name][j])
            fields_set.append(group.present)
        times = np.array(out["timestamp"], dtype=np.int64).reshape(-1)
        return good_records, dict(out), fields_set, times, dead
