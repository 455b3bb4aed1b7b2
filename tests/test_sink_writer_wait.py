"""A replay through the sink topic waits for the worker's sink to insert its rows: it returned once
the broker had them, so a `backtest compare` right after could read a run in part."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_common
from driftline.store.writer import KafkaSinkRowWriter, sink_producer

GROUP = "test-sink-wait"


async def _insert_as_a_sink_would(settings: Settings, expected: int) -> None:
    """Read the sink topic in GROUP and commit, as the worker's sink does once rows are inserted."""
    consumer = AIOKafkaConsumer(settings.topics.sink, **aiokafka_common(settings), group_id=GROUP,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        seen, deadline = 0, time.monotonic() + 60
        while seen < expected and time.monotonic() < deadline:
            seen += sum(len(r) for r in (await consumer.getmany(timeout_ms=200)).values())
        assert seen == expected
        await consumer.commit()
    finally:
        await consumer.stop()


def test_wait_inserted_follows_the_sink_groups_commits(settings: Settings) -> None:
    ensure_topics(settings)
    writer = KafkaSinkRowWriter(sink_producer(settings), settings.topics.sink)
    writer.write("dead_letters", [{"error_kind": "x", "n": i} for i in range(3)])
    writer.write("late_events", [{"event_type": "labels", "n": 1}])
    writer.close()
    started = time.monotonic()
    assert writer.wait_inserted(settings, GROUP, patience_s=0.5) == 2  # two messages, none inserted
    assert time.monotonic() - started < 30
    asyncio.run(_insert_as_a_sink_would(settings, expected=2))
    assert writer.wait_inserted(settings, GROUP, patience_s=30) == 0
