"""StageRunner on the real embedded broker: the shards of an assignment take batches as each is
restored, not once every shard is (issue 19: restart to the first processed event).

The shards restored after the first are rebuilt by a task while the first takes batches, their
partitions paused until each is adopted at its checkpoint's offsets; the outputs stay those of
an uninterrupted run (the counting processor of ``test_streams_runner`` continues its totals
exactly after a restore), and a rebuild that fails stops the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from harness import load_module

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer_kwargs
from driftline.streams.checkpoint import CheckpointStore
from driftline.streams.runner import StageRunner, StageRunnerError

pytestmark = pytest.mark.integration


_rt = load_module(Path(__file__).with_name("test_streams_runner.py"), "runner_tests")  # tests/ is no package
STAGE, CountingFactory, CountingProcessor = _rt.STAGE, _rt.CountingFactory, _rt.CountingProcessor


class HeldFactory(CountingFactory):  # type: ignore[misc]
    """Restores as CountingFactory, but every restore after the first waits for ``release`` (or
    fails, ``fail``): the shards rebuilt after the first stay in their rebuild until the test says."""

    def __init__(self, out_topic: str, fail: bool = False) -> None:
        super().__init__(out_topic)
        self.release = threading.Event()
        self.fail = fail
        self.restored: list[int] = []

    def restore(self, shard: int, blob: bytes) -> Any:
        self.restored.append(shard)
        if len(self.restored) > 1:
            if self.fail:
                raise RuntimeError(f"test: restoring shard {shard} failed")
            assert self.release.wait(60), "the test never released the held restores"
        return super().restore(shard, blob)


@pytest.fixture
def stage_settings(settings: Settings) -> Settings:
    s = _rt.fast_settings(settings, checkpoint_interval_s=0.5, batch_max_records=500)
    ensure_topics(s)
    return s


async def _start(s: Settings, factory: HeldFactory, group: str
                 ) -> tuple[StageRunner, asyncio.Task[None], CheckpointStore, AIOKafkaProducer]:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
    await producer.start()
    store = CheckpointStore(s, producer)
    await store.start()
    runner = StageRunner(s, STAGE, group, [s.topics.predictions, s.topics.labels], factory,
                         producer=producer, checkpoints=store)
    return runner, asyncio.create_task(runner.run()), store, producer


def _wait(condition: Callable[[], bool], task: asyncio.Task[None], what: str) -> Any:
    return _rt.until_running(task, condition, what)


def test_restored_shard_takes_batches_while_the_others_restore(stage_settings: Settings) -> None:
    asyncio.run(_restored_shard_takes_batches_while_the_others_restore(stage_settings))


async def _restored_shard_takes_batches_while_the_others_restore(s: Settings) -> None:
    group = f"g-order-{s.topics.state}"
    await _rt.produce_inputs(s, 400)
    await _rt.run_until(s, group)  # every shard checkpointed at the end of the first 800 records
    await _rt.produce_inputs(s, 400)  # 800 more: what the restarted runner takes
    factory = HeldFactory(s.topics.outcomes)
    runner, task, store, producer = await _start(s, factory, group)
    try:
        # the first shard restored takes its new records while the others are held in their rebuild
        await _wait(lambda: len(factory.restored) == 2 and sum(runner.stats.records_in.values()) > 0,
                    task, "no batch was taken while the other shards restored")
        assert len(runner.shards) == 1 and set(runner.shards) == {factory.restored[0]}
        assert len(runner._restoring) == 3
        factory.release.set()
        await _wait(lambda: len(runner.shards) == 4 and not runner._restoring
                    and sum(runner.stats.records_in.values()) == 800 and not any(runner.lag().values()),
                    task, "the held shards did not catch up")
        assert runner.stats.restored_shards == 4
    finally:
        factory.release.set()
        runner.stop()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, 30)
        await store.stop()
        await producer.stop()
    outputs = await _rt.read_all(s, s.topics.outcomes)
    assert set(outputs) == _rt.simulate(s, await _rt.input_log(s))  # each shard's totals continue exactly


def test_a_failed_rebuild_stops_the_runner(stage_settings: Settings) -> None:
    asyncio.run(_a_failed_rebuild_stops_the_runner(stage_settings))


async def _a_failed_rebuild_stops_the_runner(s: Settings) -> None:
    group = f"g-fail-{s.topics.state}"
    await _rt.produce_inputs(s, 100)
    await _rt.run_until(s, group)
    factory = HeldFactory(s.topics.outcomes, fail=True)
    runner, task, store, producer = await _start(s, factory, group)
    try:
        with pytest.raises(StageRunnerError) as raised:
            await asyncio.wait_for(task, 45)
        assert isinstance(raised.value.__cause__, RuntimeError)
        assert len(factory.restored) == 2
    finally:
        runner.stop()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await store.stop()
        await producer.stop()
