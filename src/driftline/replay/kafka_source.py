"""Reading a time range of the predictions and labels topics, and the whole profiles topic.

Bounds are on *record timestamps*: ``[from, to)``, the lower bound inclusive, the upper one
exclusive. Per partition, the last offset is fixed when the replay starts: the true log end
(from the high watermark of a Fetch response, :func:`driftline.kafka.offsets.end_offsets`), never
a ListOffsets answer; records produced after the start are not replayed. The first and stop
offsets of the range are found by binary search over the records' own timestamps
(:func:`driftline.kafka.offsets.offset_for_time`) — never ``offsets_for_times``, which the embedded
broker answers by append time (and with 0 past the end). Records inside the offsets but outside
the time range (timestamps that are not monotonic) are skipped.

The consumer has no group: partitions are assigned, nothing is committed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from driftline.config import Settings
from driftline.kafka.clients import aiokafka_consumer
from driftline.kafka.offsets import end_offsets, offset_for_time, position_now
from driftline.kafka.records import as_raw
from driftline.operators.validate import RawRecord
from driftline.replay.merge import LABELS, PREDICTIONS, PartitionMerger

OFFSET_METHOD = (
    "offsets: log end from the Fetch high watermark; range start/stop by binary search over record "
    "timestamps (broker ListOffsets/offsets_for_times are not used)"
)


@dataclass(frozen=True)
class PartitionRange:
    tp: TopicPartition
    start: int  # first offset to read
    stop: int  # first offset not to read

    @property
    def size(self) -> int:
        return max(self.stop - self.start, 0)


@dataclass(frozen=True)
class Chunk:
    records: list[RawRecord]  # records to feed, in merged order
    advanced: int  # offsets passed since the previous chunk (fed or skipped)


@contextlib.asynccontextmanager
async def replay_consumer(settings: Settings, *,
                          raw_records: bool = False) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer without a group (manual assignment, no commits); ``raw_records``: its
    ``getmany`` hands out RawRecords (:mod:`driftline.kafka.records`)."""
    consumer = aiokafka_consumer(settings, None, raw_records=raw_records)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions from fresh metadata; [] if it does not exist."""
    await consumer.topics()  # refreshes the cluster metadata
    return [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]


async def plan_ranges(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition], from_ms: int | None, to_ms: int | None
) -> list[PartitionRange]:
    """Offset range of each partition for record timestamps in ``[from_ms, to_ms)``."""
    ends = await end_offsets(consumer, partitions)
    beginnings = await consumer.beginning_offsets(partitions) if partitions else {}
    ranges = []
    for tp in partitions:
        end = ends[tp]
        start = beginnings[tp] if from_ms is None else await offset_for_time(consumer, tp, from_ms, end)
        stop = end if to_ms is None else await offset_for_time(consumer, tp, to_ms, end)
        ranges.append(PartitionRange(tp, start, max(start, stop)))
    return ranges


class RangeReader:
    """Fetches the planned ranges; ``poll`` returns records with ``from_ms <= ts < to_ms``."""

    def __init__(self, consumer: AIOKafkaConsumer, ranges: list[PartitionRange], from_ms: int | None,
                 to_ms: int | None, *, max_records: int = 5000, idle_timeout_s: float = 30.0) -> None:
        self._consumer = consumer
        self._stops = {r.tp: r.stop for r in ranges if r.size}
        self._positions = {r.tp: r.start for r in ranges if r.size}
        self._from = from_ms
        self._to = to_ms
        self._max_records = max_records
        self._idle_timeout_s = idle_timeout_s
        self._paused: set[TopicPartition] = set()
        consumer.assign(sorted(self._stops))
        for r in ranges:
            if r.size:
                consumer.seek(r.tp, r.start)

    @property
    def active(self) -> set[TopicPartition]:
        return set(self._stops)

    def throttle(self, tp: TopicPartition, pause: bool) -> None:
        """Stop (or resume) fetching a partition whose records cannot be placed yet."""
        if tp not in self._stops or pause == (tp in self._paused):
            return
        if pause:
            self._consumer.pause(tp)
            self._paused.add(tp)
        else:
            self._consumer.resume(tp)
            self._paused.discard(tp)

    def _wanted(self, ts: int) -> bool:
        return (self._from is None or ts >= self._from) and (self._to is None or ts < self._to)

    async def poll(self) -> list[tuple[TopicPartition, list[RawRecord], int, bool]]:
        """(partition, records, offsets advanced, partition finished) for each partition read."""
        deadline = time.monotonic() + self._idle_timeout_s
        while True:
            fetched = await self._consumer.getmany(timeout_ms=200, max_records=self._max_records)
            out = []
            for tp, stop in sorted(self._stops.items()):
                batch = fetched.get(tp, [])
                # A fetch of only a transaction's marker or an aborted transaction's records
                # returns nothing for the partition, yet moves its position past them.
                now = position_now(self._consumer, tp)
                if not batch and (now is None or now <= self._positions[tp]):
                    continue
                records = [r for r in as_raw(batch) if r.offset < stop and self._wanted(r.timestamp_ms)]
                position = min(now if now is not None else await self._consumer.position(tp), stop)
                advanced, self._positions[tp] = position - self._positions[tp], position
                done = position >= stop
                if done:
                    del self._stops[tp]
                    self._consumer.pause(tp)
                    self._paused.discard(tp)
                out.append((tp, records, advanced, done))
            if out or not self._stops:
                return out
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no records from {sorted(self._stops)} within {self._idle_timeout_s}s "
                    "although their planned ranges are not finished"
                )


async def read_merged(reader: RangeReader, predictions_topic: str, partitions: list[int],
                      *, max_buffer: int = 50_000) -> AsyncIterator[Chunk]:
    """Chunks of records: per partition the two topics merged by record timestamp.

    A side whose records cannot be placed yet (the other side has not caught up) is paused once
    ``max_buffer`` of them wait, which bounds memory without risking a stall: the paused side is
    never the one the merge waits for.
    """
    mergers = {p: PartitionMerger() for p in partitions}
    active = reader.active

    def side_of(tp: TopicPartition) -> int:
        return PREDICTIONS if tp.topic == predictions_topic else LABELS

    for p, merger in mergers.items():
        for side in (PREDICTIONS, LABELS):
            if not any(tp.partition == p and side_of(tp) == side for tp in active):
                merger.finish(side)
    while reader.active:
        advanced = 0
        for tp, records, moved, done in await reader.poll():
            merger = mergers[tp.partition]
            merger.push(side_of(tp), records)
            if done:
                merger.finish(side_of(tp))
            advanced += moved
        ready: list[RawRecord] = []
        for merger in mergers.values():
            ready.extend(merger.take())
        for tp in reader.active:
            reader.throttle(tp, mergers[tp.partition].buffered(side_of(tp)) >= max_buffer)
        yield Chunk(ready, advanced)
    leftover = [r for merger in mergers.values() for r in merger.take()]
    if leftover:
        yield Chunk(leftover, 0)


async def read_all_values(consumer: AIOKafkaConsumer, topic: str) -> list[bytes]:
    """Every non-null value of ``topic`` up to its end at call time, partition by partition
    ([] if the topic does not exist)."""
    partitions = await partitions_of(consumer, topic)
    if not partitions:
        return []
    reader = RangeReader(consumer, await plan_ranges(consumer, partitions, None, None), None, None)
    values: dict[TopicPartition, list[bytes]] = {tp: [] for tp in partitions}
    while reader.active:
        for tp, records, _, _ in await reader.poll():
            values[tp].extend(r.value for r in records if r.value)
    return [v for tp in partitions for v in values[tp]]
