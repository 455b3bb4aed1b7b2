"""Offsets that stay correct on brokers whose ListOffsets answers are wrong.

The embedded broker (Tansu) answers ListOffsets(LATEST) with the base offset of the last record
batch + 1 instead of the log end, and searches `offsets_for_times` by append time (returning 0
past the end). Fetch responses, however, carry a correct high watermark and seeks into the
middle of a batch work. So:

- `end_offsets` fetches at (ListOffsets answer - 1), which always lies inside the last batch,
  and reads the high watermark of that Fetch response. On a correct broker the answer is the
  same as ListOffsets, at the cost of one fetch per partition.
- `offset_for_time` binary-searches offsets by reading the records' own timestamps.

Both borrow the consumer: they assign the partitions they probe and afterwards restore the
previous manual assignment and positions. The consumer must therefore not be subscribed to
topics through a group (`subscribe()`); aiokafka raises IllegalStateError if it is.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

DEFAULT_TIMEOUT_S = 30.0


@contextlib.asynccontextmanager
async def _borrowed(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> AsyncIterator[None]:
    previous = consumer.assignment()
    positions = {tp: await consumer.position(tp) for tp in previous}
    consumer.assign(sorted(set(partitions)))
    try:
        yield
    finally:
        if previous:
            consumer.assign(sorted(previous))
            for tp, offset in positions.items():
                consumer.seek(tp, offset)
        else:
            consumer.unsubscribe()


async def end_offsets(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition],
                      timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[TopicPartition, int]:
    """The true log end offset (offset of the next record) of each partition.

    Raises TimeoutError if a partition's Fetch response does not arrive within `timeout_s`.
    """
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    listed = await consumer.end_offsets(wanted)
    starts = await consumer.beginning_offsets(wanted)
    # A partition whose listed end is its start is empty on both kinds of broker: on Tansu the
    # listed end of a non-empty partition is at least its last batch's base + 1 > start.
    result = {tp: listed[tp] for tp in wanted if listed[tp] <= starts[tp]}
    probe = [tp for tp in wanted if tp not in result]
    if not probe:
        return result
    async with _borrowed(consumer, probe):
        for tp in probe:
            consumer.seek(tp, listed[tp] - 1)
        deadline = time.monotonic() + timeout_s
        pending = set(probe)
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Fetch response for {sorted(pending)} within {timeout_s}s")
            # The records are irrelevant; the Fetch response sets each partition's high watermark.
            await consumer.getmany(*pending, timeout_ms=200)
            for tp in list(pending):
                highwater = consumer.highwater(tp)
                if highwater is not None:
                    result[tp] = highwater
                    pending.discard(tp)
    return {tp: result[tp] for tp in wanted}


def unread(consumer: AIOKafkaConsumer, tp: TopicPartition, next_offset: int) -> int | None:
    """Offsets of an assigned partition from ``next_offset`` (the next one its owner will
    process) to its end, as of the last Fetch; None before a Fetch answered. The end is the last
    stable offset under ``read_committed`` (records past it wait for their transaction to end),
    else the high watermark. Records fetched but not yet processed (a sink's staged rows) count."""
    state = _partition_state(consumer, tp)
    if state is None or state.highwater is None:  # not assigned (any more), or no Fetch answered yet
        return None
    end = state.lso if state.lso is not None and state.lso >= 0 else state.highwater
    return max(0, end - next_offset)


def unread_after_fed(consumer: AIOKafkaConsumer, tp: TopicPartition, fed: int) -> int | None:
    """:func:`unread` for an owner that processes every record ``getmany`` returns before it
    asks again (a stage runner): from ``fed`` or the consumer's position, whichever is further.

    Between the last record fed and the end may lie offsets no record will ever be returned for:
    a transaction's commit or abort marker, an aborted transaction's records (skipped under
    ``read_committed``). The consumer's position moves past those as it reads them, so a partition
    whose last write was a marker counts as read to its end: ``fed`` alone would leave it one short
    for ever (never idle, a lag of 1). (aiokafka's ``position()`` is a coroutine that waits for a
    reset; the state it reads is read here directly.)
    """
    position = position_now(consumer, tp)
    return unread(consumer, tp, fed if position is None else max(fed, position))


def position_now(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """The consumer's position in an assigned partition (the next offset it reads; past the
    transaction markers and aborted batches it skipped), None while unknown; without waiting."""
    state = _partition_state(consumer, tp)
    return None if state is None else state._position


def _partition_state(consumer: AIOKafkaConsumer, tp: TopicPartition) -> Any:
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    return assignment.state_value(tp) if assignment is not None else None


async def offset_for_time(consumer: AIOKafkaConsumer, tp: TopicPartition, timestamp_ms: int, end: int,
                          timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """The first offset in [log start, end) whose record timestamp is >= `timestamp_ms`, else `end`.

    Assumes record timestamps are non-decreasing along the partition (true for broker append
    time and for producers that stamp records with a clock). If they are not, the answer is
    still an offset where the timestamps cross `timestamp_ms`, just not necessarily the first.
    `end` should come from `end_offsets`. Costs O(log n) single-position fetches; every record
    a fetch returns narrows the search, so usually far fewer.
    """
    lo = (await consumer.beginning_offsets([tp]))[tp]
    hi = end  # invariant: the answer lies in [lo, hi]
    if lo >= hi:
        return hi
    async with _borrowed(consumer, [tp]):
        while lo < hi:
            mid = (lo + hi) // 2
            consumer.seek(tp, mid)
            # Records at or past hi (e.g. produced after `end` was taken) cannot be the answer.
            records = [r for r in await _fetch_from(consumer, tp, mid, timeout_s) if r.offset < hi]
            if not records:  # no record in [mid, hi), e.g. compacted away
                hi = mid
                continue
            crossing = next((r for r in records if r.timestamp >= timestamp_ms), None)
            if crossing is records[0]:
                hi = mid  # records in [mid, first offset) do not exist
            elif crossing is not None:
                return int(crossing.offset)
            else:
                lo = int(records[-1].offset) + 1
    return lo


async def _fetch_from(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int,
                      timeout_s: float) -> list[ConsumerRecord[Any, Any]]:
    """Records the next Fetch at `offset` returns; [] once the broker says there are none."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = (await consumer.getmany(tp, timeout_ms=200)).get(tp, [])
        if batch:
            return list(batch)
        highwater = consumer.highwater(tp)
        if highwater is not None and highwater <= offset:
            return []
    raise TimeoutError(f"no records from {tp} at offset {offset} within {timeout_s}s")
