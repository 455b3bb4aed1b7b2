"""Where a restore starts reading a chain topic (issue 19): at the first chunk of the generation's last
acknowledged base, as its last record says, not at offset 0; from 0 when the chunks say nothing (an
older writer's) or nothing assembles from where they point."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from driftline.config import Settings
from driftline.streams.checkpoint import (
    BASE,
    DELTA,
    Checkpoint,
    CheckpointStore,
    ReadFrom,
    chain_topic,
    chunk_count,
    encode_chunks,
)

pytestmark = pytest.mark.integration

# tests/conftest.py's run_with_producer fixture
RunWithProducer = Callable[[Settings, Callable[[AIOKafkaProducer], Awaitable[None]]], None]

CHUNK = 64 * 1024
SMALL = {"max_chunk_bytes": CHUNK, "deliver_group_bytes": 128 * 1024}
BASE_BYTES = 300_000
BASE_CHUNKS = chunk_count(BASE_BYTES, CHUNK)  # six
SLACK = CHUNK  # the last record, read to learn where to start, and the chunks' headers


async def _store(settings: Settings, producer: AIOKafkaProducer,
                 state_dir: Path | None = None) -> CheckpointStore:
    if state_dir is not None:
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"state_dir": state_dir})})
    store = CheckpointStore(settings, producer, **SMALL)
    await store.start()
    return store


async def _load(settings: Settings, producer: AIOKafkaProducer, shard: int,
                state_dir: Path | None = None) -> Checkpoint:
    reader = await _store(settings, producer, state_dir)
    try:
        return (await reader.load_all("st", [shard]))[shard]
    finally:
        await reader.stop()


async def _two_bases(writer: CheckpointStore) -> tuple[bytes, bytes, str]:
    """A generation holding base 1, two deltas, base 2 and two deltas (no rotation: the generation
    is far below rotate_min_bytes); (base 1, base 2, the last link's id)."""
    first, second = os.urandom(BASE_BYTES), os.urandom(BASE_BYTES)
    link = await writer.save_link("st", 2, first, {("preds", 2): 10}, base=True, parent=None)
    for i in range(2):
        link = await writer.save_link("st", 2, f"a{i}".encode(), {("preds", 2): 11 + i}, base=False,
                                      parent=link)
    link = await writer.save_link("st", 2, second, {("preds", 2): 20}, base=True, parent=link)
    for i in range(2):
        link = await writer.save_link("st", 2, f"b{i}".encode(), {("preds", 2): 21 + i}, base=False,
                                      parent=link)
    return first, second, link


def test_a_restore_reads_the_last_base_and_its_deltas_not_the_base_before(
        settings: Settings, run_with_producer: RunWithProducer) -> None:
    async def scenario(producer: AIOKafkaProducer) -> None:
        writer = await _store(settings, producer)
        try:
            first, second, last = await _two_bases(writer)
        finally:
            await writer.stop()

        chain = await _load(settings, producer, 2)
        assert (chain.checkpoint_id, chain.blob, chain.deltas) == (last, second, (b"b0", b"b1"))
        assert chain.offsets == {("preds", 2): 22} and chain.generation == 0
        # Base 1 and its two deltas come first: base 2 starts after them.
        assert chain.base_offset == BASE_CHUNKS + 2
        assert len(second) < chain.broker_bytes < len(second) + SLACK < len(first) + len(second)

        # The restored owner writes on: its links name base 2, so the next restore reads as little.
        owner = await _store(settings, producer)
        try:
            again = (await owner.load_all("st", [2]))[2]
            link = await owner.save_link("st", 2, b"b2", {("preds", 2): 23}, base=False,
                                         parent=again.checkpoint_id)
        finally:
            await owner.stop()
        after = await _load(settings, producer, 2)
        assert (after.checkpoint_id, after.blob, after.deltas) == (link, second, (b"b0", b"b1", b"b2"))
        assert after.broker_bytes < len(second) + SLACK

    run_with_producer(settings, scenario)


def test_a_third_base_cut_off_mid_write_restores_the_base_before_it(
        settings: Settings, run_with_producer: RunWithProducer) -> None:
    async def scenario(producer: AIOKafkaProducer) -> None:
        writer = await _store(settings, producer)
        try:
            _, second, last = await _two_bases(writer)
            # The process dies sending base 3: its first three chunks reached the topic, each
            # naming where base 2 starts, as the writer's chunks after base 2's acknowledgement do.
            read_from = writer._read_from["st:2"]  # what the dying writer's next chunks carry
        finally:
            await writer.stop()
        assert read_from.offset == BASE_CHUNKS + 2
        torn = encode_chunks("torn", os.urandom(BASE_BYTES), {("preds", 2): 30}, CHUNK, BASE, None, read_from)
        topic = chain_topic(settings.topics.state, "st", 2, 0)
        for value in torn[:3]:
            await producer.send_and_wait(topic, value, key=b"st:2", partition=0)

        chain = await _load(settings, producer, 2)
        assert (chain.checkpoint_id, chain.blob, chain.deltas) == (last, second, (b"b0", b"b1"))
        assert chain.broker_bytes < len(second) + 3 * CHUNK + SLACK < 2 * len(second)

    run_with_producer(settings, scenario)


def test_chunks_naming_no_start_are_read_from_the_beginning(settings: Settings,
                                                            run_with_producer: RunWithProducer) -> None:
    async def scenario(producer: AIOKafkaProducer) -> None:
        # As the writer before issue 19 wrote them: no "from" in any chunk.
        topic = chain_topic(settings.topics.state, "st", 2, 0)
        first, second = os.urandom(BASE_BYTES), os.urandom(BASE_BYTES)
        links = [("b1", first, BASE, None), ("d1", b"d1", DELTA, "b1"), ("b2", second, BASE, None),
                 ("d2", b"d2", DELTA, "b2")]
        for ckpt_id, blob, kind, parent in links:
            for value in encode_chunks(ckpt_id, blob, {("preds", 2): 1}, CHUNK, kind, parent):
                await producer.send_and_wait(topic, value, key=b"st:2", partition=0)

        chain = await _load(settings, producer, 2)
        assert (chain.checkpoint_id, chain.blob, chain.deltas) == ("d2", second, (b"d2",))
        assert chain.broker_bytes > len(first) + len(second)

    run_with_producer(settings, scenario)


def test_a_start_where_nothing_assembles_falls_back_to_reading_from_the_beginning(
        settings: Settings, run_with_producer: RunWithProducer) -> None:
    async def scenario(producer: AIOKafkaProducer) -> None:
        topic = chain_topic(settings.topics.state, "st", 2, 0)
        base = os.urandom(BASE_BYTES)
        for value in encode_chunks("b1", base, {("preds", 2): 1}, CHUNK, BASE, None, ReadFrom(0, 0)):
            await producer.send_and_wait(topic, value, key=b"st:2", partition=0)
        # A delta naming itself as where its base starts: no base assembles from there.
        itself = ReadFrom(BASE_CHUNKS, 0)
        for value in encode_chunks("d1", b"d1", {("preds", 2): 2}, CHUNK, DELTA, "b1", itself):
            await producer.send_and_wait(topic, value, key=b"st:2", partition=0)

        chain = await _load(settings, producer, 2)
        assert (chain.checkpoint_id, chain.blob, chain.deltas, chain.base_offset) == ("d1", base, (b"d1",), 0)

    run_with_producer(settings, scenario)


def test_a_restore_from_the_local_copy_tells_the_next_links_where_the_base_starts(
        settings: Settings, tmp_path: Path, run_with_producer: RunWithProducer) -> None:
    state_dir = tmp_path / "state"

    async def scenario(producer: AIOKafkaProducer) -> None:
        writer = await _store(settings, producer, state_dir)
        try:
            _, second, last = await _two_bases(writer)
        finally:
            await writer.stop()
        owner = await _store(settings, producer, state_dir)
        try:
            restored = (await owner.load_all("st", [2]))[2]
            assert restored.local_bytes == len(second) and restored.base_offset == BASE_CHUNKS + 2
            link = await owner.save_link("st", 2, b"b2", {("preds", 2): 23}, base=False, parent=last)
        finally:
            await owner.stop()
        remote = await _load(settings, producer, 2)  # no state_dir: from the broker
        assert (remote.checkpoint_id, remote.blob, remote.deltas) == (link, second, (b"b0", b"b1", b"b2"))
        assert remote.broker_bytes < len(second) + SLACK

    run_with_producer(settings, scenario)
