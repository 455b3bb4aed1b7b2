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
event's ``timestamp``. Events are ordered by timestamp (a stable sort: file order among equal
times) and numbered per partition from offset 0. An event whose prediction_id or timestamp
cannot be read (it will be dead-lettered) keeps its place: the timestamp of the line before it
and, without a key, partition 0.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterator
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
    timestamp_ms: int
    value: bytes


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


def read_events(path: Path) -> list[FileEvent]:
    """The events of one export file, in file order."""
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        docs = _jsonl(path)
    elif suffix in PARQUET_SUFFIXES:
        docs = _parquet(path)
    else:
        raise ValueError(f"{path}: unknown format; use {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)}")
    out: list[FileEvent] = []
    previous_ts = 0
    for value, doc in docs:
        key: bytes | None = None
        ts: int | None = None
        if isinstance(doc, dict):
            pid = doc.get("prediction_id")
            key = pid.encode() if isinstance(pid, str) else None
            ts = event_time(doc.get("timestamp"))
        previous_ts = previous_ts if ts is None else ts
        out.append(FileEvent(key, previous_ts, value))
    return out


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
