"""The state chain topics stay bounded over many rotations (the embedded broker does not compact).

A short, assertion-based stand-in for the soak (bench/soak.py runs the worker for hours): one
shard writes base + deltas checkpoints, as stage 1 does, through many generation rotations, and
the bytes its chain topics hold are read back after every base. They must stay under a bound
that does not grow with the number of rotations: the current generation (at most ``ROTATE_FACTOR``
bases and the rotation's minimum size, plus what follows the last base) and the previous one until
its deletion. (Deleted generations may be listed again, empty: a producer's metadata refresh of a
topic it wrote to re-creates it on a broker that auto-creates topics; they hold no bytes.)
"""

from __future__ import annotations

import asyncio
import os

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from driftline.config import Settings
from driftline.kafka.admin import admin_client, ensure_topics
from driftline.kafka.clients import aiokafka_consumer, aiokafka_producer_kwargs
from driftline.kafka.offsets import end_offsets
from driftline.streams.checkpoint import ROTATE_FACTOR, CheckpointStore, chain_generations, chain_topic

BASE_BYTES = 60_000
DELTA_BYTES = 8_000
DELTAS_PER_BASE = 3
ROTATE_MIN = 150_000
ROUNDS = 24


def _generations(settings: Settings) -> list[int]:
    with admin_client(settings) as admin:
        return chain_generations(settings.topics.state, "st", admin.list_topics()).get(0, [])


async def _held_bytes(settings: Settings, generations: list[int]) -> int:
    """Bytes of every message value in the shard's live chain topics, read back from the broker."""
    consumer = aiokafka_consumer(settings, None)
    await consumer.start()
    try:
        parts = [TopicPartition(chain_topic(settings.topics.state, "st", 0, g), 0) for g in generations]
        ends = await end_offsets(consumer, parts)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        held, left = 0, {tp for tp in parts if ends[tp] > 0}
        while left:
            for tp, records in (await consumer.getmany(*left, timeout_ms=1000)).items():
                held += sum(len(r.value or b"") for r in records)
                if records[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        return held
    finally:
        await consumer.stop()


async def _rotate_many(settings: Settings) -> list[tuple[int, int, list[int]]]:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    store = CheckpointStore(settings, producer, max_chunk_bytes=32 * 1024, rotate_min_bytes=ROTATE_MIN)
    await store.start()
    seen: list[tuple[int, int, list[int]]] = []  # (round, bytes held, live generations)
    try:
        parent = None
        offset = 0
        for round_ in range(ROUNDS):
            offset += 1
            parent = await store.save_link("st", 0, os.urandom(BASE_BYTES), {("preds", 0): offset},
                                           base=True, parent=parent)
            for _ in range(DELTAS_PER_BASE):
                offset += 1
                parent = await store.save_link("st", 0, os.urandom(DELTA_BYTES), {("preds", 0): offset},
                                               base=False, parent=parent)
            generations = _generations(settings)
            seen.append((round_, await _held_bytes(settings, generations), generations))
        restored = (await store.load_all("st", [0]))[0]
        assert restored.checkpoint_id == parent and len(restored.deltas) == DELTAS_PER_BASE
    finally:
        await store.stop()
        await producer.stop()
    return seen


@pytest.mark.integration
def test_chain_topics_hold_a_bounded_number_of_bytes_over_many_rotations(settings: Settings) -> None:
    ensure_topics(settings)
    seen = asyncio.run(_rotate_many(settings))
    round_bytes = BASE_BYTES + DELTAS_PER_BASE * DELTA_BYTES
    # a generation rotates at the first base after it holds max(ROTATE_FACTOR bases, ROTATE_MIN):
    # it then holds at most that plus one round; the previous generation is deleted once the new
    # base is acknowledged. Envelopes add < 1 %.
    bound = 1.05 * (max(ROTATE_FACTOR * BASE_BYTES, ROTATE_MIN) + 2 * round_bytes)
    assert max(seen[-1][2]) >= 5, f"too few rotations to show a bound: {seen}"
    # deleted generations stay deleted (the producer's metadata refresh recreated them, empty, on
    # a broker that creates topics on demand): the current one and at most the one before it
    assert all(len(generations) <= 2 for _, _, generations in seen), seen
    assert max(held for _, held, _ in seen) <= bound, seen
    # bytes over time: the second half of the run holds no more than the first half did at most
    half = len(seen) // 2
    assert max(h for _, h, _ in seen[half:]) <= max(h for _, h, _ in seen[:half]) + round_bytes, seen
