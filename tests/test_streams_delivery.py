"""deliver() on the real embedded broker: per-partition order, completeness, partitioning, batches
spanning several producer batches, and the retry path (injected failures and a real network cut)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.partitioner import murmur2

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics, partition_counts
from driftline.kafka.clients import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from driftline.kafka.offsets import end_offsets
from driftline.kafka.partitioner import partition_for_key
from driftline.pipeline.stage import OutboundMessage
from driftline.streams.delivery import _send_all, deliver

pytestmark = pytest.mark.integration

Log = dict[tuple[str, int], list[tuple[bytes | None, bytes]]]


async def read_topics(settings: Settings, topics: Sequence[str]) -> Log:
    """Every record of `topics`, per (topic, partition) in offset order."""
    counts = partition_counts(settings, topics)
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(counts[t])]
        end = await end_offsets(consumer, tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: Log = defaultdict(list)
        while any([await consumer.position(tp) < offset for tp, offset in end.items()]):
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                out[(tp.topic, tp.partition)].extend((r.key, r.value) for r in records)
        return out
    finally:
        await consumer.stop()


def expected_log(messages: Sequence[OutboundMessage], counts: dict[str, int]) -> Log:
    """Where the default partitioner puts each message, in order (messages without key excluded)."""
    out: Log = defaultdict(list)
    for m in messages:
        if m.partition is None and m.key is None:
            continue
        partition = m.partition
        if partition is None:
            assert m.key is not None
            partition = (murmur2(m.key) & 0x7FFFFFFF) % counts[m.topic]
        out[(m.topic, partition)].append((m.key, m.value))
    return out


def mixed_messages(settings: Settings, n: int, value_size: int = 40) -> list[OutboundMessage]:
    """Interleaved: explicit partitions of model-events, keyed outcomes (partition by key), keyless."""
    t = settings.topics
    q = settings.topics.model_events_partitions
    out = []
    for i in range(n):
        pad = b"." * value_size
        if i % 3 == 0:
            out.append(OutboundMessage(t.model_events, f"m{i % 5}".encode(), b"me%d" % i + pad, i % q))
        elif i % 3 == 1:
            key = f"pred-{i:08d}-{'x' * (i % 7)}".encode()
            out.append(OutboundMessage(t.outcomes, key, b"o%d" % i + pad))
        elif i % 30 == 2:
            out.append(OutboundMessage(t.dead_letters, None, b"d%d" % i + pad))  # no key, no partition
        else:
            out.append(OutboundMessage(t.sink, b"s", b"s%d" % i + pad, 0))
    return out


def dedupe(records: list[tuple[bytes | None, bytes]]) -> list[tuple[bytes | None, bytes]]:
    seen: set[tuple[bytes | None, bytes]] = set()
    out = []
    for r in records:
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


class FlakyProducer:
    """A real producer whose n-th ``send_batch`` fails: ``fail`` = a failed delivery future (the batch
    never reaches the broker), ``raise_`` = the call raises (nothing queued)."""

    def __init__(self, real: AIOKafkaProducer, fail: Sequence[int] = (), raise_: Sequence[int] = ()) -> None:
        self._real = real
        self._fail, self._raise = set(fail), set(raise_)
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.calls += 1
        if self.calls in self._raise:
            raise KafkaTimeoutError()
        if self.calls in self._fail:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_exception(KafkaConnectionError("injected"))
            return future
        return await self._real.send_batch(batch, topic, partition=partition)


async def started_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(**{**aiokafka_producer_kwargs(settings), **overrides})
    await producer.start()
    return producer


def topics_of(settings: Settings) -> list[str]:
    t = settings.topics
    return [t.model_events, t.outcomes, t.dead_letters, t.sink]


def test_order_completeness_and_partitioning_across_topics_and_partitions(settings: Settings) -> None:
    ensure_topics(settings)
    asyncio.run(_order_completeness(settings))


async def _order_completeness(settings: Settings) -> None:
    messages = mixed_messages(settings, 3000)
    producer = await started_producer(settings)
    try:
        assert await deliver(producer, messages) == 0
        assert await deliver(producer, []) == 0
    finally:
        await producer.stop()
    topics = topics_of(settings)
    counts = partition_counts(settings, topics)
    got = await read_topics(settings, topics)
    want = expected_log(messages, counts)
    for tp, records in want.items():
        assert got[tp] == records, tp  # every message once, in order, on its partition
    # Messages without a partition land where the in-process pipeline expects them (partition_for_key).
    for m in messages:
        if m.topic == settings.topics.outcomes:
            assert m.key is not None
            assert (m.key, m.value) in got[(m.topic, partition_for_key(m.key, counts[m.topic]))]
    # Keyless messages: the partitioner picks any partition; each arrives once.
    keyless = [(None, m.value) for m in messages if m.key is None]
    landed = [r for (topic, _), rs in got.items() if topic == settings.topics.dead_letters for r in rs]
    assert sorted(landed, key=lambda r: r[1]) == sorted(keyless, key=lambda r: r[1]) and keyless


def test_large_batches_span_several_producer_batches(settings: Settings) -> None:
    ensure_topics(settings)
    asyncio.run(_large_batches(settings))


async def _large_batches(settings: Settings) -> None:
    messages = mixed_messages(settings, 6000, value_size=300)  # ~1.9 MB, batches of 16 KiB
    producer = FlakyProducer(await started_producer(settings, max_batch_size=16_384))
    try:
        assert await deliver(producer, messages) == 0
    finally:
        await producer.stop()
    assert producer.calls > 100  # many full batches were submitted, several per partition
    topics = topics_of(settings)
    got = await read_topics(settings, topics)
    for tp, records in expected_log(messages, partition_counts(settings, topics)).items():
        assert got[tp] == records, tp


def test_failed_batches_are_resent_from_the_first_unacknowledged_message(settings: Settings) -> None:
    ensure_topics(settings)
    asyncio.run(_failed_batches(settings))


async def _failed_batches(settings: Settings) -> None:
    messages = mixed_messages(settings, 4000, value_size=200)
    real = await started_producer(settings, max_batch_size=16_384)
    # Attempt 1 stops when submitting its 3rd batch raises; in attempt 2 (its 7th batch) a submitted
    # batch fails; attempt 3 goes through.
    producer = FlakyProducer(real, raise_=[3], fail=[9])
    blocked: list[bool] = []
    try:
        retries = await deliver(producer, messages, on_blocked=blocked.append)
    finally:
        await real.stop()
    assert retries == 2 and blocked == [True, False]
    topics = topics_of(settings)
    got = await read_topics(settings, topics)
    for tp, records in expected_log(messages, partition_counts(settings, topics)).items():
        # Every message is there; already acknowledged ones may come twice. Each attempt re-sends a
        # suffix of the messages in order, so the last copies are in order. (The first copies need
        # not be: a later batch of a partition can succeed after an earlier one failed, in one
        # attempt -- as with per-message send().)
        assert sorted(set(got[tp])) == sorted(records), tp
        assert dedupe(got[tp][::-1])[::-1] == records, tp
    assert sum(map(len, got.values())) > len(messages)  # the retries did duplicate some


def test_acknowledged_prefix_ends_at_the_earliest_failed_batch(settings: Settings) -> None:
    ensure_topics(settings)
    asyncio.run(_acknowledged_prefix(settings))


async def _acknowledged_prefix(settings: Settings) -> None:
    t = settings.topics
    # Two partitions, one batch each (submitted in order of first message): A = [0, 2], B = [1, 3].
    messages = [OutboundMessage(t.model_events, b"k", b"v%d" % i, i % 2) for i in range(4)]
    real = await started_producer(settings)
    try:
        acked, error = await _send_all(FlakyProducer(real, fail=[2]), messages)
        assert acked == 1 and isinstance(error, KafkaConnectionError)  # B failed: re-send from 1
        acked, error = await _send_all(FlakyProducer(real, fail=[1]), messages)
        assert acked == 0 and isinstance(error, KafkaConnectionError)  # A failed: from 0
        acked, error = await _send_all(FlakyProducer(real, raise_=[2]), messages)
        assert acked == 1 and isinstance(error, KafkaTimeoutError)  # B never queued: from 1
        assert await _send_all(real, messages) == (4, None)
    finally:
        await real.stop()


def test_an_oversized_message_raises_after_the_messages_before_it(settings: Settings) -> None:
    ensure_topics(settings)
    asyncio.run(_oversized(settings))


async def _oversized(settings: Settings) -> None:
    t = settings.topics
    before = [OutboundMessage(t.sink, b"s", b"before%d" % i, 0) for i in range(10)]
    huge = OutboundMessage(t.sink, b"s", b"x" * 200_000, 0)
    messages = [*before, huge, OutboundMessage(t.sink, b"s", b"after", 0)]
    producer = await started_producer(settings, max_request_size=100_000)
    blocked: list[bool] = []
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await deliver(producer, messages, on_blocked=blocked.append)
    finally:
        await producer.stop()
    assert blocked == []
    got = await read_topics(settings, [t.sink])
    assert got[(t.sink, 0)] == [(m.key, m.value) for m in before]  # as send(): those before went out


# -- a real outage: the broker behind a TCP proxy that the test cuts ---------------------------------


@pytest.fixture
def proxied_broker(tmp_path: Path) -> Any:
    sys.path.insert(0, str(Path(__file__).parent / "faults"))
    try:
        from harness import start_proxied_broker
    finally:
        sys.path.pop(0)
    broker = start_proxied_broker(tmp_path / "broker.log")
    try:
        yield broker
    finally:
        broker.stop()


def test_a_network_cut_blocks_deliver_until_the_broker_is_back(proxied_broker: Any,
                                                               settings: Settings) -> None:
    s = settings.model_copy(update={"kafka": settings.kafka.model_copy(
        update={"bootstrap_servers": proxied_broker.bootstrap_servers})})
    ensure_topics(s)
    asyncio.run(_network_cut(s, proxied_broker))


async def _network_cut(settings: Settings, broker: Any) -> None:
    first = mixed_messages(settings, 500)
    second = [OutboundMessage(m.topic, m.key, b"2:" + m.value, m.partition)
              for m in mixed_messages(settings, 3000)]
    producer = await started_producer(settings, request_timeout_ms=2_000, retry_backoff_ms=100)
    blocked: list[bool] = []
    try:
        assert await deliver(producer, first) == 0
        broker.proxy.cut()
        task = asyncio.create_task(deliver(producer, second, on_blocked=blocked.append))
        deadline = time.monotonic() + 30
        while not blocked and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert blocked == [True] and not task.done()  # waiting inside deliver, retrying
        broker.proxy.restore()
        retries = await asyncio.wait_for(task, 60)
    finally:
        if broker.proxy.is_cut:
            broker.proxy.restore()
        await producer.stop()
    assert retries >= 1 and blocked == [True, False]
    topics = topics_of(settings)
    got = await read_topics(settings, topics)
    want = expected_log(first + second, partition_counts(settings, topics))
    for tp, records in want.items():
        assert sorted(set(got[tp])) == sorted(records), tp
        assert dedupe(got[tp][::-1])[::-1] == records, tp
