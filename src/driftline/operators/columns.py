"""Decode a fetched batch at once: the columnar front of stage 1.

:class:`BatchDecoder` accepts and rejects exactly what :class:`~driftline.operators.validate.Decoder`
accepts and rejects, with the same dead letters (kinds and messages): the pydantic models stay the
contract. It parses every value with ``orjson`` and checks the common well-formed shape in plain
Python field by field, column by column (a type set and a min/max per column of the batch where it
is uniform, not a test per value);
whatever is unusual (invalid JSON, ``NaN`` tokens, RFC 3339 timestamps, a type pydantic would coerce
or reject, ...) goes through the pydantic path, record by record, so its messages stay pydantic's.
Accepted events are real :class:`PredictionEvent`/:class:`LabelEvent` instances, built without a
second validation, and come out in log order with their event times as an int64 column.

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
>>> [(r.offset, e.prediction_id, e.prediction.value) for r, e in zip(batch.records, batch.events)]
[(7, 'a', 0.5), (8, 'b', 0.5)]
>>> batch.timestamps.tolist(), dead[0].error_kind.value, dead[0].error_message
([1000, 1000], 'validation_error', 'model_id: Field required')
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import orjson

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
    """Positions in ``column`` that are not segment maps; each distinct map is checked once."""
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


def _prediction_events(parsed: Sequence[Any]) -> list[PredictionEvent | None]:
    """The event of each parsed payload of the common well-formed shape, else None (ask pydantic).
    Checked per key layout and field column (a type set and a min/max per column, where the batch
    is uniform); feature values are checked apart (:func:`_unusual_feature_rows`)."""
    events: list[PredictionEvent | None] = [None] * len(parsed)
    for names, rows in _by_layout(parsed).items():
        present = frozenset(names)
        if not (present <= _PREDICTION_FIELDS and present >= _PREDICTION_REQUIRED):
            continue
        n = len(rows)
        columns = dict(zip(names, zip(*map(itemgetter(*names), [parsed[i] for i in rows]), strict=True),
                           strict=True))
        bad: set[int] = set()
        bad.update(_bad_names(columns["prediction_id"]), _bad_names(columns["model_id"]),
                   _bad_times(columns["timestamp"]))
        if "schema_version" in columns:
            bad.update(_bad_versions(columns["schema_version"]))
        versions: Sequence[Any] = columns.get("model_version", ("1",) * n)
        if set(map(type, versions)) != {str}:
            versions = [str(v) if type(v) is int else v for v in versions]
        bad.update(_bad_names(versions))
        features: Sequence[Any] | None = columns.get("features")
        if features is not None and not (set(map(type, features)) == {dict}
                                         and max(map(len, features)) <= MAX_FEATURES):
            bad.update(j for j, f in enumerate(features) if type(f) is not dict or len(f) > MAX_FEATURES)
        segments: Sequence[Any] | None = columns.get("segment")
        if segments is not None:
            bad.update(_bad_segments(segments))
        latencies = _latencies(columns["latency_ms"], bad) if "latency_ms" in columns else (None,) * n
        ids, models, times, outputs = (columns["prediction_id"], columns["model_id"], columns["timestamp"],
                                       columns["prediction"])
        for j, i in enumerate(rows):
            if j in bad:
                continue
            prediction = _prediction_output(outputs[j])
            if prediction is None:
                continue
            values = {
                "schema_version": SCHEMA_VERSION, "prediction_id": ids[j], "model_id": models[j],
                "model_version": versions[j], "timestamp": times[j],
                "features": {} if features is None else features[j], "prediction": prediction,
                "latency_ms": latencies[j], "segment": {} if segments is None else segments[j],
            }
            events[i] = _built(PredictionEvent, values, present)
    return events


def _label_events(parsed: Sequence[Any]) -> list[LabelEvent | None]:
    """The label event of each parsed payload of the common well-formed shape, else None."""
    events: list[LabelEvent | None] = [None] * len(parsed)
    for names, rows in _by_layout(parsed).items():
        present = frozenset(names)
        if not (present <= _LABEL_FIELDS and present >= _LABEL_REQUIRED):
            continue
        n = len(rows)
        columns = dict(zip(names, zip(*map(itemgetter(*names), [parsed[i] for i in rows]), strict=True),
                           strict=True))
        bad: set[int] = set()
        bad.update(_bad_names(columns["prediction_id"]), _bad_times(columns["timestamp"]))
        if "schema_version" in columns:
            bad.update(_bad_versions(columns["schema_version"]))
        models: Sequence[Any] = columns.get("model_id", (None,) * n)
        if set(map(type, models)) != {_NONE}:
            bad.update(j for j, m in enumerate(models) if not (m is None or _is_name(m)))
        labels = columns["label"]
        types = set(map(type, labels))
        if not types <= _LABEL_TYPES or (float in types and not all(-_BIG < v < _BIG for v in labels
                                                                    if type(v) is float)):
            bad.update(j for j, v in enumerate(labels) if not _label_ok(v))
        ids, times = columns["prediction_id"], columns["timestamp"]
        for j, i in enumerate(rows):
            if j not in bad:
                values = {"schema_version": SCHEMA_VERSION, "prediction_id": ids[j], "label": labels[j],
                          "timestamp": times[j], "model_id": models[j]}
                events[i] = _built(LabelEvent, values, present)
    return events


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
    layouts: dict[tuple[str, ...], list[int]] = {}
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
        if len(names) > MAX_FEATURES or min(map(len, names)) == 0 or max(map(len, names)) > MAX_NAME_LENGTH:
            unusual.update(rows)
            continue
        if len(names) == 1:
            columns: Sequence[Sequence[Any]] = ([features[r][names[0]] for r in rows],)
        else:
            columns = list(zip(*map(itemgetter(*names), [features[r] for r in rows]), strict=True))
        numbers: list[FloatArray | None] = []
        for column in columns:
            types = set(map(type, column))
            numbers.append(None)
            if types <= _EXACT_FEATURE_TYPES:
                continue
            if types == {float}:
                numbers[-1] = array = np.array(column, dtype=np.float64)
                huge = np.flatnonzero(np.abs(array) >= _BIG)
                unusual.update(rows[i] for i in huge.tolist())
                continue
            unusual.update(
                rows[i] for i, v in enumerate(column)
                if type(v) not in _FEATURE_TYPES or (type(v) is float and not -_BIG < v < _BIG)
            )
        if len(layouts) == 1 and not unusual:
            shared.append(FeatureColumns(names, columns, numbers))
    return unusual


@dataclass(frozen=True, slots=True)
class FeatureColumns:
    """The feature values of a batch whose events all carry the same ``names``: one column per name
    (a value per event, in batch order) and, where every value is a float, the column as float64."""

    names: tuple[str, ...]
    columns: Sequence[Sequence[Any]]
    numbers: Sequence[FloatArray | None]


@dataclass(slots=True)
class PredictionBatch:
    """The accepted prediction events of a batch, in log order, with their records and times."""

    records: list[RawRecord] = field(default_factory=list)
    events: list[PredictionEvent] = field(default_factory=list)
    timestamps: Int64Array = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # the events' features as columns, when the checks built them for exactly these events
    features: FeatureColumns | None = None

    def __len__(self) -> int:
        return len(self.events)


@dataclass(slots=True)
class LabelBatch:
    """The accepted label events of a batch, in log order, with their records and times."""

    records: list[RawRecord] = field(default_factory=list)
    events: list[LabelEvent] = field(default_factory=list)
    timestamps: Int64Array = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.events)


class BatchDecoder:
    """The batch form of ``decoder`` (see the module docstring): the same acceptance, the same
    dead letters, in the same order."""

    __slots__ = ("decoder",)

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder

    def predictions(self, records: Sequence[RawRecord]) -> tuple[PredictionBatch, list[DeadLetter]]:
        """Decode prediction records; the batch and the dead letters keep the input order."""
        events = _prediction_events(self._parsed(records))
        candidates = [i for i, event in enumerate(events) if event is not None]
        shared: list[FeatureColumns] = []
        if candidates:
            unusual = _unusual_feature_rows([events[i].features for i in candidates], shared)  # type: ignore[union-attr]
            for position in unusual:
                events[candidates[position]] = None
        records_out, events_out, times, dead = self._settle(records, events, self.decoder.predictions)
        # The checked columns are the batch's when every record was a candidate and none was dropped.
        features = shared[0] if shared and len(events_out) == len(candidates) == len(records) else None
        return PredictionBatch(records_out, events_out, times, features), dead

    def labels(self, records: Sequence[RawRecord]) -> tuple[LabelBatch, list[DeadLetter]]:
        """Decode label records; the batch and the dead letters keep the input order."""
        events = _label_events(self._parsed(records))
        records_out, events_out, times, dead = self._settle(records, events, self.decoder.labels)
        return LabelBatch(records_out, events_out, times), dead

    def _parsed(self, records: Sequence[RawRecord]) -> list[Any]:
        """Each record's parsed value, or None where it is screened out (:meth:`Decoder.screen`) or
        is not JSON orjson reads."""
        max_bytes, loads = self.decoder.max_message_bytes, orjson.loads
        parsed: list[Any] = []
        for record in records:
            value = record.value
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
        events: Sequence[_EventT | None],
        slow: Callable[[Sequence[RawRecord]], tuple[list[tuple[RawRecord, _EventT]], list[DeadLetter]]],
    ) -> tuple[list[RawRecord], list[_EventT], Int64Array, list[DeadLetter]]:
        """The accepted records, events and event times, and the dead letters, in log order: the
        time checks (:meth:`Decoder.check_time`) on the fast-path events at once, ``slow`` (the
        pydantic path) for the rest."""
        decoder = self.decoder
        n = len(records)
        event_ts = np.fromiter((0 if e is None else e.timestamp for e in events), dtype=np.int64, count=n)
        record_ts = np.fromiter((r.timestamp_ms for r in records), dtype=np.int64, count=n)
        skew = event_ts - record_ts
        flagged = (record_ts >= 0) & ((np.abs(skew) > decoder.max_timestamp_skew_ms)
                                      | (skew > decoder.max_future_skew_ms))
        missing = [i for i, event in enumerate(events) if event is None]
        flagged[missing] = True
        if not flagged.any():
            return list(records), cast("list[_EventT]", list(events)), event_ts, []
        good_records: list[RawRecord] = []
        good: list[_EventT] = []
        dead: list[DeadLetter] = []
        for record, event, check in zip(records, events, flagged.tolist(), strict=True):
            if event is None:
                slow_good, slow_dead = slow((record,))
                dead.extend(slow_dead)
                for slow_record, slow_event in slow_good:
                    good_records.append(slow_record)
                    good.append(slow_event)
                continue
            if check:
                out_of_range = decoder.check_time(record, record.value or b"", event.timestamp)
                if out_of_range is not None:
                    dead.append(out_of_range)
                    continue
            good_records.append(record)
            good.append(event)
        times = np.fromiter((e.timestamp for e in good), dtype=np.int64, count=len(good))
        return good_records, good, times, dead
