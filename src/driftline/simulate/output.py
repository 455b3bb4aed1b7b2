"""Where simulated traffic goes: Kafka (aiokafka batch API, keyed by prediction_id) or JSONL files.

Kafka records carry the simulated event time as their timestamp, so the stream looks as if it had
been recorded live. With a numeric ``speed`` the records are paced: simulated second ``t`` is sent
at wall second ``t / speed``.

Nothing is sent with an event time ahead of the wall clock (driftline dead-letters such events,
``windows.max_future_skew_s``): a full-speed run must lie in the past (the default start makes it
end now); a paced run never sends an event before the wall clock reached its time; labels due
after the simulated span that are still in the future when their turn comes are left out.
:class:`ProduceStats` says what was written and what was left out.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from driftline.config import Settings
from driftline.kafka.batch import BatchSender, OutRecord, Submitted
from driftline.kafka.clients import aiokafka_producer
from driftline.simulate.scenario import Scenario
from driftline.simulate.traffic import SimEvent, generate
from driftline.simulate.truth import ground_truth

CHUNK = 5000
MAX_IN_FLIGHT_CHUNKS = 8


@dataclass
class ProduceStats:
    """Event-time span of the records written, and the labels left out (due after the span)."""

    first_ms: int | None = None
    last_ms: int | None = None
    labels_not_due: int = 0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


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
    stats: ProduceStats | None = None,
) -> dict[str, int]:
    """Produce the scenario to ``settings.topics`` (malformed events go to the predictions topic);
    returns the count per event kind once the broker acknowledged everything. ``stats`` (if given)
    gets the event-time span written. Raises ValueError for a full-speed run that does not lie in
    the past."""
    scenario = scenario.resolved()
    stats = stats if stats is not None else ProduceStats()
    span_end_ms = scenario.start_ms() + int(scenario.duration_s * 1000)
    paced = scenario.speed != "max"
    if not paced and span_end_ms > _now_ms():
        raise ValueError(
            "the simulated span ends in the future: at full speed it must lie in the past (omit "
            "--start to back-fill the span ending now, or pace it with --speed realtime)"
        )
    counts: Counter[str] = Counter()
    producer = aiokafka_producer(settings)
    await producer.start()
    try:
        sender = BatchSender(producer)
        in_flight: list[list[Submitted]] = []
        chunk: list[OutRecord] = []
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
            ts = event.timestamp_ms
            if ts > span_end_ms and ts > _now_ms():  # a label due after the run: not known yet
                stats.labels_not_due += 1
                continue
            if paced:
                due = wall0 + (ts - start_ms) / 1000 / float(scenario.speed)
                # ... and never before the wall clock reaches the event time
                wait = max(due - time.monotonic(), (ts - _now_ms()) / 1000)
                if wait > 0:
                    if chunk:
                        await send_chunk()
                    await asyncio.sleep(wait)
            chunk.append(OutRecord(_topic(settings, event), event.key, event.value, ts))
            counts[event.kind] += 1
            stats.first_ms = ts if stats.first_ms is None else min(stats.first_ms, ts)
            stats.last_ms = ts if stats.last_ms is None else max(stats.last_ms, ts)
            if len(chunk) >= CHUNK:
                await send_chunk()
        if chunk:
            await send_chunk()
        for submitted in in_flight:
            await _await_all(submitted)
    finally:
        await producer.stop()
    return dict(counts)


def write_jsonl(scenario: Scenario, out_dir: Path, stats: ProduceStats | None = None) -> dict[str, int]:
    """Write predictions.jsonl (valid and malformed), labels.jsonl and ground_truth.json; as
    :func:`produce`, labels due after the span and after now are left out (``stats`` says how many,
    and the span written)."""
    scenario = scenario.resolved()
    stats = stats if stats is not None else ProduceStats()
    span_end_ms = scenario.start_ms() + int(scenario.duration_s * 1000)
    now_ms = _now_ms()
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    with (out_dir / "predictions.jsonl").open("wb") as preds, (out_dir / "labels.jsonl").open("wb") as labels:
        for event in generate(scenario):
            if event.timestamp_ms > span_end_ms and event.timestamp_ms > now_ms:
                stats.labels_not_due += 1
                continue
            (labels if event.kind == "labels" else preds).write(event.value + b"\n")
            counts[event.kind] += 1
            ts = event.timestamp_ms
            stats.first_ms = ts if stats.first_ms is None else min(stats.first_ms, ts)
            stats.last_ms = ts if stats.last_ms is None else max(stats.last_ms, ts)
    truth = orjson.dumps(ground_truth(scenario), option=orjson.OPT_INDENT_2)
    (out_dir / "ground_truth.json").write_bytes(truth)
    return dict(counts)
