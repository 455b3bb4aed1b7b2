"""The producers driftline builds keep every topic they send to in their metadata requests, and
``/metrics`` counts the metadata requests of the process's clients.

A topic aiokafka learnt of from a request for all topics was sent to untracked; once any other topic
was tracked, refreshes named only that one, the untracked topic's partitions lost their leader, and
a batch waiting for one made the sender ask for metadata again and again with no backoff (a worker
burnt several times its CPU on it: docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import uuid

from aiokafka import TopicPartition
from kafka.admin import NewTopic
from prometheus_client.parser import text_string_to_metric_families

from driftline.config import Settings
from driftline.kafka.admin import admin_client
from driftline.kafka.clients import aiokafka_producer
from driftline.kafka.metadata_requests import metadata_requests
from driftline.streams.metrics import render


def _create(settings: Settings, topic: str) -> None:
    with admin_client(settings) as admin:
        admin.create_topics([NewTopic(topic, 1, 1)])


async def _leader_after_another_topic(settings: Settings, known: str, later: str) -> int | None:
    """Send to ``known`` (it existed when the producer started), then to ``later`` (created after),
    refresh, and return the leader the producer's metadata gives ``known``'s partition."""
    producer = aiokafka_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(known, b"before")
        await asyncio.to_thread(_create, settings, later)
        await producer.send_and_wait(later, b"new topic: aiokafka tracks it")
        await producer.client.force_metadata_update()
        leader: int | None = producer.client.cluster.leader_for_partition(TopicPartition(known, 0))
        return leader
    finally:
        await producer.stop()


def test_a_topic_sent_to_keeps_its_leader_once_another_is_tracked(kafka_bootstrap: str) -> None:
    settings = Settings(kafka={"bootstrap_servers": kafka_bootstrap})
    tag = uuid.uuid4().hex[:8]
    known, later = f"meta-{tag}.known", f"meta-{tag}.later"
    _create(settings, known)
    assert asyncio.run(_leader_after_another_topic(settings, known, later)) is not None


async def _send_while_another_topic_is_tracked(settings: Settings, known: list[str], later: list[str]) -> int:
    """Each round, a batch to ``known[i]`` (a topic the producer learnt of from its bootstrap) waits
    out its 5 ms linger while a send to ``later[i]`` (new to the producer) refreshes the metadata;
    returns the metadata requests sent until every send is acknowledged."""
    producer = aiokafka_producer(settings, request_timeout_ms=3_000)  # the storm's end: the batch expires
    await producer.start()
    try:
        before = metadata_requests()["producer"]
        for known_topic, later_topic in zip(known, later, strict=True):
            await asyncio.to_thread(_create, settings, later_topic)
            queued = await producer.send(known_topic, b"waits for its linger")
            await producer.send_and_wait(later_topic, b"new topic: the refresh names tracked topics only")
            await queued  # untracked: NotLeaderForPartitionError once the batch expired
        return metadata_requests()["producer"] - before
    finally:
        await producer.stop()


def test_a_batch_to_a_known_topic_is_delivered_without_a_metadata_storm(kafka_bootstrap: str) -> None:
    # Untracked, a queued batch's partition lost its leader when the refresh answered before the
    # linger ran out (most rounds; a race, hence three), and the sender re-requested metadata with no
    # backoff: ~1,000-4,900 requests until the batch expired after 3 s. Tracked: 1-2 a round.
    settings = Settings(kafka={"bootstrap_servers": kafka_bootstrap})
    tag = uuid.uuid4().hex[:8]
    known = [f"storm-{tag}.known-{i}" for i in range(3)]
    later = [f"storm-{tag}.later-{i}" for i in range(3)]
    for topic in known:
        _create(settings, topic)
    assert asyncio.run(_send_while_another_topic_is_tracked(settings, known, later)) < 50


def _scraped_metadata_requests() -> dict[str, float]:
    text = render([], None).decode()
    return {sample.labels["client"]: sample.value for family in text_string_to_metric_families(text)
            if family.name == "driftline_kafka_metadata_requests" for sample in family.samples}


def test_metrics_count_the_metadata_requests_of_a_producer(kafka_bootstrap: str) -> None:
    settings = Settings(kafka={"bootstrap_servers": kafka_bootstrap})
    topic = f"meta-{uuid.uuid4().hex[:8]}.counted"
    before = metadata_requests().get("producer", 0)

    async def send_and_refresh() -> None:
        producer = aiokafka_producer(settings)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"x")  # an unknown topic: one request at least
            await producer.client.force_metadata_update()  # and one more
        finally:
            await producer.stop()

    asyncio.run(send_and_refresh())
    sent = metadata_requests()["producer"]
    assert sent >= before + 2
    assert _scraped_metadata_requests()["producer"] == sent
