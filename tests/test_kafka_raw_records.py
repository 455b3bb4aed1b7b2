"""A consumer made with ``raw_records=True`` gets RawRecords out of ``getmany``, field for field what
``to_raw`` makes of aiokafka's own ConsumerRecords, and every other consumer still gets those.

Unit tests build record batches with aiokafka's builder (keys and values of every shape, headers,
several batches, a fetch offset inside a batch) and read them with aiokafka's record loop and with
the C pass over the fetched bytes (``_records.parse``), which must give the same records or give the
fetch back (None) wherever it is not a plain v2 fetch it reads exactly as aiokafka does: random
byte changes with the CRC made to match again find where the two would part. The integration test
reads the same produced records through the embedded broker with each kind of consumer.
"""

from __future__ import annotations

import asyncio
import random
import struct
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer import fetcher
from aiokafka.errors import KafkaError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.legacy_records import LegacyRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c
from aiokafka.structs import ConsumerRecord
from kafka.admin import NewTopic

from driftline.config import Settings
from driftline.kafka import records as raw_records
from driftline.kafka.admin import admin_client
from driftline.kafka.clients import aiokafka_consumer, aiokafka_producer
from driftline.operators.validate import RawRecord

TP = TopicPartition("predictions", 3)
NATIVE = raw_records._records
needs_native = pytest.mark.skipif(NATIVE is None, reason="driftline.kafka._records not built (no C compiler)")


