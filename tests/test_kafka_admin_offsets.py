"""Topic creation, co-partitioning check, and offsets that do not trust ListOffsets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from driftline.config import Settings
from driftline.kafka.admin import (
    CopartitioningError,
    admin_client,
    ensure_topics,
    topic_partitions,
    topic_specs,
    verify_copartitioned,
)
from driftline.kafka.clients import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from driftline.kafka.offsets import end_offsets, offset_for_time

EMBEDDED = os.environ.get("DRIFTLINE_TEST_BACKEND", "embedded") == "embedded"
BASE_TS = 1_767_225_600_000  # 2026-01-01, record i is stamped BASE_TS + i seconds


def _with_topics(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(update={"topics": settings.topics.model_copy(update=update)})


def test_topic_specs_partitions_and_compaction() -> None:
    topics = {"partitions": 6, "model_events_partitions": 3, "replication_factor": 2}
    s = Settings.model_validate({"topics": topics})
    specs = {spec.name: spec for spec in topic_specs(s)}
    assert len(specs) == 11
    assert {n: specs[n].partitions for n in (s.topics.predictions, s.topics.labels, s.topics.outcomes)} == {
        s.topics.predictions: 6, s.topics.labels: 6, s.topics.outcomes: 6}
    assert specs[s.topics.repartition].partitions == 6  # re-routed records go to the joining shard
    assert specs[s.topics.model_events].partitions == 3
    assert specs[s.topics.sink].partitions == 1 and specs[s.topics.dead_letters].partitions == 1
    assert all(spec.replication_factor == 2 for spec in specs.values())
    compacted = {n for n, spec in specs.items() if spec.configs.get("cleanup.policy") == "compact"}
    assert compacted == {s.topics.profiles, s.topics.state}


@pytest.mark.integration
def test_ensure_topics_is_idempotent(settings: Settings) -> None:
    created = ensure_topics(settings)
    assert sorted(created) == sorted(spec.name for spec in topic_specs(settings))
    assert ensure_topics(settings) == []
    t = settings.topics
    assert topic_partitions(settings, t.predictions) == t.partitions
    assert topic_partitions(settings, t.labels) == t.partitions
    assert topic_partitions(settings, t.model_events) == t.model_events_partitions
    assert topic_partitions(settings, t.state) == 1
    assert topic_partitions(settings, t.predictions + ".absent") is None
    verify_copartitioned(settings)


@pytest.mark.integration
def test_verify_copartitioned_names_the_mismatch(settings: Settings) -> None:
    with pytest.raises(CopartitioningError, match="do not exist"):
        verify_copartitioned(settings)
    ensure_topics(settings)
    odd = settings.topics.labels + "-odd"
    with admin_client(settings) as admin:
        admin.create_topics({odd: {"num_partitions": settings.topics.partitions + 1,
                                   "replication_factor": 1}})
        admin.wait_for_topics([odd])
    mismatched = _with_topics(settings, labels=odd)
    with pytest.raises(CopartitioningError, match="co-partitioned") as err:
        verify_copartitioned(mismatched)
    assert settings.topics.predictions in str(err.value) and odd in str(err.value)


# -- offsets --------------------------------------------------------------------------------------

# Partition -> sizes of the record batches produced into it. On the embedded broker the naive
# end offset is "base of the last batch + 1": 31 for partition 0, 1 for partition 2.
BATCHES = {0: [10, 10, 10, 5], 1: [], 2: [35]}


def _run(settings: Settings, body: Callable[[AIOKafkaConsumer, str], Awaitable[None]]) -> None:
    async def main() -> None:
        topic = settings.topics.predictions
        ensure_topics(_with_topics(settings, partitions=len(BATCHES)))
        producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
        await producer.start()
        try:
            for partition, sizes in BATCHES.items():
                n = 0
                for size in sizes:
                    batch = producer.create_batch()
                    for _ in range(size):
                        batch.append(key=None, value=b"%d" % n, timestamp=BASE_TS + n * 1000)
                        n += 1
                    await (await producer.send_batch(batch, topic, partition=partition))
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(settings, None))
        await consumer.start()
        try:
            await body(consumer, topic)
        finally:
            await consumer.stop()

    asyncio.run(main())


@pytest.mark.integration
def test_end_offsets_count_every_record(settings: Settings) -> None:
    async def body(consumer: AIOKafkaConsumer, topic: str) -> None:
        tps = [TopicPartition(topic, p) for p in BATCHES]
        naive = await consumer.end_offsets(tps)
        true = await end_offsets(consumer, tps)
        assert true == {tp: sum(BATCHES[tp.partition]) for tp in tps}
        if EMBEDDED:  # the broker quirk this module exists for
            assert naive[tps[0]] == 31 and naive[tps[2]] == 1
        assert await end_offsets(consumer, []) == {}

    _run(settings, body)


@pytest.mark.integration
def test_borrowed_consumer_keeps_its_assignment_and_position(settings: Settings) -> None:
    async def body(consumer: AIOKafkaConsumer, topic: str) -> None:
        own = TopicPartition(topic, 0)
        consumer.assign([own])
        consumer.seek(own, 7)
        await end_offsets(consumer, [TopicPartition(topic, 2)])
        assert await offset_for_time(consumer, own, BASE_TS + 3000, 35) == 3
        assert consumer.assignment() == {own}
        record: Any = await consumer.getone(own)
        assert record.offset == 7

    _run(settings, body)


@pytest.mark.integration
def test_offset_for_time_reads_record_timestamps(settings: Settings) -> None:
    async def body(consumer: AIOKafkaConsumer, topic: str) -> None:
        tp = TopicPartition(topic, 0)
        end = (await end_offsets(consumer, [tp]))[tp]
        cases = {
            BASE_TS - 1: 0,  # before the first record
            BASE_TS: 0,
            BASE_TS + 17_000: 17,  # exact timestamp
            BASE_TS + 17_500: 18,  # between two records
            BASE_TS + 30_000: 30,  # first record of the last (short) batch
            BASE_TS + 34_000: 34,  # last record
            BASE_TS + 34_001: end,  # after the last record
        }
        for ts, expected in cases.items():
            assert await offset_for_time(consumer, tp, ts, end) == expected, ts
        empty = TopicPartition(topic, 1)
        assert await offset_for_time(consumer, empty, BASE_TS, 0) == 0
        if EMBEDDED:  # offsets_for_times answers 0 for a time after the last record
            naive = await consumer.offsets_for_times({tp: BASE_TS + 34_001})
            assert naive[tp] is not None and naive[tp].offset == 0

    _run(settings, body)
