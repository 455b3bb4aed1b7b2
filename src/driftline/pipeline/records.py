"""Messages on the internal ``model-events`` and ``sink`` topics: the contract between stage 1
(:mod:`driftline.pipeline.shard`) and stage 2 (:mod:`driftline.pipeline.model`).

model-events carries everything stage 2 needs about a model, keyed and partitioned by
model_id so that one stage-2 shard sees all of a model's partials and outcomes in one log.
Each record is a JSON object whose ``type`` names one of the typed records below; stage 1
builds them and :func:`encode_model_event` writes them, stage 2 reads them back with
:func:`decode_model_event` (the wire format is the JSON object, so a record written by an older
driftline still decodes: fields added later have defaults).

- :class:`Partial`: one stage-1 shard's aggregate of one window for one (model, version, segment);
- :class:`Outcomes` / :class:`Expired`: joined outcomes and predictions that will get no label
  (reason 'horizon': expired; 'evicted': dropped at the join's ``max_pending`` bound), columnar, per model;
- :class:`Orphans`: labels no prediction joined, columnar, per model the label names ('' if none);
- :class:`Duplicates`: exact re-sends of a prediction or label, columnar, per model (identified by
  their source record, so a restarted shard's re-sent copy counts once);
- :class:`EpisodeReports`: one shard's drift episode reports for one (model, version) (stage 1
  watches features per shard; stage 2 merges the shards' reports, :mod:`driftline.pipeline.episodes`);
- :class:`Progress`: a shard's event-time progress, sent to *every* partition. Everything a shard
  emits for times before its progress precedes the progress record in each partition;
- :class:`Stacked`: one shard's columnar records of one type for several models bound for one
  partition, their columns concatenated, as one message (with many models a batch holds a few
  outcomes of each of hundreds).

>>> progress = Progress(shard=1, pred_progress=60_000, outcome_progress=30_000, duplicate_progress=30_000)
>>> decode_model_event(encode_model_event(progress)) == progress
True
>>> old = decode_model_event(b'{"type": "progress", "shard": 0, "pred_progress": 5, "outcome_progress": 3}')
>>> old.duplicate_progress  # written before duplicates were counted
3
>>> decode_model_event(b'{"type": "nonsense", "shard": 0}')
Traceback (most recent call last):
...
ValueError: unknown internal record type 'nonsense'
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from itertools import chain, groupby
from operator import attrgetter, is_not
from typing import Any, ClassVar, NamedTuple, cast

import numpy as np
import orjson

from driftline.config import Settings
from driftline.operators.join import native as join_native
from driftline.pipeline.stage import OutboundMessage

PARTIAL = "partial"
OUTCOMES = "outcomes"
EXPIRED = "expired"
ORPHANS = "orphans"
DUPLICATES = "duplicates"
PROGRESS = "progress"
EPISODES = "episodes"
STACKED = "stacked"

NO_TIME = -(2**62)  # progress (a watermark) before any event

# Outcome columns carried to stage 2 (the full row goes to the outcomes topic).
OUTCOME_FIELDS = (
    "prediction_id", "segment", "label_time", "label_delay_ms", "correct", "abs_error", "rerouted"
)
EXPIRED_FIELDS = ("prediction_id", "segment", "expired_at", "reason")
ORPHAN_FIELDS = ("prediction_id", "label_time", "reason", "source_partition", "source_offset")
DUPLICATE_FIELDS = ("kind", "segment", "event_time", "source_partition", "source_offset", "prediction_id")

# What each column's values may be, per columnar record type: checked at decode (a value of another
# type raised at a window's or interval's close, outside the decode's dead letter, and again at
# every restart).
_TEXT, _INT, _FLAG, _NUMBER = "text", "int", "flag", "number"
_COLUMN_KINDS: dict[str, dict[str, str]] = {
    OUTCOMES: {"prediction_id": _TEXT, "segment": _TEXT, "label_time": _INT, "label_delay_ms": _INT,
               "correct": _FLAG, "abs_error": _NUMBER, "rerouted": _INT},
    EXPIRED: {"prediction_id": _TEXT, "segment": _TEXT, "expired_at": _INT, "reason": _TEXT},
    ORPHANS: {"prediction_id": _TEXT, "label_time": _INT, "reason": _TEXT, "source_partition": _INT,
              "source_offset": _INT},
    DUPLICATES: {"kind": _TEXT, "segment": _TEXT, "event_time": _INT, "source_partition": _INT,
                 "source_offset": _INT, "prediction_id": _TEXT},
}
_INT_BOUND = 2**63  # an int column's values fit int64, as every reader's arrays and tables hold them
_IS_NOT_NONE = partial(is_not, None)


def _int_field(m: Mapping[str, Any], name: str) -> int:
    """Field ``name`` of a record's object: an ``int`` within a time's range (progress and
    windows are event times; a shard an index), else ValueError (KeyError if absent)."""
    value = m[name]
    if type(value) is not int or not NO_TIME <= value <= -NO_TIME:
        raise ValueError(f"internal record: its {name} is not an integer time or index")
    return value


def _column_fits(kind: str, column: list[Any]) -> bool:
    """Whether every value of ``column`` is what a column of ``kind`` holds: text a ``str``, an int
    an integer in int64, a flag 0, 1 or None (a regression outcome's ``correct``), a number an
    ``int`` or ``float`` or None (a classifier outcome's ``abs_error``). A bool counts as 0 or 1,
    as Python adds it. One C pass a column where it can (~3-10 ns a value: stage 2 checks
    every outcome), not a type call a value (~20).

    >>> _column_fits("int", [1, -2]), _column_fits("int", [1, 2.0]), _column_fits("int", [2**63])
    (True, False, False)
    >>> _column_fits("int", [orjson.loads(b"-9223372036854775809")])  # past int64 below: a float
    False
    >>> _column_fits("flag", [0, 1, None]), _column_fits("flag", [2]), _column_fits("number", [0.5, None, 3])
    (True, False, True)
    >>> _column_fits("text", ["a", ""]), _column_fits("text", ["a", None])
    (True, False)
    """
    if not column:
        return True
    try:
        if kind == _TEXT:
            "".join(column)  # TypeError at the first value that is not a str
            return True
        if kind == _FLAG:
            return set(column) <= {0, 1, None}
        if kind == _NUMBER:  # None (a classifier's) or numbers: a sum of them is one (text raises)
            return column.count(None) == len(column) or \
                type(sum(filter(_IS_NOT_NONE, column))) in (int, float)
        # a float makes the sum a float, text or None raise; orjson reads an integer below -2**63
        # or past 2**64 - 1 as a float, so only [2**63, 2**64) is left for max
        return type(sum(column)) is int and max(column) < _INT_BOUND
    except TypeError:
        return False


def _checked_columns(record_type: str, columns: Mapping[str, Any]) -> None:
    """ValueError unless every column of a ``record_type`` record holds values of its kind."""
    for name, kind in _COLUMN_KINDS[record_type].items():
        if not _column_fits(kind, columns[name]):
            raise ValueError(f"{record_type} record: column {name!r} holds a value that is not {kind}")


# What a drift episode report (feature_watch.episode_report) carries, read by stage 2's merger; the
# optional ones are read with a default (records written before they existed).
_REPORT_KINDS = {"kind": _TEXT, "reason": _TEXT, "feature": _TEXT, "feature_kind": _TEXT, "unit": _TEXT,
                 "event_time": _INT, "count": _INT, "magnitude": _NUMBER, "statistic": _NUMBER,
                 "threshold": _NUMBER, "prediction_id": _TEXT, "reference_id": _TEXT,
                 "reference_from": _INT, "arl": _NUMBER, "component": _TEXT}
_REPORT_OPTIONAL = {"peak_magnitude": _NUMBER}
_REPORT_EVENTS = frozenset({"opened", "escalated", "closed", "status"})


def _checked_reports(reports: Any) -> None:
    """ValueError unless ``reports`` is a list of episode reports stage 2 can merge."""
    if type(reports) is not list:
        raise ValueError("episodes record: its reports are not a list")
    for report in reports:
        if type(report) is not dict:
            raise ValueError("episodes record: a report is not an object")
        for name, kind in chain(_REPORT_KINDS.items(),
                                ((n, k) for n, k in _REPORT_OPTIONAL.items() if n in report)):
            value = report.get(name)
            if name not in report or value is None or not _column_fits(kind, [value]):
                raise ValueError(f"episodes record: a report's {name!r} is not {kind}")
        if report["kind"] not in _REPORT_EVENTS:
            raise ValueError(f"episodes record: a report's kind {report['kind']!r} is none of "
                             f"{sorted(_REPORT_EVENTS)}")


class WindowKey(NamedTuple):
    """One event-time window of one (model, version, segment); ``size`` and ``start`` in ms.

    A tuple, so it sorts, hashes and compares like the plain tuples older checkpoints hold.

    >>> key = WindowKey(300_000, 600_000, "churn", "1", "region=eu")
    >>> key.end, key.size_s
    (900000, 300)
    """

    size: int
    start: int
    model_id: str
    model_version: str
    segment: str

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def size_s(self) -> int:
        return self.size // 1000

    def close_order(self) -> tuple[int, int, str, str, str]:
        """Windows close in order of end, then size, model, version, segment (both stages)."""
        return (self.end, self.size, self.model_id, self.model_version, self.segment)


def episode_grid_ms(settings: Settings) -> int:
    """Event-time grid of drift episode status reports (stage 1) and episode rows (stage 2): every
    window size is a multiple of it, so a window closes on a grid line."""
    return math.gcd(*settings.windows.sizes_s) * 1000


def window_segments(tags: str) -> list[str]:
    """Windows (and metrics) are kept overall ('') and per single segment tag of an event.

    >>> window_segments("region=eu;tier=gold"), window_segments("")
    (['', 'region=eu', 'tier=gold'], [''])
    """
    return ["", *tags.split(";")] if tags else [""]


# -- typed model-events records ---------------------------------------------------------------


class _Layout(NamedTuple):
    """A record class's field names, in order, and a getter of their values as a tuple."""

    names: tuple[str, ...]
    values: Callable[[Any], tuple[Any, ...]]


_LAYOUTS: dict[type, _Layout] = {}


def _layout(cls: type) -> _Layout:
    # Kept per class: dataclasses.fields() filters a class's fields afresh at every call, and
    # stage 1 encodes a record per window closed (a Partial each, thousands with many models).
    layout = _LAYOUTS.get(cls)
    if layout is None:
        names = tuple(f.name for f in fields(cls))
        # a record that has a type has ``shard`` and more fields, so the getter returns a tuple
        layout = _LAYOUTS[cls] = _Layout(names, attrgetter(*names))
    return layout


@dataclass(frozen=True, slots=True)
class _Record:
    """Fields common to every model-events record: the stage-1 shard that sent it."""

    type: ClassVar[str]
    shard: int

    def payload(self) -> dict[str, Any]:
        """The record as its JSON object (``type`` first)."""
        names, values = _layout(type(self))
        payload = {"type": self.type}
        payload.update(zip(names, values(self), strict=True))
        return payload

    @classmethod
    def from_payload(cls, m: Mapping[str, Any]) -> Any:
        """The record from its JSON object; KeyError/TypeError/ValueError if it does not fit."""
        values = {name: m[name] for name in _layout(cls).names if name in m}
        values["shard"] = _int_field(m, "shard")
        for name in ("model_id", "model_version"):  # a model's keys: texts, as every table's
            if name in values and type(values[name]) is not str:
                raise ValueError(f"{cls.type} record: its {name} is not text")
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ModelRecord(_Record):
    model_id: str
    model_version: str


@dataclass(frozen=True, slots=True)
class Progress(_Record):
    """No record of the shard with an earlier time follows: windows (``pred_progress``), outcome
    buckets (``outcome_progress``) and duplicate counts (``duplicate_progress``)."""

    type: ClassVar[str] = PROGRESS
    pred_progress: int
    outcome_progress: int
    duplicate_progress: int

    @classmethod
    def from_payload(cls, m: Mapping[str, Any]) -> Progress:
        pred, outcome = _int_field(m, "pred_progress"), _int_field(m, "outcome_progress")
        duplicate = _int_field(m, "duplicate_progress") if "duplicate_progress" in m else min(pred, outcome)
        return cls(_int_field(m, "shard"), pred, outcome, duplicate)


@dataclass(frozen=True, slots=True)
class Partial(ModelRecord):
    """One shard's aggregate of a closed window (:meth:`WindowAccumulator.to_partial` form)."""

    type: ClassVar[str] = PARTIAL
    segment: str
    window_size_s: int
    window_start: int
    window_end: int
    partial: dict[str, Any]

    @classmethod
    def from_payload(cls, m: Mapping[str, Any]) -> Partial:
        """As :meth:`_Record.from_payload`, and ValueError unless its window is a text segment and
        integer times (its ``partial`` is checked where it is added, :func:`windows.check_partial`)."""
        record: Partial = super(Partial, cls).from_payload(m)
        if type(record.segment) is not str:
            raise ValueError("partial record: its segment is not text")
        for name in ("window_size_s", "window_start", "window_end"):
            _int_field(m, name)
        if type(record.partial) is not dict:
            raise ValueError("partial record: its partial is not an object")
        return record

    @property
    def key(self) -> WindowKey:
        return WindowKey(int(self.window_size_s) * 1000, int(self.window_start), self.model_id,
                         self.model_version, self.segment)


@dataclass(frozen=True, slots=True)
class ColumnarRecord(ModelRecord):
    """A columnar record: one list per field of ``columns``, all of one length."""

    columns: ClassVar[tuple[str, ...]] = ()

    def rows(self) -> Iterator[tuple[Any, ...]]:
        return zip(*(getattr(self, name) for name in self.columns), strict=True)

    @classmethod
    def from_payload(cls, m: Mapping[str, Any]) -> Any:
        """As :meth:`_Record.from_payload`, and ValueError unless every column is a list, all of one
        length: a record that does not fit is refused whole, before stage 2 applies a row of it
        (its rows are applied as they are read).

        >>> Outcomes.from_payload({**Outcomes(0, "m", "1", ["p"], [""], [5], [1], [1], [None], [0]).payload(),
        ...                        "label_time": [5, 6]})
        Traceback (most recent call last):
        ...
        ValueError: outcomes record: its columns are not lists of one length
        """
        record = super(ColumnarRecord, cls).from_payload(m)
        columns = [getattr(record, name) for name in cls.columns]
        if any(type(column) is not list for column in columns) or len(set(map(len, columns))) > 1:
            raise ValueError(f"{cls.type} record: its columns are not lists of one length")
        _checked_columns(cls.type, {name: getattr(record, name) for name in cls.columns})
        return record


@dataclass(frozen=True, slots=True)
class Outcomes(ColumnarRecord):
    type: ClassVar[str] = OUTCOMES
    columns: ClassVar[tuple[str, ...]] = OUTCOME_FIELDS
    prediction_id: list[str]
    segment: list[str]
    label_time: list[int]
    label_delay_ms: list[int]
    correct: list[int | None]
    abs_error: list[float | None]
    rerouted: list[int] = field(default_factory=list)

    @classmethod
    def from_payload(cls, m: Mapping[str, Any]) -> Outcomes:
        if "rerouted" not in m:  # sent before re-routing existed
            m = {**m, "rerouted": [0] * len(m["prediction_id"])}
        return super(Outcomes, cls).from_payload(m)


@dataclass(frozen=True, slots=True)
class Expired(ColumnarRecord):
    """Predictions that will get no label, each with its reason ('horizon' | 'evicted').

    >>> old = (b'{"type": "expired", "shard": 0, "model_id": "m", "model_version": "1", '
    ...        b'"prediction_id": ["p"], "segment": [""], "expired_at": [5]}')
    >>> list(decode_model_event(old).rows())  # sent before evictions were reported
    [('p', '', 5, 'horizon')]
    """

    type: ClassVar[str] = EXPIRED
    columns: ClassVar[tuple[str, ...]] = EXPIRED_FIELDS
    prediction_id: list[str]
    segment: list[str]
    expired_at: list[int]
    reason: list[str] = field(default_factory=list)

    @classmethod
    def from_payload(cls, m: Mapping[str, Any]) -> Expired:
        if "reason" not in m:  # sent before evictions were reported: every one expired
            m = {**m, "reason": ["horizon"] * len(m["prediction_id"])}
        return super(Expired, cls).from_payload(m)


@dataclass(frozen=True, slots=True)
class Orphans(ColumnarRecord):
    type: ClassVar[str] = ORPHANS
    columns: ClassVar[tuple[str, ...]] = ORPHAN_FIELDS
    prediction_id: list[str]
    label_time: list[int]
    reason: list[str]
    # the label's record (-1: unknown): two labels of one id and time are two orphans, and a record
    # sent again after a restart stays one
    source_partition: list[int] = field(default_factory=list)
    source_offset: list[int] = field(default_factory=list)

    @classmethod
    def from_payload(cls, m: Mapping[str, Any]) -> Orphans:
        if "source_partition" not in m:  # sent before orphan labels were rows
            unknown = [-1] * len(m["prediction_id"])
            m = {**m, "source_partition": unknown, "source_offset": unknown}
        return super(Orphans, cls).from_payload(m)


@dataclass(frozen=True, slots=True)
class Duplicates(ColumnarRecord):
    type: ClassVar[str] = DUPLICATES
    columns: ClassVar[tuple[str, ...]] = DUPLICATE_FIELDS
    kind: list[str]
    segment: list[str]
    event_time: list[int]
    source_partition: list[int]
    source_offset: list[int]
    prediction_id: list[str] = field(default_factory=list)

    @classmethod
    def from_payload(cls, m: Mapping[str, Any]) -> Duplicates:
        if "prediction_id" not in m:  # sent before re-sends were rows with their ids
            m = {**m, "prediction_id": [""] * len(m["kind"])}
        return super(Duplicates, cls).from_payload(m)


@dataclass(frozen=True, slots=True)
class EpisodeReports(ModelRecord):
    """A shard's drift episode reports (:mod:`driftline.operators.episodes` dicts), in its order."""

    type: ClassVar[str] = EPISODES
    reports: list[dict[str, Any]]

    @classmethod
    def from_payload(cls, m: Mapping[str, Any]) -> EpisodeReports:
        """As :meth:`_Record.from_payload`, and ValueError unless every report is one stage 2 can
        merge (a report that does not fit raised where the merger applies it, at a grid line)."""
        record: EpisodeReports = super(EpisodeReports, cls).from_payload(m)
        _checked_reports(record.reports)
        return record


@dataclass(frozen=True, slots=True)
class Stacked(_Record):
    """One shard's columnar records of one type (``record_type``) for several models, bound for one
    partition, as one record: their columns concatenated in the records' order, the ``i``-th
    record's ``rows[i]`` rows naming ``model_id[i]`` and ``model_version[i]``. Stage 2 takes its
    :meth:`records` as if each had come alone. With many models a batch holds a few outcomes of
    each of hundreds: sent as records of their own (or as a list of them in one message, as
    unreleased code before this did), each model's record was built, encoded as its own object,
    decoded and checked alone (~13 CPU-us a record; docs/scaling.md, session 35).

    >>> made = Stacked(3, "expired", ["a", "b"], ["1", "1"], [2, 1], {
    ...     "prediction_id": ["p0", "p1", "p2"], "segment": ["", "", ""], "expired_at": [5, 6, 7],
    ...     "reason": ["horizon"] * 3})
    >>> [(r.model_id, r.prediction_id) for r in decode_model_event(encode_model_event(made)).records()]
    [('a', ['p0', 'p1']), ('b', ['p2'])]
    """

    type: ClassVar[str] = STACKED
    record_type: str
    model_id: list[str]
    model_version: list[str]
    rows: list[int]
    columns: dict[str, list[Any]]

    def records(self) -> list[ColumnarRecord]:
        """The per-model records, in order (each column a slice of the stacked one)."""
        cls = _COLUMNAR[self.record_type]
        stacked = [self.columns[name] for name in cls.columns]
        out: list[ColumnarRecord] = []
        start = 0
        for model_id, version, n in zip(self.model_id, self.model_version, self.rows, strict=True):
            stop = start + n
            out.append(cls(self.shard, model_id, version, *[column[start:stop] for column in stacked]))
            start = stop
        return out

    @classmethod
    def from_payload(cls, m: Mapping[str, Any]) -> Stacked:
        """ValueError unless it holds a known columnar type's every column (and no other), runs of
        one or more rows naming a model and version each, and every column a list of their rows:
        a record that does not fit is refused whole, before stage 2 applies a row of it.

        >>> good = Stacked(0, "expired", ["m"], ["1"], [1], {
        ...     "prediction_id": ["q"], "segment": [""], "expired_at": [9], "reason": ["horizon"]}).payload()
        >>> Stacked.from_payload({**good, "rows": [2]})
        Traceback (most recent call last):
        ...
        ValueError: stacked record: its columns are not lists of its 2 rows
        """
        kind = _COLUMNAR.get(m["record_type"])
        if kind is None:
            raise ValueError(f"stacked record of an unknown type {m['record_type']!r}")
        models, versions, rows, columns = m["model_id"], m["model_version"], m["rows"], m["columns"]
        if not (type(models) is list and type(versions) is list and type(rows) is list
                and len(models) == len(versions) == len(rows)
                and all(type(v) is str for v in chain(models, versions))
                and all(type(n) is int and n > 0 for n in rows)):
            raise ValueError("stacked record: its runs are not lists of one length of names and row counts")
        if not isinstance(columns, dict) or columns.keys() != set(kind.columns):
            raise ValueError(f"stacked record: its columns are not those of a {kind.type} record")
        total = sum(rows)
        if any(type(column) is not list or len(column) != total for column in columns.values()):
            raise ValueError(f"stacked record: its columns are not lists of its {total} rows")
        _checked_columns(kind.type, columns)
        return cls(_int_field(m, "shard"), kind.type, models, versions, rows, columns)


ModelEvent = Progress | Partial | Outcomes | Expired | Orphans | Duplicates | EpisodeReports | Stacked
_BY_TYPE: dict[str, type[_Record]] = {
    cls.type: cls
    for cls in (Progress, Partial, Outcomes, Expired, Orphans, Duplicates, EpisodeReports, Stacked)
}
# the types a Stacked record may hold
_COLUMNAR = {name: cls for name, cls in _BY_TYPE.items() if issubclass(cls, ColumnarRecord)}


def encode_model_event(record: ModelEvent | ModelRecord) -> bytes:
    return encode(record.payload())


def decode_model_event(value: bytes) -> ModelEvent:
    """The typed record in ``value``; ValueError/KeyError/TypeError for anything else."""
    return _typed(decode(value))


def _typed(m: Any) -> ModelEvent:
    if not isinstance(m, dict):
        raise ValueError("internal record is not an object")
    kind = m.get("type")
    cls = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown internal record type {kind!r}")
    record: ModelEvent = cls.from_payload(m)
    return record


# -- the wire -----------------------------------------------------------------------------------
def model_partition(model_id: str, partitions: int) -> int:
    """Stable partition of a model on model-events (independent of any client's partitioner)."""
    return zlib.crc32(model_id.encode()) % partitions


def encode(payload: Mapping[str, Any]) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def decode(value: bytes) -> dict[str, Any]:
    result = orjson.loads(value)
    if not isinstance(result, dict):
        raise ValueError("internal record is not an object")
    return result


def to_model_event(topic: str, partitions: int, record: ModelRecord) -> OutboundMessage:
    """A per-model record to its model's partition of model-events."""
    partition = model_partition(record.model_id, partitions)
    return OutboundMessage(topic, record.model_id.encode(), encode_model_event(record), partition)


def stacks(shard: int, partitions: int, kind: type[ColumnarRecord],
           items: Sequence[Any]) -> list[tuple[int, Stacked]]:
    """``items`` of ``shard`` (each with a ``model_id``, a ``model_version`` unless orphan labels,
    and ``kind``'s columns as attributes) as one :class:`Stacked` record of ``kind`` a model-events
    partition they go to, with the partition, partitions in order; in each, the models in sorted
    order, a model's items in their order.

    >>> from collections import namedtuple
    >>> Gone = namedtuple("Gone", ["model_id", "model_version", *EXPIRED_FIELDS])
    >>> items = [Gone(m, "1", f"p-{m}", "", 5, "horizon") for m in "cba"]
    >>> [model_partition(m, 3) for m in "abc"]
    [0, 2, 0]
    >>> [(partition, r.model_id, r.prediction_id)
    ...  for partition, made in stacks(0, 3, Expired, items) for r in made.records()]
    [(0, 'a', ['p-a']), (0, 'c', ['p-c']), (2, 'b', ['p-b'])]
    """
    if not items:
        return []
    keys = model_keys(items)
    first = keys[0]
    if keys.count(first) == len(keys):  # the common batch: one model
        made = Stacked(shard, kind.type, [first[0]], [first[1]], [len(keys)],
                       dict(zip(kind.columns, attribute_columns(items, kind.columns), strict=True)))
        return [(model_partition(first[0], partitions), made)]
    # Each item's (partition, model, version) as the rank of its model in that order, and the items
    # in rank order by a stable integer sort (not sorted by their key tuples, which costs more).
    distinct = sorted((model_partition(model_id, partitions), model_id, version)
                      for model_id, version in set(keys))
    rank = {(model_id, version): i for i, (_, model_id, version) in enumerate(distinct)}
    codes = np.fromiter(map(rank.__getitem__, keys), dtype=np.int64, count=len(keys))
    in_order = list(map(items.__getitem__, np.argsort(codes, kind="stable").tolist()))
    counts = np.bincount(codes, minlength=len(distinct)).tolist()
    columns = dict(zip(kind.columns, attribute_columns(in_order, kind.columns), strict=True))
    out: list[tuple[int, Stacked]] = []
    first_model = first_item = 0
    for partition, models in groupby(range(len(distinct)), key=lambda i: distinct[i][0]):
        ranks = list(models)
        stop_model = first_model + len(ranks)
        rows = counts[first_model:stop_model]
        stop_item = first_item + sum(rows)
        out.append((partition, Stacked(
            shard, kind.type, [distinct[i][1] for i in ranks], [distinct[i][2] for i in ranks], rows,
            {name: column[first_item:stop_item] for name, column in columns.items()})))
        first_model, first_item = stop_model, stop_item
    return out


def stacked(topic: str, partitions: int, shard: int, kind: type[ColumnarRecord],
            items: Sequence[Any]) -> list[OutboundMessage]:
    """:func:`stacks` as messages to their partitions of model-events ``topic``."""
    return [OutboundMessage(topic, None, encode_model_event(made), partition)
            for partition, made in stacks(shard, partitions, kind, items)]


def model_keys(items: Sequence[Any]) -> list[tuple[str, str]]:
    """Each item's (model, version); orphan labels name no version ('')."""
    if hasattr(items[0], "model_version"):
        return list(zip(*attribute_columns(items, ("model_id", "model_version")), strict=True))
    return [(model_id, "") for model_id in map(attrgetter("model_id"), items)]


def attribute_columns(items: Sequence[Any], names: tuple[str, ...]) -> list[list[Any]]:
    """Each item's attribute ``name``, a list per name: read from the slots of a batch of one
    slotted class in one call of the join's C extension (outcomes: ~25 CPU-ns a value through
    ``attrgetter``), else through ``attrgetter``.

    >>> from driftline.operators.join import JoinedOutcome
    >>> o = JoinedOutcome("p", "m", "1", "", 1, 2, 1, "a", 0.9, None, "a", None, 1, None, "{}")
    >>> attribute_columns([o, o], ("prediction_id", "correct"))
    [['p', 'p'], [1, 1]]
    """
    fast = join_native.NATIVE
    if fast is not None and items:
        made = fast.slot_columns(items if type(items) is list else list(items), type(items[0]), names)
        if made is not None:
            return cast(list[list[Any]], made)
    return [list(map(attrgetter(name), items)) for name in names]


def broadcast(topic: str, partitions: int, record: Progress) -> list[OutboundMessage]:
    """A record to every partition of model-events (every stage-2 shard needs a shard's progress)."""
    value = encode_model_event(record)
    return [OutboundMessage(topic, None, value, q) for q in range(partitions)]


class ColumnBlock(NamedTuple):
    """``n`` rows that carry the same columns (``names``, in this order), a list of values per column."""

    names: tuple[str, ...]
    columns: list[list[Any]]
    n: int

    def rows(self) -> list[dict[str, Any]]:
        """The block's rows, as dicts (keys in ``names``' order)."""
        names = self.names
        if not names:
            return [{} for _ in range(self.n)]
        return [dict(zip(names, values, strict=True)) for values in zip(*self.columns, strict=True)]


def row_blocks(rows: Sequence[Mapping[str, Any]]) -> list[ColumnBlock]:
    """``rows`` as runs of consecutive rows with the same keys in the same order, each a
    :class:`ColumnBlock` (a table's rows from one builder are one block).

    >>> [tuple(b) for b in row_blocks([{"a": 1, "b": 2}, {"a": 3, "b": None}, {"a": 4}])]
    [(('a', 'b'), [[1, 3], [2, None]], 2), (('a',), [[4]], 1)]
    >>> [r for b in row_blocks([{"a": 1}, {}, {"a": 2}]) for r in b.rows()]
    [{'a': 1}, {}, {'a': 2}]
    >>> [tuple(b) for b in row_blocks([{"a": 1, "b": None}])]
    [(('a', 'b'), [[1], [None]], 1)]
    """
    if len(rows) == 1:  # (a message of one row, as the outcomes topic's: a quarter of the loop's cost)
        (row,) = rows
        return [ColumnBlock(tuple(row), [[value] for value in row.values()], 1)]
    blocks: list[ColumnBlock] = []
    start, names = 0, None
    for i, row in enumerate(rows):
        keys = tuple(row)
        if keys != names:
            if names is not None:
                blocks.append(_block(names, rows[start:i]))
            start, names = i, keys
    if names is not None:
        blocks.append(_block(names, rows[start:]))
    return blocks


def joined_blocks(blocks: Sequence[ColumnBlock]) -> list[ColumnBlock]:
    """``blocks`` with each run of consecutive blocks of the same names as one block (the same rows
    in the same order, in new lists: the blocks given are left as they are). The outcomes topic
    carries a row a message: a fetched batch's outcomes are then converted and inserted as one
    block instead of a block each.

    >>> a, b = ColumnBlock(("x", "y"), [[1], [2]], 1), ColumnBlock(["x", "y"], [[3], [4]], 1)
    >>> [tuple(block) for block in joined_blocks([a, b, ColumnBlock(("x",), [[5]], 1), a])]
    [(('x', 'y'), [[1, 3], [2, 4]], 2), (('x',), [[5]], 1), (('x', 'y'), [[1], [2]], 1)]
    >>> a.columns  # (unchanged)
    [[1], [2]]
    """
    out: list[ColumnBlock] = []
    run: list[ColumnBlock] = []
    first: tuple[str, ...] = ()
    for block in blocks:
        names = block.names
        if type(names) is not tuple:  # (a decoded sink message names its columns in a list)
            names = tuple(names)
        if not run:
            first = names
        elif names != first:
            out.append(_joined(run))
            run, first = [], names
        run.append(block)
    if run:
        out.append(_joined(run))
    return out


def _joined(run: list[ColumnBlock]) -> ColumnBlock:
    if len(run) == 1:
        return run[0]
    # a column at a time across the blocks (one extend per block and column cost ~2x as much)
    columns = [list(chain.from_iterable(parts))
               for parts in zip(*[block.columns for block in run], strict=True)]
    return ColumnBlock(tuple(run[0].names), columns, sum(block.n for block in run))


def _block(names: tuple[str, ...], rows: Sequence[Mapping[str, Any]]) -> ColumnBlock:
    # every row has exactly these keys in this order, so its values line up with names
    columns = zip(*[row.values() for row in rows], strict=True)
    return ColumnBlock(names, [list(column) for column in columns], len(rows))


def sink_rows(
    topic: str, table: str, rows: Sequence[Mapping[str, Any]], chunk: int = 2000
) -> list[OutboundMessage]:
    """Rows for the ClickHouse sink, chunked to keep messages well under the broker's limit.

    A message carries its rows as columns, ``{"table": t, "blocks": [{"names": [...], "n": n,
    "columns": [[...], ...]}, ...]}`` (:func:`row_blocks`; rows in order): with many models most
    windows are small, and the sink decoded and regrouped each one's ~50 rows of ~20 keys apiece.
    The sink still reads the older ``{"table": t, "rows": [...]}``
    (:meth:`~driftline.pipeline.to_rows.RowMapper.blocks`).
    """
    return [
        OutboundMessage(topic, table.encode(), encode({"table": table, "blocks": [
            {"names": block.names, "n": block.n, "columns": block.columns}
            for block in row_blocks(rows[i : i + chunk])]}))
        for i in range(0, len(rows), chunk)
    ]
