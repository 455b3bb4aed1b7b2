"""The stage-1 runner finds idle partitions and lets their watermarks follow the others'.

Traffic on one partition of four (a low-traffic deployment, a producer that pins its partition):
the other three partitions' watermarks never moved, so stage 2 closed no window for anyone. With
``worker.idle_partition_s`` the runner sees a partition read to its end (the fetch's high
watermark) with no record for that long and calls the shard's ``follow_idle``. On the embedded
broker, the real stage-1 processors; the rows that follow are tested in process
(tests/test_shard_idle_partition.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from harness import load_module, stage_one_runner

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer_kwargs
from driftline.pipeline.reroute import NO_TIME
from driftline.streams.runner import StageRunner

_rt = load_module(Path(__file__).with_name("test_streams_runner.py"), "runner_tests_idle")


def _wait(condition: Callable[[], bool], task: asyncio.Task[None], what: str) -> Any:
    return _rt.until_running(task, condition, what)


async def _produce_to_partition_zero(s: Settings, n: int) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
    await producer.start()
    try:
        now = int(time.time() * 1000)
        for i in range(n):
            event = {"prediction_id": f"p{i}", "model_id": "m", "timestamp": now - (n - i) * 1_000,
                     "features": {"x": float(i)}, "prediction": {"label": "a"}}
            await producer.send(s.topics.predictions, orjson.dumps(event), key=f"p{i}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def _stage_one_fed(s: Settings, group: str) -> AsyncIterator[tuple[StageRunner, asyncio.Task[None]]]:
    """A stage-1 runner on every partition, once it has taken 120 predictions all on partition 0."""
    await _produce_to_partition_zero(s, 120)
    async with stage_one_runner(s, group) as (runner, task):
        await _wait(lambda: len(runner.shards) == s.topics.partitions
                    and sum(runner.stats.records_in.values()) >= 120,
                    task, "the runner did not take the records")
        yield runner, task


async def _idle_partitions_follow(s: Settings) -> tuple[list[int], list[int], int]:
    async with _stage_one_fed(s, "g-idle") as (runner, task):
        fed = runner.shards[0].processor.pred_watermark  # type: ignore[attr-defined]
        assert fed > NO_TIME
        await _wait(lambda: all(state.processor.pred_watermark == fed  # type: ignore[attr-defined]
                                for state in runner.shards.values()),
                    task, "the idle partitions' watermarks did not follow partition 0's")
        # Every predictions and labels partition is idle in the end, and only those: the
        # re-routing topic's partitions (quiet once the marks stop moving) are not counted.
        counts: list[int] = []
        checked = [runner._idle_checked_at]

        def three_more_checks() -> bool:
            if runner._idle_checked_at != checked[-1]:
                checked.append(runner._idle_checked_at)
                counts.append(runner.stats.idle_partitions)
            return len(counts) >= 3 and counts[-1] == 2 * s.topics.partitions

        await _wait(three_more_checks, task, "every watermarked partition counted idle")
        assert max(counts) == 2 * s.topics.partitions, counts
        marks = [runner.shards[p].processor.pred_watermark  # type: ignore[attr-defined]
                 for p in sorted(runner.shards)]
        advances = [int(runner.shards[p].processor.totals["idle_advances"])  # type: ignore[attr-defined]
                    for p in sorted(runner.shards)]
        return marks, advances, runner.stats.idle_partitions


def test_idle_partitions_follow_the_one_with_traffic(settings: Settings) -> None:
    s = _rt.fast_settings(settings, idle_partition_s=1.0, checkpoint_interval_s=0.5)
    ensure_topics(s)
    marks, advances, idle = asyncio.run(_idle_partitions_follow(s))
    assert len(set(marks)) == 1 and len(marks) == s.topics.partitions
    assert advances[0] == 0 and all(advances[1:])  # partition 0 had the traffic: it never followed
    assert idle >= s.topics.partitions - 1


async def _silent_partitions_move_on(s: Settings) -> tuple[int, list[int], list[int], float]:
    started = time.monotonic()  # the marks cannot have stopped before this
    async with _stage_one_fed(s, "g-silent") as (runner, task):
        fed = runner.shards[0].processor.pred_watermark  # type: ignore[attr-defined]
        assert fed > NO_TIME
        # Every partition silent (the others follow partition 0, then nothing moves): each shard's
        # watermark moves on with wall time, past where the traffic left it.
        await _wait(lambda: all(state.processor.pred_watermark > fed + 1_000  # type: ignore[attr-defined]
                                for state in runner.shards.values()),
                    task, "the silent partitions' watermarks did not move on")
        elapsed = time.monotonic() - started
        marks = [runner.shards[p].processor.pred_watermark  # type: ignore[attr-defined]
                 for p in sorted(runner.shards)]
        advances = [int(runner.shards[p].processor.totals["silent_advances"])  # type: ignore[attr-defined]
                    for p in sorted(runner.shards)]
        return fed, marks, advances, elapsed


def test_a_silence_of_every_partition_moves_the_watermarks_on(settings: Settings) -> None:
    s = _rt.fast_settings(settings, idle_partition_s=1.0, silent_predictions_s=1.0, checkpoint_interval_s=0.5)
    ensure_topics(s)
    fed, marks, advances, elapsed = asyncio.run(_silent_partitions_move_on(s))
    assert all(advances), advances
    # wall time, a silence (1 s) behind: never further than the time since the traffic stopped
    assert all(fed + 1_000 < mark <= fed + elapsed * 1_000 for mark in marks), (fed, marks, elapsed)
