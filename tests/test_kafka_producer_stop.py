"""A stopping worker's producer: flushed when the broker answers, dropped after a bound when not.

A real broker (a dedicated Tansu) behind a loopback proxy that cuts every connection and refuses
new ones: aiokafka's own ``stop()`` would wait for the batch to expire (its request timeout, 30 s
here, 40 s by default), past a worker's stop timeout.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.errors import KafkaTimeoutError
from harness import ProxiedBroker, start_proxied_broker
from kafka.admin import NewTopic

from driftline.config import Settings
from driftline.kafka.admin import admin_client
from driftline.kafka.clients import aiokafka_consumer, aiokafka_producer, stop_producer
from driftline.replay.kafka_source import read_all_values

pytestmark = pytest.mark.integration

LONG_ATTEMPT_MS = 30_000
FLUSH_S = 1.0


@pytest.fixture
def proxied(tmp_path: Path) -> ProxiedBroker:
    broker = start_proxied_broker(tmp_path / "broker.log")
    yield broker  # type: ignore[misc]
    broker.stop()


def _setup(broker: ProxiedBroker) -> tuple[Settings, str]:
    settings = Settings(kafka={"bootstrap_servers": broker.bootstrap_servers})
    topic = f"stop-{uuid.uuid4().hex[:8]}"
    with admin_client(settings) as admin:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    return settings, topic


async def _values(settings: Settings, topic: str) -> list[bytes]:
    consumer = aiokafka_consumer(settings, None)
    await consumer.start()
    try:
        return await read_all_values(consumer, topic)
    finally:
        await consumer.stop()


def test_a_healthy_broker_gets_every_record_before_the_producer_stops(proxied: ProxiedBroker) -> None:
    settings, topic = _setup(proxied)

    async def main() -> None:
        producer = aiokafka_producer(settings, request_timeout_ms=LONG_ATTEMPT_MS)
        await producer.start()
        sent = [await producer.send(topic, b"v%d" % i) for i in range(20)]  # not awaited: in the producer
        assert await stop_producer(producer, FLUSH_S) == 0
        assert all(f.done() and f.exception() is None for f in sent)
        assert await _values(settings, topic) == [b"v%d" % i for i in range(20)]

    asyncio.run(main())


def test_an_outage_holds_the_stop_for_the_bound_only(proxied: ProxiedBroker) -> None:
    settings, topic = _setup(proxied)

    async def main() -> None:
        producer = aiokafka_producer(settings, request_timeout_ms=LONG_ATTEMPT_MS)
        await producer.start()
        await producer.send_and_wait(topic, b"acknowledged")
        proxied.proxy.cut()
        pending = await producer.send(topic, b"held")
        started = time.monotonic()
        dropped = await stop_producer(producer, FLUSH_S)
        took = time.monotonic() - started
        # the bound, with room for a loaded machine, far under the 30-s attempt aiokafka would await
        assert took < FLUSH_S + 10, f"stop took {took:.1f}s"
        assert dropped == 1
        with pytest.raises(KafkaTimeoutError):
            await pending
        proxied.proxy.restore()
        assert await _values(settings, topic) == [b"acknowledged"]

    asyncio.run(main())