@pytest.fixture(params=["native", "aiokafka"])
def fetch_path(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each marked-consumer test once with the C pass over fetches and once with aiokafka's loop."""
    if request.param == "native" and NATIVE is None:
        pytest.skip("driftline.kafka._records not built (no C compiler)")
    before = raw_records.NATIVE
    raw_records.use_native_fetch(request.param == "native")
    try:
        yield request.param
    finally:
        raw_records.NATIVE = before


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
    # as aiokafka's fetcher makes it: its MemoryRecords name is the bytes-keeping reader now
    return list(fetcher.PartitionRecords(TP, fetcher.MemoryRecords(data), [], fetch_offset, None, marker,
                                         True, 0))


def _aiokafka_reads(data: bytes, fetch_offset: int, check_crcs: bool = True) -> list[RawRecord] | None:
    """aiokafka's own reading of a fetch (stock consumer), or None where it raises."""
    try:
        return [raw_records.to_raw(r) for r in fetcher.PartitionRecords(  # type: ignore[arg-type]
            TP, MemoryRecords(data), [], fetch_offset, None, None, check_crcs, 0)]
    except (KafkaError, ValueError, IndexError, UnicodeDecodeError, AssertionError, OSError, EOFError,
            zlib.error):
        return None


def _native_parse(data: bytes, fetch_offset: int, check_crcs: bool = True) -> tuple[list[Any], int] | None:
    assert NATIVE is not None
    return NATIVE.parse(data, fetch_offset, TP.topic, TP.partition, RawRecord, check_crcs)


def _based(batch: bytearray, base_offset: int) -> bytearray:
    batch[0:8] = struct.pack(">q", base_offset)  # outside the CRC
    return batch


def _native_parse_decompressing(data: bytes, fetch_offset: int) -> tuple[list[Any], int] | None:
    assert NATIVE is not None
    return NATIVE.parse(data, fetch_offset, TP.topic, TP.partition, RawRecord, True,
                        raw_records._decompressed)


def _with_crc(batch: bytearray) -> bytearray:
    """A v2 batch's CRC made to match its bytes again (after a test changed them)."""
    batch[17:21] = struct.pack(">I", calc_crc32c(bytes(batch[21:])))
    return batch


def test_the_fetch_path_is_patched_on_the_pinned_aiokafka() -> None:
    assert raw_records.RAW_RECORDS_INSTALLED and raw_records.install()  # idempotent
    assert getattr(fetcher.PartitionRecords, "driftline_raw_records", False)


# a fetch returns the batches from the one holding the fetch offset: that offset falls in the first
@pytest.mark.parametrize("fetch_offset", [0, 1, 77, 149])
def test_raw_records_equal_what_to_raw_makes_of_aiokafkas_records(fetch_offset: int, fetch_path: str) -> None:
    data, expected = _record_batches(3, 150)
    stock = _partition_records(data, fetch_offset, None)
    raw = _partition_records(data, fetch_offset, raw_records.RAW_RECORDS)
    assert all(type(r) is ConsumerRecord for r in stock)
    assert all(type(r) is RawRecord for r in raw)
    assert raw == [raw_records.to_raw(r) for r in stock]  # type: ignore[arg-type]
    assert [r.offset for r in raw] == list(range(fetch_offset, len(expected)))
    assert [(r.key, r.value, r.timestamp_ms) for r in raw] == expected[fetch_offset:]
    assert {(r.topic, r.partition) for r in raw} == {(TP.topic, TP.partition)}


def test_as_raw_passes_raw_records_through_and_converts_consumer_records(fetch_path: str) -> None:
    data, _ = _record_batches(1, 20)
    raw = _partition_records(data, 0, raw_records.RAW_RECORDS)
    assert raw_records.as_raw(raw) is raw
    assert raw_records.as_raw(_partition_records(data, 0, None)) == raw
    assert raw_records.as_raw([]) == []


def test_the_marker_is_an_identity_deserializer() -> None:
    # what aiokafka calls where its fetch path could not be patched: the values stay bytes
    assert raw_records.RAW_RECORDS(b"v") == b"v" and raw_records.RAW_RECORDS(None) is None


@needs_native
@pytest.mark.parametrize("fetch_offset", [0, 1, 77, 149])
def test_the_c_pass_reads_a_plain_fetch_as_aiokafka_does(fetch_offset: int) -> None:
    data, _ = _record_batches(3, 150)
    parsed = _native_parse(data, fetch_offset)
    assert parsed is not None
    assert parsed[0] == _aiokafka_reads(data, fetch_offset)
    assert parsed[1] == 450  # the offset after the last batch, as aiokafka's loop leaves it
    read = fetcher.PartitionRecords(TP, fetcher.MemoryRecords(data), [], fetch_offset, None,
                                    raw_records.RAW_RECORDS, True, 0)
    assert type(read) is raw_records._ParsedRecords  # aiokafka's record loop never ran


@needs_native
def test_the_next_fetch_offset_follows_the_records_handed_out_as_aiokafkas_loop_sets_it() -> None:
    data, _ = _record_batches(2, 50)
    for fetch_offset in (0, 30):
        stock = fetcher.PartitionRecords(TP, MemoryRecords(data), [], fetch_offset, None, None, True, 0)
        parsed = raw_records._parsed((TP, fetcher.MemoryRecords(data), [], fetch_offset, None,
                                      raw_records.RAW_RECORDS, True, 0))
        assert parsed is not None
        assert parsed.next_fetch_offset == stock.next_fetch_offset == fetch_offset
        for step in (1, 7, 12, 30, 100):  # getall(max_records): the loop stops after `step` records
            taken = [r for _, r in zip(range(step), parsed, strict=False)]
            expected = [r for _, r in zip(range(step), stock, strict=False)]
            assert [r.offset for r in taken] == [r.offset for r in expected]
            assert parsed.next_fetch_offset == stock.next_fetch_offset
        assert parsed.next_fetch_offset == stock.next_fetch_offset == 100
        assert next(parsed, None) is None and parsed.next_fetch_offset == 100  # getone at the end


def _single_batch(compression: int = 0, transactional: int = 0, n: int = 5) -> bytearray:
    producer = (7, 0, 0) if transactional else (-1, -1, -1)  # id, epoch, base sequence
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=compression, is_transactional=transactional,
                                        producer_id=producer[0], producer_epoch=producer[1],
                                        base_sequence=producer[2], batch_size=1 << 20)
    for i in range(n):
        builder.append(i, timestamp=1_000 + i, key=b"k%d" % i, value=b"v" * i, headers=[])
    return builder.build()


@needs_native
def test_a_compressed_batch_is_read_through_aiokafkas_codec() -> None:
    gzipped = bytes(_single_batch(compression=1, n=40))
    assert raw_records._decompressed(1, gzipped[61:]) is not None
    parsed = _native_parse_decompressing(gzipped + bytes(_based(_single_batch(n=3), 40)), 0)
    assert parsed is not None and parsed[1] == 43
    assert parsed[0] == _aiokafka_reads(gzipped + bytes(_based(_single_batch(n=3), 40)), 0)
    read = fetcher.PartitionRecords(TP, fetcher.MemoryRecords(gzipped), [], 0, None, raw_records.RAW_RECORDS,
                                    True, 0)
    assert type(read) is raw_records._ParsedRecords
    assert _native_parse(gzipped, 0) is None  # no decompressing function given: aiokafka's way
    # a codec aiokafka has no library for here (lz4 without cramjam), an unknown one, a payload that
    # does not decompress: given back, and aiokafka raises its own error for each
    for codec_bits in (3, 7):
        other = _single_batch(compression=1, n=40)
        other[22] = (other[22] & ~0x07) | codec_bits
        data = bytes(_with_crc(other))
        if codec_bits == 7 or not raw_records._CODECS[3][0]():
            assert _native_parse_decompressing(data, 0) is None and _aiokafka_reads(data, 0) is None
    broken = _single_batch(compression=1, n=40)
    broken[70:80] = bytes(10)
    data = bytes(_with_crc(broken))
    assert _native_parse_decompressing(data, 0) is None and _aiokafka_reads(data, 0) is None


