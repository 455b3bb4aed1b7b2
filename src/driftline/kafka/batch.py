"""Keyed, batched producing on aiokafka's batch API (shared by the client SDK and the simulator).

``AIOKafkaProducer.send`` costs one coroutine, one future and one accumulator lookup per
record; filling ``BatchBuilder``s per partition ourselves and submitting them with
``send_batch`` is about 2.5x faster on the embedded broker (~250k vs ~100k records/s of
~330 bytes). Partitions are chosen by Kafka's default partitioner (:mod:`driftline.kafka.partitioner`), so
records keyed by ``prediction_id`` land on the same partition index as those of any other Kafka
producer: predictions and labels stay co-partitioned.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from driftline.kafka.partitioner import partition_for_key

if TYPE_CHECKING:  # the SDK imports this module without the [kafka] extra; its client starts aiokafka
    from aiokafka import AIOKafkaProducer


class OutRecord(NamedTuple):
    topic: str
    key: bytes
    value: bytes
    timestamp_ms: int | None = None


class Submitted(NamedTuple):
    """One submitted batch: resolves when the broker acknowledged its ``n_records`` records."""

    future: asyncio.Future[Any]
    n_records: int


class BatchSender:
    """Groups records into one batch per (topic, partition) and submits full batches at once."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._partitions: dict[str, list[int]] = {}

    async def _partitions_of(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            parts = sorted(await self._producer.partitions_for(topic))
            self._partitions[topic] = parts
        return parts

    async def send(self, records: Iterable[OutRecord]) -> tuple[list[Submitted], int]:
        """Submit ``records``; returns the submitted batches and the number of records rejected
        because a single record does not fit an empty batch (larger than ``max_batch_size``)."""
        open_batches: dict[tuple[str, int], tuple[Any, int]] = {}
        submitted: list[Submitted] = []
        rejected = 0
        for rec in records:
            parts = await self._partitions_of(rec.topic)
            partition = parts[partition_for_key(rec.key, len(parts))]
            slot = (rec.topic, partition)
            builder, count = open_batches.get(slot) or (self._producer.create_batch(), 0)
            if builder.append(key=rec.key, value=rec.value, timestamp=rec.timestamp_ms) is None:
                if count:
                    submitted.append(await self._submit(builder, count, slot))
                builder, count = self._producer.create_batch(), 0
                if builder.append(key=rec.key, value=rec.value, timestamp=rec.timestamp_ms) is None:
                    rejected += 1
                    continue
            open_batches[slot] = (builder, count + 1)
        for slot, (builder, count) in open_batches.items():
            submitted.append(await self._submit(builder, count, slot))
        return submitted, rejected

    async def _submit(self, builder: Any, count: int, slot: tuple[str, int]) -> Submitted:
        future = await self._producer.send_batch(builder, slot[0], partition=slot[1])
        return Submitted(future, count)
