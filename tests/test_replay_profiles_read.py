"""A topic replay reads the profiles topic with a consumer of its own.

Read with the consumer that then plans the ``--from``/``--to`` offsets, the profiles partition
stayed assigned (at its end) and joined every Fetch of that search, each waiting out the broker's
fetch wait: a bounded replay of an hour of simulated traffic spent ~30 s planning instead of ~4."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer
from driftline.replay import run
from driftline.store.writer import MemoryRowWriter

pytestmark = pytest.mark.integration


def test_the_offset_search_runs_without_the_profiles_partition_assigned(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_topics(settings)
    assigned_when_planning: list[set[str]] = []
    plan_ranges = run.plan_ranges

    async def spied(consumer: AIOKafkaConsumer, *args: Any) -> Any:
        assigned_when_planning.append({tp.topic for tp in consumer.assignment()})
        return await plan_ranges(consumer, *args)

    monkeypatch.setattr(run, "plan_ranges", spied)

    async def main() -> run.ReplayResult:
        producer = aiokafka_producer(settings)
        await producer.start()
        try:
            await producer.send_and_wait(settings.topics.profiles, b"{}", key=b"m")
        finally:
            await producer.stop()
        return await asyncio.wait_for(
            run.replay_topics(settings, "r", MemoryRowWriter(), 0, 1_000), 60)

    result = asyncio.run(main())
    assert result.records == 0
    assert assigned_when_planning == [set()]