def _control_batch(base_offset: int, marker_type: int) -> bytearray:
    """A transaction's marker (producer 7): 0 abort, 1 commit."""
    marker = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=1, producer_id=7,
                                       producer_epoch=0, base_sequence=-1, batch_size=1 << 20)
    marker.append(0, timestamp=2_000, key=struct.pack(">HH", 0, marker_type), value=b"", headers=[])
    control = _based(marker.build(), base_offset)
    control[22] |= 0x20
    return _with_crc(control)


@needs_native
def test_a_committed_transaction_reads_in_c_and_its_marker_is_skipped() -> None:
    """No aborted transaction in the fetch: its transactional batches are read as any other (what
    aiokafka hands out under read_committed), the commit marker skipped, the offset after it next."""
    data = bytes(_based(_single_batch(transactional=1, n=5), 0) + _control_batch(5, 1)
                 + _based(_single_batch(n=3), 6) + _control_batch(9, 1))
    parsed = NATIVE.parse(data, 0, TP.topic, TP.partition, RawRecord, True, None, True)  # type: ignore[union-attr]
    committed = list(fetcher.PartitionRecords(TP, MemoryRecords(data), [], 0, None, None, True, 1))
    assert parsed is not None and parsed[0] == [raw_records.to_raw(r) for r in committed]  # type: ignore[arg-type]
    assert [r.offset for r in parsed[0]] == [0, 1, 2, 3, 4, 6, 7, 8] and parsed[1] == 10
    read = fetcher.PartitionRecords(TP, fetcher.MemoryRecords(data), [], 0, None, raw_records.RAW_RECORDS,
                                    True, 1)
    assert type(read) is raw_records._ParsedRecords and read.next_fetch_offset == 0
    assert [r.offset for r in read] == [0, 1, 2, 3, 4, 6, 7, 8] and read.next_fetch_offset == 10
    # with an aborted transaction in the fetch it is aiokafka's (which skips that producer's batch)
    assert NATIVE.parse(data, 0, TP.topic, TP.partition, RawRecord, True, None, False) is None  # type: ignore[union-attr]
    aborted = fetcher.PartitionRecords(TP, fetcher.MemoryRecords(data), [(7, 0)], 0, None,
                                       raw_records.RAW_RECORDS, True, 1)
    assert type(aborted) is not raw_records._ParsedRecords


@needs_native
def test_the_c_pass_gives_back_every_fetch_that_is_not_plain_v2() -> None:
    plain = bytes(_single_batch())
    assert _native_parse(plain, 0) is not None
    # transactions' batches unless the caller says no aborted one is in the fetch
    assert _native_parse(bytes(_single_batch(transactional=1)), 0) is None
    assert _native_parse(bytes(_control_batch(0, 1)), 0) is None
    legacy = LegacyRecordBatchBuilder(magic=1, compression_type=0, batch_size=1 << 20)
    legacy.append(0, timestamp=5, key=b"k", value=b"v")
    assert _native_parse(bytes(legacy.build()), 0) is None
    # a plain batch behind one it gives back: the whole fetch goes aiokafka's way
    assert _native_parse(plain + bytes(_single_batch(transactional=1)), 0) is None


def test_an_aborted_transaction_is_skipped_on_the_marked_consumers_path(fetch_path: str) -> None:
    """read_committed: a fetch holding an aborted transaction's batch, its abort marker and a plain
    batch after them gives the marked consumer the plain batch's records only, as RawRecords (the
    C pass gives such a fetch back; aiokafka's loop skips the aborted batch with the builder on)."""
    aborted = _based(_single_batch(transactional=1, n=5), 0)
    plain = _based(_single_batch(n=3), 6)
    data = bytes(aborted + _control_batch(5, 0) + plain)
    read = list(fetcher.PartitionRecords(TP, fetcher.MemoryRecords(data), [(7, 0)], 0, None,
                                         raw_records.RAW_RECORDS, True, 1))  # 1: READ_COMMITTED
    assert all(type(r) is RawRecord for r in read)
    assert [(r.offset, r.key) for r in read] == [(6, b"k0"), (7, b"k1"), (8, b"k2")]  # type: ignore[attr-defined]


