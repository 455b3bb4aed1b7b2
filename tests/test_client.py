"""DriftlineClient: delivery to a real broker, overflow policies, shutdown, threads and asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

import driftline.client as dl
from driftline.client import DriftlineClient
from driftline.config import Settings
from driftline.kafka.clients import aiokafka_common
from driftline.local.broker import free_port
from driftline.schemas.events import LabelEvent, PredictionEvent


def consume(settings: Settings, topic: str, expected: int, timeout: float = 20.0
            ) -> list[tuple[bytes, bytes]]:
    """(key, value) of every record of ``topic``; stops once ``expected`` arrived or at the timeout."""

    async def run() -> list[tuple[bytes, bytes]]:
        consumer = AIOKafkaConsumer(topic, **aiokafka_common(settings), group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < expected and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    out.extend((r.key, r.value) for r in records)
        finally:
            await consumer.stop()
        return out

    return asyncio.run(run())


def unreachable() -> Settings:
    return Settings.model_validate({"kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"}})


def log_some(client: DriftlineClient, prefix: str, n: int) -> None:
    for i in range(n):
        assert client.log_prediction(f"{prefix}{i}", "m", 1, {"x": i * 0.5, "c": "a"}, {"label": "y"},
                                     latency_ms=1.5, segment={"region": "eu"})


def test_missing_ids_are_rejected() -> None:
    with DriftlineClient(unreachable(), close_timeout=1) as client:
        with pytest.raises(ValueError, match="prediction_id"):
            client.log_prediction("", "m", "1", {}, 1)
        with pytest.raises(ValueError, match="model_id"):
            client.log_prediction("p", cast(Any, None), "1", {}, 1)
        with pytest.raises(ValueError, match="features"):
            client.log_prediction("p", "m", "1", cast(Any, [1, 2]), 1)
        with pytest.raises(ValueError, match="label"):
            client.log_label("p", None)
    with pytest.raises(ValueError, match="overflow"):
        DriftlineClient(unreachable(), overflow=cast(Any, "queue"))


def test_drop_policy_counts_drops_when_the_broker_is_unreachable() -> None:
    client = DriftlineClient(unreachable(), buffer_size=5, close_timeout=2)
    accepted = [client.log_label(f"p{i}", 1) for i in range(50)]
    assert accepted.count(True) == 5
    stats = client.stats
    assert (stats["enqueued"], stats["dropped"], stats["sent"]) == (5, 45, 0)
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 3
    assert client.stats == {"enqueued": 5, "sent": 0, "dropped": 45, "failed": 5,
                            "buffered": 0, "in_flight": 0}
    assert client.log_label("late", 1) is False  # closed: dropped, never raises
    assert not client._thread.is_alive()


def test_block_policy_blocks_until_the_timeout() -> None:
    options: dict[str, Any] = {"buffer_size": 2, "block_timeout": 0.3, "close_timeout": 1}
    with DriftlineClient(unreachable(), overflow="block", **options) as client:
        assert client.log_label("a", 1) and client.log_label("b", 1)
        started = time.monotonic()
        assert client.log_label("c", 1) is False
        assert time.monotonic() - started >= 0.29
        assert client.stats["dropped"] == 1


@pytest.mark.integration
def test_every_event_reaches_the_broker_keyed_by_prediction_id(settings: Settings) -> None:
    client = DriftlineClient(settings, buffer_size=100_000)
    log_some(client, "p", 3000)
    for i in range(0, 3000, 3):
        assert client.log_label(f"p{i}", "y", timestamp=1767225600000 + i, model_id="m")
    assert client.flush(20)
    assert client.stats["sent"] == 4000 and client.stats["failed"] == 0
    client.close()
    predictions = consume(settings, settings.topics.predictions, 3000)
    labels = consume(settings, settings.topics.labels, 1000)
    assert sorted(k for k, _ in predictions) == sorted(f"p{i}".encode() for i in range(3000))
    assert len(labels) == 1000
    for key, value in predictions[:50]:
        event = PredictionEvent.model_validate_json(value)
        assert event.prediction_id.encode() == key and event.segment == {"region": "eu"}
    for key, value in labels[:50]:
        assert LabelEvent.model_validate_json(value).prediction_id.encode() == key


@pytest.mark.integration
def test_close_flushes_and_block_policy_loses_nothing(settings: Settings) -> None:
    with DriftlineClient(settings, overflow="block", buffer_size=16, batch_size=8) as client:
        log_some(client, "b", 2000)
    assert client.stats["sent"] == 2000 and client.stats["dropped"] == 0
    assert len(consume(settings, settings.topics.predictions, 2000)) == 2000


@pytest.mark.integration
def test_usable_from_threads_and_from_an_event_loop(settings: Settings) -> None:
    client = DriftlineClient(settings)
    threads = [threading.Thread(target=log_some, args=(client, f"t{n}-", 500)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def handler_like() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        task = asyncio.create_task(ticker())
        for i in range(1000):
            client.log_label(f"t0-{i % 500}", "y")
        assert await client.aflush(20)
        task.cancel()
        return ticks

    assert asyncio.run(handler_like()) > 0  # the loop kept running while aflush waited
    client.close()
    assert client.stats["sent"] == 5000 and client.stats["dropped"] == 0
    keys = {k for k, _ in consume(settings, settings.topics.predictions, 4000)}
    assert len(keys) == 4000


@pytest.mark.integration
def test_module_level_api(settings: Settings) -> None:
    with pytest.raises(RuntimeError, match="init"):
        dl.log_label("p", 1)
    dl.init(settings)
    try:
        assert dl.log_prediction("mod-1", "m", "2", {"x": 1.0}, 0.7)
        assert dl.log_label("mod-1", 0.5)
        assert dl.flush(10)
    finally:
        dl.close()
    ((key, value),) = consume(settings, settings.topics.predictions, 1)
    assert key == b"mod-1" and orjson.loads(value)["prediction"] == 0.7


# -- the HTTP transport (no Kafka library needed) ---------------------------------------------------


@contextlib.contextmanager
def ingest_server(settings: Settings) -> Iterator[str]:
    """The worker's HTTP ingest routes on a free loopback port, served from a thread; yields the URL."""
    from aiohttp import web

    from driftline.streams.http_ingest import add_ingest_routes

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="ingest", daemon=True)
    thread.start()
    port = free_port()
    app = web.Application()
    add_ingest_routes(app, settings)
    runner = web.AppRunner(app)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(120)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(120)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


