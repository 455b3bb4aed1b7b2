"""Where simulated traffic goes: Kafka (aiokafka batch API, keyed by prediction_id) or JSONL files.

Kafka records carry the simulated event time as their timestamp, so the stream looks as if it had
been recorded live. With a numeric ``speed`` the records are paced: simulated second ``t`` is sent
at wall second ``t / speed``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from driftline.client.batch_sender import BatchSender, OutRecord, Submitted
from driftline.config import Settings
from driftline.kafka.clients import aiokafka_producer_kwargs
from driftline.simulate.scenario import Scenario
from driftline.simulate.traffic import SimEvent, generate
from driftline.simulate.truth import ground_truth

CHUNK = 5000
MAX_IN_FLIGHT_CHUNKS = 8


def _topic(settings: Settings, event: SimEvent) -> str:
    return settings.topics.labels if event.kind == "labels" else settings.topics.predictions


async def _await_all(batches: list[Submitted]) -> None:
    for batch in batches:
        await batch.future
    batches.clear()


async def produce(
    scenario: Scenario,
    settings: Settings,
    *,
    progress: Callable[[Counter[str]], None] | None = None,
) -> dict[str, int]:
    """Produce the scenario to ``settings.topics`` (malformed events go to the predictions topic);
    returns the count per event kind once the broker acknowledged everything."""
    scenario = scenario.resolved()
    counts: Counter[str] = Counter()
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        sender = BatchSender(producer)
        in_flight: list[list[Submitted]] = []
        chunk: list[OutRecord] = []
        paced = scenario.speed != "max"
        wall0, start_ms = time.monotonic(), scenario.start_ms()

        async def send_chunk() -> None:
            submitted, rejected = await sender.send(chunk)
            if rejected:
                raise ValueError(f"{rejected} simulated events exceed the producer batch size")
            chunk.clear()
            in_flight.append(submitted)
            while len(in_flight) > MAX_IN_FLIGHT_CHUNKS:
                await _await_all(in_flight.pop(0))
            if progress is not None:
                progress(counts)

        for event in generate(scenario):
            if paced:
                due = wall0 + (event.timestamp_ms - start_ms) / 1000 / float(scenario.speed)
                if due > time.monotonic():
                    if chunk:
                        await send_chunk()
                    await asyncio.sleep(due - time.monotonic())
            chunk.append(OutRecord(_topic(settings, event), event.key, event.value, event.timestamp_ms))
            counts[event.kind] += 1
            if len(chunk) >= CHUNK:
                await send_chunk()
        if chunk:
            await send_chunk()
        for submitted in in_flight:
            await _await_all(submitted)
    finally:
        await producer.stop()
    return dict(counts)


def write_jsonl(scenario: Scenario, out_dir: Path) -> dict[str, int]:
    """Write predictions.jsonl (valid and malformed), labels.jsonl and ground_truth.json."""
    scenario = scenario.resolved()
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    with (out_dir / "predictions.jsonl").open("wb") as preds, (out_dir / "labels.jsonl").open("wb") as labels:
        for event in generate(scenario):
            (labels if event.kind == "labels" else preds).write(event.value + b"\n")
            counts[event.kind] += 1
    truth = orjson.dumps(ground_truth(scenario), option=orjson.OPT_INDENT_2)
    (out_dir / "ground_truth.json").write_bytes(truth)
    return dict(counts)
