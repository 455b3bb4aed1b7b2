"""A consumer made with ``raw_records=True`` gets RawRecords out of ``getmany``, field for field what
``to_raw`` makes of aiokafka's own ConsumerRecords, and every other consumer still gets those.

Unit tests build record batches with aiokafka's builder (keys and values of every shape, headers,
several batches, a fetch offset inside a batch); the integration test reads the same produced
records through the embedded broker with both kinds of consumer.
"""

from __future__ import annotations

import asyncio
import struct
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import ConsumerRecord
from kafka.admin import NewTopic

from driftline.config import Settings
from driftline.kafka import records as raw_records
from driftline.kafka.admin import admin_client
from driftline.kafka.clients import aiokafka_consumer, aiokafka_producer
from driftline.operators.validate import RawRecord

TP = TopicPartition("predictions", 3)


Expected = list[tuple[bytes | None, bytes | None, int]]


def _record_batches(batches: int, per_batch: int) -> tuple[bytes, Expected]:
    """Uncompressed v2 record batches back to back, and each record's (key, value, timestamp)."""
    data = bytearray()
    expected: Expected = []
    for b in range(batches):
        builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=-1,
                                            producer_epoch=-1, base_sequence=-1, batch_size=1 << 24)
        for i in range(per_batch):
            n = b * per_batch + i
            key = None if n % 7 == 0 else f"id-{n}".encode()
            value = None if n % 11 == 0 else b"" if n % 13 == 0 else b'{"n": %d, "text": "\xc3\xa9"}' % n
            timestamp = 1_767_225_600_000 + 37 * n
            headers = [("h", b"x")] if n % 5 == 0 else []
            builder.append(i, timestamp=timestamp, key=key, value=value, headers=headers)
            expected.append((key, value, timestamp))
        batch = builder.build()
        batch[0:8] = struct.pack(">q", b * per_batch)  # base offset: the builder writes 0
        data += batch
    return bytes(data), expected


def _partition_records(data: bytes, fetch_offset: int, marker: object) -> list[object]:
    return list(fetcher.PartitionRecords(TP, MemoryRecords(data), [], fetch_offset, None, marker, False, 0))


def test_the_fetch_path_is_patched_on_the_pinned_aiokafka() -> None:
    assert raw_records.RAW_RECORDS_INSTALLED and raw_records.install()  # idempotent
    assert getattr(fetcher.PartitionRecords, "driftline_raw_records", False)


# a fetch returns the batches from the one holding the fetch offset: that offset falls in the first
@pytest.mark.parametrize("fetch_offset", [0, 1, 77, 149])
def test_raw_records_equal_what_to_raw_makes_of_aiokafkas_records(fetch_offset: int) -> None:
    data, expected = _record_batches(3, 150)
    stock = _partition_records(data, fetch_offset, None)
    raw = _partition_records(data, fetch_offset, raw_records.RAW_RECORDS)
    assert all(type(r) is ConsumerRecord for r in stock)
    assert all(type(r) is RawRecord for r in raw)
    assert raw == [raw_records.to_raw(r) for r in stock]  # type: ignore[arg-type]
    assert [r.offset for r in raw] == list(range(fetch_offset, len(expected)))
    assert [(r.key, r.value, r.timestamp_ms) for r in raw] == expected[fetch_offset:]
    assert {(r.topic, r.partition) for r in raw} == {(TP.topic, TP.partition)}


def test_as_raw_passes_raw_records_through_and_converts_consumer_records() -> None:
    data, _ = _record_batches(1, 20)
    raw = _partition_records(data, 0, raw_records.RAW_RECORDS)
    assert raw_records.as_raw(raw) is raw
    assert raw_records.as_raw(_partition_records(data, 0, None)) == raw
    assert raw_records.as_raw([]) == []


def test_the_marker_is_an_identity_deserializer() -> None:
    # what aiokafka calls where its fetch path could not be patched: the values stay bytes
    assert raw_records.RAW_RECORDS(b"v") == b"v" and raw_records.RAW_RECORDS(None) is None


async def _read_all(settings: Settings, topic: str, n: int, raw: bool) -> list[object]:
    consumer = aiokafka_consumer(settings, None, raw_records=raw)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        out: list[object] = []
        deadline = asyncio.get_running_loop().time() + 60
        while len(out) < n and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=200, max_records=37)
            out += batch.get(tp, [])
        return out
    finally:
        await consumer.stop()


async def _produce_and_read(settings: Settings, topic: str, n: int) -> tuple[list[object], list[object]]:
    producer = aiokafka_producer(settings)
    await producer.start()
    try:
        for i in range(n):
            key = None if i % 9 == 0 else f"k{i}".encode()
            value = None if i % 10 == 3 and key is not None else f"v{i}".encode()  # a tombstone needs a key
            await producer.send(topic, value=value, key=key, headers=[("h", b"1")] if i % 4 == 0 else None)
        await producer.flush()
    finally:
        await producer.stop()
    return await _read_all(settings, topic, n, raw=False), await _read_all(settings, topic, n, raw=True)


@pytest.mark.integration
def test_a_raw_records_consumer_reads_what_a_stock_one_reads(kafka_bootstrap: str) -> None:
    settings = Settings(kafka={"bootstrap_servers": kafka_bootstrap})
    topic = f"raw-records-{uuid.uuid4().hex[:8]}"
    with admin_client(settings) as admin:
        admin.create_topics([NewTopic(topic, 1, 1)])
    stock, raw = asyncio.run(_produce_and_read(settings, topic, 300))
    assert len(stock) == len(raw) == 300
    assert all(type(r) is ConsumerRecord for r in stock) and all(type(r) is RawRecord for r in raw)
    assert raw == [raw_records.to_raw(r) for r in stock]  # type: ignore[arg-type]
    assert [r.offset for r in raw] == list(range(300))  # type: ignore[attr-defined]