@pytest.mark.integration
def test_http_transport_delivers_every_event_through_the_worker(settings: Settings) -> None:
    with ingest_server(settings) as url:
        client = DriftlineClient(settings, transport="http", http_url=url, batch_size=700)
        log_some(client, "h", 3000)
        for i in range(0, 3000, 3):
            assert client.log_label(f"h{i}", "y", model_id="m")
        assert client.flush(120)
        client.close()
    assert client.stats["sent"] == 4000 and client.stats["failed"] == 0
    predictions = consume(settings, settings.topics.predictions, 3000)
    labels = consume(settings, settings.topics.labels, 1000)
    # Keyed by prediction_id as the Kafka transport keys them: co-partitioned with the labels.
    assert sorted(k for k, _ in predictions) == sorted(f"h{i}".encode() for i in range(3000))
    assert sorted(k for k, _ in labels) == sorted(f"h{i}".encode() for i in range(0, 3000, 3))
    for key, value in predictions[:50]:
        event = PredictionEvent.model_validate_json(value)
        assert event.prediction_id.encode() == key and event.segment == {"region": "eu"}


@pytest.mark.integration
def test_http_transport_counts_a_rejected_batch_as_failed(settings: Settings) -> None:
    with ingest_server(settings) as url, DriftlineClient(settings, transport="http", http_url=url) as client:
        assert client.log_prediction("r1", "m", 1, {"x": 1.0}, 1, timestamp="not a time")
        assert client.flush(120)
        assert client.stats["failed"] == 1 and client.stats["sent"] == 0
        log_some(client, "ok", 3)
        assert client.flush(120)
        assert client.stats["sent"] == 3


def test_http_transport_without_a_worker_retries_until_close_then_counts_failed() -> None:
    client = DriftlineClient(transport="http", http_url=f"http://127.0.0.1:{free_port()}", close_timeout=1)
    log_some(client, "u", 5)
    assert not client.flush(0.5)  # not acknowledged: still retrying
    client.close()
    assert client.stats["failed"] == 5 and client.stats["sent"] == 0


def test_http_batches_stay_within_the_workers_limit() -> None:
    from driftline.client.core import HTTP_MAX_EVENTS
    from driftline.streams.http_ingest import MAX_BATCH_EVENTS

    assert HTTP_MAX_EVENTS == MAX_BATCH_EVENTS
