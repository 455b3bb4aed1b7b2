"""Checkpoint chunking, assembly and tolerance of partial checkpoints (unit + embedded broker)."""

from __future__ import annotations

import asyncio
import os
import zlib

import pytest
from aiokafka import AIOKafkaProducer

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer_kwargs
from driftline.streams.checkpoint import (
    MAX_CHUNK_BYTES,
    CheckpointAssembler,
    CheckpointStore,
    decode_chunk,
    encode_chunks,
)

OFFSETS = {("preds", 3): 120, ("labels", 3): 7}


def test_large_blob_is_chunked_within_the_limit_and_reassembled() -> None:
    blob = os.urandom(1_300_000)
    chunks = encode_chunks("c1", blob, OFFSETS)
    assert len(chunks) == 3 and all(len(c) <= MAX_CHUNK_BYTES for c in chunks)
    header, _ = decode_chunk(chunks[0])
    assert header["n"] == 3 and header["crc"] == zlib.crc32(blob)
    asm = CheckpointAssembler()
    for c in chunks:
        asm.apply("s:3", c)
    assert asm.latest["s:3"].blob == blob and asm.latest["s:3"].offsets == OFFSETS


def test_incomplete_or_corrupt_checkpoints_keep_the_last_complete_one() -> None:
    asm = CheckpointAssembler()
    good = os.urandom(1_100_000)
    for c in encode_chunks("good", good, OFFSETS):
        asm.apply("s:0", c)
    crashed = encode_chunks("crashed", os.urandom(1_100_000), {("preds", 0): 999})
    for c in crashed[:2]:  # the process died before the last chunk
        asm.apply("s:0", c)
    assert asm.latest["s:0"].checkpoint_id == "good"
    corrupt = encode_chunks("corrupt", b"abc", OFFSETS)[0]
    asm.apply("s:0", corrupt[:-1] + b"X")  # CRC mismatch
    asm.apply("s:0", b"garbage")
    assert asm.latest["s:0"].blob == good
    # A later complete save (after the crashed one) wins.
    for c in encode_chunks("next", b"next", {("preds", 0): 5}):
        asm.apply("s:0", c)
    assert asm.latest["s:0"].blob == b"next" and asm.discarded_chunks >= 4


def test_empty_blob_round_trips() -> None:
    asm = CheckpointAssembler()
    for c in encode_chunks("e", b"", {}):
        asm.apply("s:1", c)
    assert asm.latest["s:1"].blob == b"" and asm.latest["s:1"].offsets == {}


@pytest.mark.integration
def test_store_saves_and_loads_through_the_broker_ignoring_a_torn_save(settings: Settings) -> None:
    ensure_topics(settings)
    asyncio.run(_store_round_trip(settings))


async def _store_round_trip(settings: Settings) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        writer = CheckpointStore(settings, producer)
        big = os.urandom(1_200_000)
        first = await writer.save("st", 0, big, OFFSETS)
        await writer.save("st", 1, b"one", {("preds", 1): 1})
        await writer.save("other", 0, b"x", {})
        # A torn save of shard 0: only its first chunk reached the topic.
        torn = encode_chunks("torn", os.urandom(1_200_000), {("preds", 0): 1})
        await producer.send_and_wait(settings.topics.state, torn[0], key=b"st:0", partition=0)

        reader = CheckpointStore(settings, producer)
        await reader.start()
        try:
            loaded = await reader.load_all("st")
            assert sorted(loaded) == [0, 1]
            assert loaded[0].checkpoint_id == first and loaded[0].blob == big and loaded[0].offsets == OFFSETS
            assert loaded[1].blob == b"one"
            # Incremental: a later save is seen without re-reading the history.
            read_before = reader.messages_read
            await writer.save("st", 1, b"two", {("preds", 1): 2})
            again = await reader.load_all("st")
            assert again[1].blob == b"two" and reader.messages_read == read_before + 1
        finally:
            await reader.stop()
    finally:
        await producer.stop()
