"""Prediction and label events from exported files, as the records Kafka would have held.

Formats (chosen by suffix):

- JSONL (``.jsonl``, ``.ndjson``, ``.json``): one event per line, exactly the message value that
  was (or would be) produced; blank lines are skipped. Lines that are not valid events stay in
  and are dead-lettered by the pipeline like on the live path.
- Parquet (``.parquet``, ``.pq``): one column per top-level JSON field of the event
  (``prediction_id``, ``model_id``, ``timestamp``, ``features``, ...). The nested fields
  ``features``, ``segment`` and ``prediction`` are either JSON strings (``'{"x": 1.5}'``) or
  structs / maps; a null cell means the field is absent; in structs null members are dropped (a
  struct cannot tell null from absent: use JSON strings to keep explicit nulls). ``timestamp``
  may be an int64 of epoch milliseconds, an RFC 3339 string or a timestamp column.

Each event becomes a record the way Kafka's default partitioner would have stored it: key =
``prediction_id``, partition = murmur2(key) mod ``topics.partitions``, record timestamp = the
event's ``timestamp``. Events are ordered by record timestamp (a stable sort: file order among
equal times) and numbered per partition from offset 0. An event whose prediction_id or timestamp
cannot be read (it will be dead-lettered) keeps its place: the timestamp of the line before it
and, without a key, partition 0.

Ordered by their own timestamps, events are never late: a late event (older than what its
partition had already seen by ``windows.allowed_lateness_s``) is one that *arrived* after newer
ones. An export of live traffic keeps its arrival in one of two ways, and ``Arrival`` says which
to replay (``driftline replay --file-order`` / ``--record-time FIELD``):

- ``Arrival(file_order=True)``: the file's order is the order of arrival (an export written as
  the events were consumed); a record's timestamp is the latest event timestamp of the file up
  to it (the clock of the stream when it arrived).
- ``Arrival(field="kafka_timestamp")``: each event carries its arrival time in that field (e.g.
  the Kafka record timestamp an export kept, epoch ms or RFC 3339); records are ordered by it
  (file order among equal times) and it is their record timestamp. The field is the export's,
  not the event's: it is taken out of the record's value (an event has no such field). An event
  without it keeps the record timestamp of the line before it.

Either way late events are then counted as late (``late_events`` rows), as a replay of the
topic these records were in counts them.

>>> lines = [{"prediction_id": p, "timestamp": t} for p, t in (("a", 1000), ("b", 90_000), ("c", 5000))]
>>> docs = [(orjson.dumps(d), d) for d in lines]
>>> [e.timestamp_ms for e in _events(docs, Arrival())]   # event times: sorted later, c before b
[1000, 90000, 5000]
>>> [e.timestamp_ms for e in _events(docs, Arrival(file_order=True))]   # c arrived after b
[1000, 90000, 90000]
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from driftline.config import Settings
from driftline.kafka.partitioner import partition_for_key
from driftline.operators.validate import RawRecord
from driftline.replay.merge import LABELS, PREDICTIONS, PartitionMerger
from driftline.replay.times import parse_time

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
PARQUET_SUFFIXES = (".parquet", ".pq")
NESTED_FIELDS = ("features", "segment", "prediction")


class FileEvent(NamedTuple):
    key: bytes | None
    timestamp_ms: int  # the record timestamp (see Arrival)
    value: bytes


class Arrival(NamedTuple):
    """How the records of an export arrived (module docstring): by default at their own event
    timestamps, in that order (no event is late)."""

    file_order: bool = False
    """The file's order is the arrival order; record timestamp = latest event timestamp so far."""
    field: str | None = None
    """The field (column) holding each event's record timestamp, records ordered by it."""


AT_EVENT_TIME = Arrival()
"""The default: records at their events' own timestamps, in that order."""


