"""Messages on the internal ``model-events`` and ``sink`` topics.

model-events carries everything stage 2 needs about a model, keyed and partitioned by
model_id so that one stage-2 shard sees all of a model's partials and outcomes in one log:

- ``partial``: one stage-1 shard's aggregate of one window for one (model, version, segment);
- ``outcomes`` / ``expired``: joined outcomes and unlabeled expiries, columnar, per model;
- ``orphans``: labels no prediction joined, columnar, per model the label names ('' if none);
- ``duplicates``: exact re-sends of a prediction or label, columnar, per model (identified by
  their source record, so a restarted shard's re-sent copy counts once);
- ``episodes``: one shard's drift episode reports for one (model, version) (stage 1 watches
  features per shard; stage 2 merges the shards' reports, :mod:`driftline.pipeline.episodes`);
- ``progress``: a shard's event-time progress, sent to *every* partition. Everything a shard
  emits for times before its progress precedes the progress record in each partition.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from driftline.pipeline.stage import OutboundMessage

PARTIAL = "partial"
OUTCOMES = "outcomes"
EXPIRED = "expired"
ORPHANS = "orphans"
DUPLICATES = "duplicates"
PROGRESS = "progress"
EPISODES = "episodes"

# Outcome columns carried to stage 2 (the full row goes to the outcomes topic).
OUTCOME_FIELDS = (
    "prediction_id", "segment", "label_time", "label_delay_ms", "correct", "abs_error", "rerouted"
)
EXPIRED_FIELDS = ("prediction_id", "segment", "expired_at")
ORPHAN_FIELDS = ("prediction_id", "label_time", "reason")
DUPLICATE_FIELDS = ("kind", "segment", "event_time", "source_partition", "source_offset")


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


def to_model(topic: str, partitions: int, model_id: str, payload: Mapping[str, Any]) -> OutboundMessage:
    return OutboundMessage(topic, model_id.encode(), encode(payload), model_partition(model_id, partitions))


def broadcast(topic: str, partitions: int, payload: Mapping[str, Any]) -> list[OutboundMessage]:
    value = encode(payload)
    return [OutboundMessage(topic, None, value, q) for q in range(partitions)]


def sink_rows(
    topic: str, table: str, rows: Sequence[Mapping[str, Any]], chunk: int = 2000
) -> list[OutboundMessage]:
    """Rows for the ClickHouse sink, chunked to keep messages well under the broker's limit."""
    return [
        OutboundMessage(topic, table.encode(), encode({"table": table, "rows": list(rows[i : i + chunk])}))
        for i in range(0, len(rows), chunk)
    ]
