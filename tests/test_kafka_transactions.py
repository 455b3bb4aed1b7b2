"""Input topics written in transactions (a user's exactly-once producers).

driftline's consumers read ``read_committed`` by default: an aborted transaction's records are
never processed, and a partition whose last write is a transaction's marker counts as read to its
end (its lag 0, idle once quiet; a replay finishes it) although the marker holds an offset no
record is returned for.

The transactional cases need a broker that supports transactions (Apache Kafka: the
testcontainers and external backends). The embedded Tansu answers InitProducerId with
UnknownError, so they skip there, saying so; the rest runs everywhere.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from driftline.config import Settings
from driftline.kafka.admin import admin_client
from driftline.kafka.clients import aiokafka_consumer, aiokafka_consumer_kwargs, aiokafka_producer
from driftline.kafka.offsets import position_now, unread, unread_after_fed
from driftline.replay.kafka_source import read_all_values

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kafka_settings(kafka_bootstrap: str) -> Settings:
    return Settings(kafka={"bootstrap_servers": kafka_bootstrap})


def _topic(settings: Settings) -> str:
    name = f"tx-{uuid.uuid4().hex[:10]}"
    with admin_client(settings) as admin:
        admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
    return name


async def _supports_transactions(settings: Settings) -> bool:
    producer = aiokafka_producer(settings, transactional_id=f"probe-{uuid.uuid4().hex[:8]}")
    try:
        await asyncio.wait_for(producer.start(), 30)
    except Exception:
        return False
    finally:
        await producer.stop()
    return True


@pytest.fixture(scope="module")
def transactional(kafka_settings: Settings) -> Iterator[Settings]:
    if not asyncio.run(_supports_transactions(kafka_settings)):
        pytest.skip("the broker does not support transactions (the embedded Tansu answers "
                    "InitProducerId with UnknownError); run on the testcontainers or external backend")
    yield kafka_settings


async def _write(settings: Settings, topic: str, batches: list[tuple[list[bytes], bool]]) -> None:
    """Each (values, commit) as one transaction, committed or aborted, in order."""
    producer = aiokafka_producer(settings, transactional_id=f"tx-{uuid.uuid4().hex[:8]}")
    await producer.start()
    try:
        for values, commit in batches:
            await producer.begin_transaction()
            for value in values:
                await producer.send_and_wait(topic, value, partition=0)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()


async def _read_to_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> tuple[list[bytes], int]:
    """Values read until nothing is left to read (:func:`unread_after_fed` 0), and the next offset
    after the last record returned."""
    values: list[bytes] = []
    fed = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        for record in (await consumer.getmany(tp, timeout_ms=200)).get(tp, []):
            values.append(record.value or b"")
            fed = record.offset + 1
        if unread_after_fed(consumer, tp, fed) == 0:
            return values, fed
        left = unread_after_fed(consumer, tp, fed)
        assert loop.time() < deadline, f"still {left} unread after 60 s at {fed}"


def test_consumers_read_committed_by_default() -> None:
    assert aiokafka_consumer_kwargs(Settings(), "g")["isolation_level"] == "read_committed"
    settings = Settings(kafka={"isolation_level": "read_uncommitted"})
    assert aiokafka_consumer_kwargs(settings, "g")["isolation_level"] == "read_uncommitted"


def test_unread_counts_to_the_end_without_transactions(kafka_settings: Settings) -> None:
    """On any broker: what is left is the end less the next offset to process, 0 once read."""
    topic = _topic(kafka_settings)

    async def main() -> None:
        producer = aiokafka_producer(kafka_settings)
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(topic, b"v%d" % i, partition=0)
        finally:
            await producer.stop()
        consumer = aiokafka_consumer(kafka_settings, None)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            assert unread(consumer, tp, 0) is None  # no Fetch answered yet
            values, fed = await _read_to_end(consumer, tp)
            assert values == [b"v%d" % i for i in range(5)] and fed == 5
            assert unread(consumer, tp, 2) == 3  # fetched, not processed: still to do (a sink's staged rows)
            assert unread_after_fed(consumer, tp, 2) == 0  # a runner fed all it fetched: the position
            assert position_now(consumer, tp) == 5
        finally:
            await consumer.stop()

    asyncio.run(main())


def test_aborted_records_are_skipped_and_markers_read_past(transactional: Settings) -> None:
    topic = _topic(transactional)
    committed = [b"a0", b"a1", b"a2", b"c0", b"c1"]

    async def main() -> None:
        await _write(transactional, topic, [(committed[:3], True), ([b"x0", b"x1"], False),
                                            (committed[3:], True)])
        consumer = aiokafka_consumer(transactional, None)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            values, fed = await _read_to_end(consumer, tp)
            assert values == committed
            # the commit marker after the last record: the high watermark is past what was fed,
            # yet nothing is left to read (lag 0, and the partition can be declared idle)
            assert consumer.highwater(tp) is not None and consumer.highwater(tp) > fed
            assert unread(consumer, tp, fed) == 1 and unread_after_fed(consumer, tp, fed) == 0
        finally:
            await consumer.stop()
        # a replay of the whole topic reads the committed records and finishes the partition (it
        # waited for a record at the marker's offset until its idle timeout before)
        replaying = aiokafka_consumer(transactional, None)
        await replaying.start()
        try:
            assert await asyncio.wait_for(read_all_values(replaying, topic), 20) == committed
        finally:
            await replaying.stop()

    asyncio.run(main())