def event_time(value: Any) -> int | None:
    """Epoch milliseconds of an event's ``timestamp`` field, None if unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value == value and abs(value) != float("inf") else None
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(aware.timestamp() * 1000)
    if isinstance(value, str):
        try:
            return parse_time(value)
        except ValueError:
            return None
    return None


def read_events(path: Path, arrival: Arrival = AT_EVENT_TIME) -> list[FileEvent]:
    """The events of one export file, in file order, with their record timestamps."""
    if arrival.file_order and arrival.field is not None:
        raise ValueError("the arrival is the file order or a record time field, not both")
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        docs = _jsonl(path)
    elif suffix in PARQUET_SUFFIXES:
        docs = _parquet(path)
    else:
        raise ValueError(f"{path}: unknown format; use {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)}")
    return _events(docs, arrival)


def _events(docs: Iterable[tuple[bytes, Any]], arrival: Arrival) -> list[FileEvent]:
    out: list[FileEvent] = []
    previous_ts: int | None = None
    field = arrival.field or "timestamp"
    for value, doc in docs:
        key: bytes | None = None
        ts: int | None = None
        if isinstance(doc, dict):
            pid = doc.get("prediction_id")
            key = pid.encode() if isinstance(pid, str) else None
            ts = event_time(doc.get(field))
            if arrival.field is not None and arrival.field in doc:
                value = _without(doc, arrival.field, value)
        if ts is None or previous_ts is None:
            previous_ts = ts if previous_ts is None else previous_ts
        else:  # in file order the clock never goes back: a late event arrives at the latest time
            previous_ts = max(previous_ts, ts) if arrival.file_order else ts
        out.append(FileEvent(key, 0 if previous_ts is None else previous_ts, value))
    return out


def _without(doc: dict[str, Any], field: str, value: bytes) -> bytes:
    """The event's value without the export's ``field`` (the NaN/Infinity tokens kept)."""
    rest = {k: v for k, v in doc.items() if k != field}
    if b"NaN" in value or b"Infinity" in value:
        return json.dumps(rest, separators=(",", ":"), ensure_ascii=False).encode()
    return orjson.dumps(rest)


def read_profiles(path: Path) -> list[bytes]:
    """Reference profiles from a JSONL file (one ReferenceProfile JSON per line)."""
    return [line.strip() for line in path.read_bytes().splitlines() if line.strip()]


def _jsonl(path: Path) -> Iterator[tuple[bytes, Any]]:
    with path.open("rb") as f:
        for raw in f:
            value = raw.rstrip(b"\r\n")
            if not value.strip():
                continue
            yield value, _loads(value)


def _loads(value: bytes) -> Any:
    """The line as JSON, tolerating the NaN/Infinity tokens the event decoder accepts; None if invalid."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(value)
    except ValueError:
        return None


def _parquet(path: Path) -> Iterator[tuple[bytes, Any]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        for row in batch.to_pylist():
            doc = _from_parquet_row(row)
            yield orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), doc


def _from_parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name, value in row.items():
        if value is None:
            continue
        if name in NESTED_FIELDS and isinstance(value, str) and value[:1] in ("{", "["):
            value = orjson.loads(value)
        elif isinstance(value, datetime):
            value = event_time(value)
        else:
            value = _plain(value)
        doc[name] = value
    return doc


def _plain(value: Any) -> Any:
    """Structs without null members; maps (lists of pairs) as objects."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list) and value and all(isinstance(i, tuple) and len(i) == 2 for i in value):
        return {str(k): _plain(v) for k, v in value if v is not None}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_records(
    settings: Settings,
    predictions: list[FileEvent],
    labels: list[FileEvent],
    from_ms: int | None = None,
    to_ms: int | None = None,
) -> list[RawRecord]:
    """The records a replay feeds: per partition both topics merged by timestamp, the partitions
    interleaved by timestamp; only record timestamps in ``[from_ms, to_ms)`` are kept."""
    partitions = settings.topics.partitions
    mergers = [PartitionMerger() for _ in range(partitions)]
    for side, topic, events in (
        (PREDICTIONS, settings.topics.predictions, predictions),
        (LABELS, settings.topics.labels, labels),
    ):
        offsets = [0] * partitions
        per_partition: list[list[RawRecord]] = [[] for _ in range(partitions)]
        for event in sorted(events, key=lambda e: e.timestamp_ms):
            p = partition_for_key(event.key, partitions) if event.key is not None else 0
            record = RawRecord(topic, p, offsets[p], event.timestamp_ms, event.key, event.value)
            offsets[p] += 1
            if (from_ms is None or record.timestamp_ms >= from_ms) and (
                to_ms is None or record.timestamp_ms < to_ms
            ):
                per_partition[p].append(record)
        for p, records in enumerate(per_partition):
            mergers[p].push(side, records)
            mergers[p].finish(side)
    merged = [m.take() for m in mergers]
    return list(heapq.merge(*merged, key=lambda r: r.timestamp_ms))
