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
- :class:`Bundle`: one shard's columnar records of several models bound for one partition, in
  order, as one message (with many models a batch holds a few outcomes of each of hundreds).

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
from itertools import chain
from operator import attrgetter
from typing import Any, ClassVar, NamedTuple, cast

import orjson

from driftline.config import Settings
from driftline.pipeline.stage import OutboundMessage

PARTIAL = "partial"
OUTCOMES = "outcomes"
EXPIRED = "expired"
ORPHANS = "orphans"
DUPLICATES = "duplicates"
PROGRESS = "progress"
EPISODES = "episodes"
BUNDLE = "bundle"

NO_TIME = -(2**62)  # progress (a watermark) before any event

# Outcome columns carried to stage 2 (the full row goes to the outcomes topic).
OUTCOME_FIELDS = (
    "prediction_id", "segment", "label_time", "label_delay_ms", "correct", "abs_error", "rerouted"
)
EXPIRED_FIELDS = ("prediction_id", "segment", "expired_at", "reason")
ORPHAN_FIELDS = ("prediction_id", "label_time", "reason", "source_partition", "source_offset")
DUPLICATE_FIELDS = ("kind", "segment", "event_time", "source_partition", "source_offset", "prediction_id")


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
        values["shard"] = int(m["shard"])
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
        pred, outcome = int(m["pred_progress"]), int(m["outcome_progress"])
        duplicate = int(m.get("duplicate_progress", min(pred, outcome)))
        return cls(int(m["shard"]), pred, outcome, duplicate)


@dataclass(frozen=True, slots=True)
class Partial(ModelRecord):
    """One shard's aggregate of a closed window (:meth:`WindowAccumulator.to_partial` form)."""

    type: ClassVar[str] = PARTIAL
    segment: str
    window_size_s: int
    window_start: int
    window_end: int
    partial: dict[str, Any]

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


@dataclass(frozen=True, slots=True)
class Bundle(_Record):
    """One shard's per-model records bound for one partition of model-events, in order, as one
    message: stage 2 takes them as if each had come alone. With many models a batch holds a few
    outcomes of each of hundreds of models, and a message of its own each was built, encoded,
    produced and decoded alone. A stage 2 of a driftline older than bundles dead-letters them: a
    rolling upgrade runs with ``worker.bundle_model_events`` off (a message a record) until every
    worker reads them.

    >>> first = Outcomes(2, "a", "1", ["p"], [""], [5], [1], [1], [None], [0])
    >>> second = Expired(2, "b", "1", ["q"], [""], [9], ["horizon"])
    >>> decoded = decode_model_event(encode_model_event(Bundle(2, [first, second])))
    >>> decoded.records == [first, second]
    True
    """

    type: ClassVar[str] = BUNDLE
    records: list[ModelRecord]

    def payload(self) -> dict[str, Any]:
        return {"type": self.type, "shard": self.shard, "records": [r.payload() for r in self.records]}

    @classmethod
    def from_payload(cls, m: Mapping[str, Any]) -> Bundle:
        shard = int(m["shard"])
        inner = [_typed(payload) for payload in m["records"]]
        if any(not isinstance(r, ModelRecord) or r.shard != shard for r in inner):
            raise ValueError("a bundle holds per-model records of its own shard only")
        return cls(shard, cast(list[ModelRecord], inner))


ModelEvent = Progress | Partial | Outcomes | Expired | Orphans | Duplicates | EpisodeReports | Bundle
_BY_TYPE: dict[str, type[_Record]] = {
    cls.type: cls
    for cls in (Progress, Partial, Outcomes, Expired, Orphans, Duplicates, EpisodeReports, Bundle)
}


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


def bundled(
    topic: str, partitions: int, shard: int, per_model: Sequence[ModelRecord]
) -> list[OutboundMessage]:
    """``per_model`` (records of ``shard``) as messages to their models' partitions, in order within
    each: a partition's one record as it is, several as one :class:`Bundle` (partitions in order).

    >>> made = [Duplicates(0, m, "1", ["prediction"], [""], [5], [0], [7], ["p"]) for m in "abc"]
    >>> [model_partition(m, 3) for m in "abc"]
    [0, 2, 0]
    >>> [(m.partition, decode_model_event(m.value).type) for m in bundled("t", 3, 0, made)]
    [(0, 'bundle'), (2, 'duplicates')]
    """
    by_partition: dict[int, list[ModelRecord]] = {}
    for record in per_model:
        by_partition.setdefault(model_partition(record.model_id, partitions), []).append(record)
    return [to_model_event(topic, partitions, held[0]) if len(held) == 1
            else OutboundMessage(topic, None, encode_model_event(Bundle(shard, held)), partition)
            for partition, held in sorted(by_partition.items())]


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