@needs_native
def test_a_bad_crc_is_given_back_for_aiokafka_to_raise_and_read_when_crcs_are_not_checked() -> None:
    bad = _single_batch()
    bad[-2] ^= 0x01  # the last value byte (the last is its header count): the records still read
    assert _native_parse(bytes(bad), 0) is None
    assert _aiokafka_reads(bytes(bad), 0) is None  # CorruptRecordException: Invalid CRC
    unchecked = _native_parse(bytes(bad), 0, check_crcs=False)
    assert unchecked is not None and unchecked[0] == _aiokafka_reads(bytes(bad), 0, check_crcs=False)


@needs_native
def test_log_append_time_gives_every_record_the_batchs_max_timestamp() -> None:
    batch = _single_batch()
    batch[22] |= 0x08  # timestamp type: LogAppendTime (the broker's clock)
    batch[35:43] = struct.pack(">q", 1_767_225_600_123)
    data = bytes(_with_crc(batch))
    parsed = _native_parse(data, 0)
    assert parsed is not None and parsed[0] == _aiokafka_reads(data, 0)
    assert {r.timestamp_ms for r in parsed[0]} == {1_767_225_600_123}


@needs_native
def test_a_partial_batch_at_the_end_of_a_fetch_is_left_unread_as_aiokafka_leaves_it() -> None:
    data, _ = _record_batches(3, 150)
    for cut in (1, 11, 12, 60, 61, 500):
        parsed = _native_parse(data[:-cut], 0)
        assert parsed is not None
        assert parsed[0] == _aiokafka_reads(data[:-cut], 0) and parsed[1] == 300


@needs_native
def test_changed_bytes_with_a_matching_crc_read_as_aiokafka_reads_them_or_go_its_way() -> None:
    """Random byte changes in a batch's records (the CRC made to match, so only the parsing can
    tell): wherever the C pass returns records they are aiokafka's; where aiokafka raises, it gives
    the fetch back. Seeded: a failure names its case."""
    rng = random.Random(49)
    base = bytearray(_record_batches(1, 12)[0])
    taken = 0
    for case in range(3_000):
        batch = bytearray(base)
        for _ in range(rng.choice((1, 1, 2, 3))):
            at = rng.randrange(57, len(batch))  # the record count and the records
            batch[at] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        data = bytes(_with_crc(batch))
        parsed, expected = _native_parse(data, 0), _aiokafka_reads(data, 0)
        if parsed is not None:
            taken += 1
            assert parsed[0] == expected, case
    assert taken > 100  # changes inside keys and values read as records: the comparison ran


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


async def _produce_and_read(settings: Settings, topic: str, n: int,
                            compression: str | None) -> tuple[list[object], list[object]]:
    producer = aiokafka_producer(settings, compression_type=compression)
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


class _Spied:
    """The C extension, its ``parse`` noting whether each fetch was read there (not given back)."""

    def __init__(self, native: Any, read: list[bool]) -> None:
        self.native, self.read = native, read

    def parse(self, *args: Any) -> Any:
        parsed = self.native.parse(*args)
        self.read.append(parsed is not None)
        return parsed


@pytest.mark.integration
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_a_raw_records_consumer_reads_what_a_stock_one_reads(kafka_bootstrap: str, fetch_path: str,
                                                             compression: str | None) -> None:
    settings = Settings(kafka={"bootstrap_servers": kafka_bootstrap})
    topic = f"raw-records-{uuid.uuid4().hex[:8]}"
    with admin_client(settings) as admin:
        admin.create_topics([NewTopic(topic, 1, 1)])
    read_in_c: list[bool] = []  # each fetched partition the C pass was asked for: read there?
    if fetch_path == "native":
        raw_records.NATIVE = _Spied(raw_records.NATIVE, read_in_c)
    stock, raw = asyncio.run(_produce_and_read(settings, topic, 300, compression))
    assert (read_in_c and all(read_in_c)) if fetch_path == "native" else not read_in_c
    assert len(stock) == len(raw) == 300
    assert all(type(r) is ConsumerRecord for r in stock) and all(type(r) is RawRecord for r in raw)
    assert raw == [raw_records.to_raw(r) for r in stock]  # type: ignore[arg-type]
    assert [r.offset for r in raw] == list(range(300))  # type: ignore[attr-defined]
