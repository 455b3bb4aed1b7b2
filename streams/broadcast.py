"""A non-group reader of topics every shard of a stage must see (reference profiles).

All partitions are read from the beginning. The reader keeps the latest record per
(topic, partition, key) -- what a compacted topic would hold; unkeyed records are delivered
but not retained -- so that a shard created or
restored later can be brought up to date by replaying ``retained()`` to it.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from driftline.config import Settings
from driftline.kafka.clients import aiokafka_consumer
from driftline.kafka.offsets import end_offsets
from driftline.kafka.records import to_raw
from driftline.operators.validate import RawRecord


class BroadcastReader:
    def __init__(self, settings: Settings, topics: Sequence[str], *, max_records: int = 5000) -> None:
        self._settings = settings
        self._topics = list(topics)
        self._max_records = max_records
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: list[TopicPartition] = []
        self._retained: dict[tuple[str, int, bytes], RawRecord] = {}
        self.records_in = 0

    @property
    def enabled(self) -> bool:
        return bool(self._topics)

    async def start(self, partition_counts: dict[str, int]) -> list[RawRecord]:
        """Assign every partition from the beginning and read up to the current end."""
        if not self._topics:
            return []
        consumer = aiokafka_consumer(self._settings, None)
        await consumer.start()
        self._consumer = consumer
        self._partitions = [TopicPartition(t, p) for t in self._topics for p in range(partition_counts[t])]
        ends = await end_offsets(consumer, self._partitions)
        consumer.assign(self._partitions)
        await consumer.seek_to_beginning(*self._partitions)
        caught_up: list[RawRecord] = []
        while True:
            lagging = [tp for tp in self._partitions if await consumer.position(tp) < ends[tp]]
            if not lagging:
                return caught_up
            caught_up.extend(await self._fetch(500, lagging))

    async def stop(self) -> None:
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()

    async def poll(self) -> list[RawRecord]:
        """Records appended since the last call (without waiting)."""
        if self._consumer is None:
            return []
        return await self._fetch(0, self._partitions)

    def retained(self) -> list[RawRecord]:
        """The latest record per key seen so far, in log order per partition."""
        return sorted(self._retained.values(), key=lambda r: (r.topic, r.partition, r.offset))

    async def _fetch(self, timeout_ms: int, partitions: list[TopicPartition]) -> list[RawRecord]:
        assert self._consumer is not None
        batch = await self._consumer.getmany(*partitions, timeout_ms=timeout_ms,
                                             max_records=self._max_records)
        out = [to_raw(r) for tp in sorted(batch) for r in batch[tp]]
        for record in out:
            if record.key is not None:  # compacted topics only hold keyed records
                self._retained[(record.topic, record.partition, record.key)] = record
        self.records_in += len(out)
        return out
