"""Checkpoint chunking, assembly and tolerance of partial checkpoints (unit + embedded broker)."""

from __future__ import annotations

import asyncio
import os
import zlib

import pytest
from aiokafka import AIOKafkaProducer

from driftline.config import Settings
from driftline.kafka.admin import admin_client, ensure_topics
from driftline.kafka.clients import aiokafka_producer_kwargs
from driftline.streams.checkpoint import (
    DELTA,
    FULL,
    MAX_CHUNK_BYTES,
    CheckpointAssembler,
    CheckpointStore,
    chain_generations,
    chain_topic,
    chunk_groups,
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


def test_chunk_groups_cut_the_same_messages_a_group_at_a_time() -> None:
    blob = os.urandom(1_300_000)
    for kind, parent in ((FULL, None), (DELTA, "b1")):
        groups = list(chunk_groups("c1", blob, OFFSETS, 64 * 1024, kind, parent, group_bytes=200 * 1024))
        assert [len(group) for group in groups] == [3] * 7 + [2]  # 23 chunks of 56 KiB
        assert [value for group in groups for value in group] == encode_chunks("c1", blob, OFFSETS, 64 * 1024,
                                                                               kind, parent)
    assert list(chunk_groups("e", b"", {})) == [encode_chunks("e", b"", {})]


def test_empty_blob_round_trips() -> None:
    asm = CheckpointAssembler()
    for c in encode_chunks("e", b"", {}):
        asm.apply("s:1", c)
    assert asm.latest["s:1"].blob == b"" and asm.latest["s:1"].offsets == {}


async def _write_full(producer: AIOKafkaProducer, settings: Settings, stage: str, shard: int, ckpt_id: str,
                      blob: bytes, offsets: dict[tuple[str, int], int]) -> str:
    """A full snapshot on the state topic, as driftline wrote checkpoints before chains."""
    for value in encode_chunks(ckpt_id, blob, offsets):
        key = f"{stage}:{shard}".encode()
        await producer.send_and_wait(settings.topics.state, value, key=key, partition=0)
    return ckpt_id


@pytest.mark.integration
def test_full_snapshots_from_before_chains_load_ignoring_a_torn_save(settings: Settings) -> None:
    ensure_topics(settings)
    asyncio.run(_store_round_trip(settings))


async def _store_round_trip(settings: Settings) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        big = os.urandom(1_200_000)
        first = await _write_full(producer, settings, "st", 0, "first", big, OFFSETS)
        await _write_full(producer, settings, "st", 1, "one", b"one", {("preds", 1): 1})
        await _write_full(producer, settings, "other", 0, "x", b"x", {})
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
            await _write_full(producer, settings, "st", 1, "two", b"two", {("preds", 1): 2})
            again = await reader.load_all("st")
            assert again[1].blob == b"two" and reader.messages_read == read_before + 1
        finally:
            await reader.stop()
    finally:
        await producer.stop()


@pytest.mark.integration
def test_chains_rotate_generations_and_restore_base_plus_deltas(settings: Settings) -> None:
    ensure_topics(settings)
    asyncio.run(_chain_round_trip(settings))


def _chain_topics(settings: Settings, stage: str) -> dict[int, list[int]]:
    with admin_client(settings) as admin:
        return chain_generations(settings.topics.state, stage, admin.list_topics())


async def _chain_round_trip(settings: Settings) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        writer = CheckpointStore(settings, producer, max_chunk_bytes=64 * 1024, rotate_min_bytes=0,
                                 deliver_group_bytes=128 * 1024)
        await writer.start()
        base = os.urandom(200_000)  # several chunks, delivered two at a time
        first = await writer.save_link("st", 2, base, {("preds", 2): 10}, base=True, parent=None)
        d1 = await writer.save_link("st", 2, b"d1", {("preds", 2): 11}, base=False, parent=first)
        # A torn delta (a crash mid-save), then the restarted owner's delta on the last complete link.
        torn = encode_chunks("torn", os.urandom(150_000), {("preds", 2): 99}, 64 * 1024, DELTA, d1)
        topic = chain_topic(settings.topics.state, "st", 2, 0)
        await producer.send_and_wait(topic, torn[0], key=b"st:2", partition=0)
        d2 = await writer.save_link("st", 2, b"d2", {("preds", 2): 12}, base=False, parent=d1)
        await _write_full(producer, settings, "st", 5, "full", b"full", {("preds", 5): 1})  # pre-chain
        assert _chain_topics(settings, "st") == {2: [0]}

        reader = CheckpointStore(settings, producer, rotate_min_bytes=0)
        await reader.start()
        try:
            loaded = await reader.load_all("st")
            assert sorted(loaded) == [2, 5] and loaded[5].kind == FULL and loaded[5].blob == b"full"
            chain = loaded[2]
            assert (chain.checkpoint_id, chain.blob, chain.deltas) == (d2, base, (b"d1", b"d2"))
            assert chain.offsets == {("preds", 2): 12} and chain.generation == 0
            assert sorted(await reader.load_all("st", [5])) == [5]

            # The reader (now the owner) writes on: a new base starts generation 1 and deletes 0.
            d3 = await reader.save_link("st", 2, b"d3", {("preds", 2): 13}, base=False, parent=d2)
            assert (await reader.load_all("st", [2]))[2].deltas == (b"d1", b"d2", b"d3")
            second = await reader.save_link("st", 2, b"B2", {("preds", 2): 14}, base=True, parent=d3)
            assert _chain_topics(settings, "st") == {2: [1]}
            again = (await writer.load_all("st"))[2]
            assert (again.checkpoint_id, again.blob, again.deltas, again.generation) == (second, b"B2", (), 1)
            # Small bases (a processor that only writes bases) share a generation until it holds
            # rotate_min_bytes: the reader takes the last base.
            small = CheckpointStore(settings, producer)
            await small.start()
            try:
                ids = [await small.save_link("st", 7, f"b{i}".encode(), {("preds", 7): i}, base=True,
                                             parent=None) for i in range(3)]
                last = (await small.load_all("st", [7]))[7]
                assert (last.checkpoint_id, last.blob, last.generation) == (ids[-1], b"b2", 0)
                assert _chain_topics(settings, "st")[7] == [0]
            finally:
                await small.stop()
        finally:
            await reader.stop()
            await writer.stop()
    finally:
        await producer.stop()
