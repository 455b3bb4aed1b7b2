"""StageRunner on the real embedded broker, with a test-only processor.

The processor echoes every record (key ``topic:partition:offset``) and, per record key, emits a
running total each time the key's count reaches a multiple of TOTAL_EVERY -- points that depend
only on the input log, so a restored checkpoint must continue with exactly the same values.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from driftline.kafka.offsets import end_offsets
from driftline.operators.validate import RawRecord
from driftline.pipeline.gauges import Gauge
from driftline.pipeline.stage import OutboundMessage
from driftline.streams.checkpoint import CheckpointStore
from driftline.streams.runner import StageRunner

pytestmark = pytest.mark.integration

TOTAL_EVERY = 7
N_KEYS = 50
STAGE = "teststage"


class CountingProcessor:
    def __init__(self, shard: int, out_topic: str, counts: dict[str, int] | None = None,
                 delay_s: float = 0.0) -> None:
        self.shard = shard
        self.out_topic = out_topic
        self.counts: Counter[str] = Counter(counts or {})
        self.delay_s = delay_s

    def process(self, records: Sequence[RawRecord]) -> list[OutboundMessage]:
        if self.delay_s:
            time.sleep(self.delay_s)  # test-only: make the stream slow enough to be killed mid-way
        out = []
        for r in records:
            echo = f"echo:{r.topic}:{r.partition}:{r.offset}".encode()
            out.append(OutboundMessage(self.out_topic, echo, b""))
            key = (r.key or b"").decode()
            self.counts[key] += 1
            if self.counts[key] % TOTAL_EVERY == 0:
                out.append(OutboundMessage(self.out_topic, f"total:{key}:{self.counts[key]}".encode(),
                                           str(self.counts[key]).encode()))
        return out

    def snapshot(self) -> bytes:
        return orjson.dumps({"shard": self.shard, "counts": self.counts})

    def gauges(self) -> list[Gauge]:
        return [Gauge("keys", float(len(self.counts)))]


class CountingFactory:
    def __init__(self, out_topic: str, delay_s: float = 0.0) -> None:
        self.out_topic = out_topic
        self.delay_s = delay_s

    def create(self, shard: int) -> CountingProcessor:
        return CountingProcessor(shard, self.out_topic, delay_s=self.delay_s)

    def restore(self, shard: int, blob: bytes) -> CountingProcessor:
        data = orjson.loads(blob)
        assert data["shard"] == shard
        return CountingProcessor(shard, self.out_topic, data["counts"], self.delay_s)


def fast_settings(settings: Settings, **worker: object) -> Settings:
    """Short group timeouts (Tansu holds JoinGroup for half the session timeout)."""
    return settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"session_timeout_ms": 3000, "heartbeat_interval_ms": 500,
                                                   "rebalance_timeout_ms": 3000}),
        "worker": settings.worker.model_copy(update=worker),
    })


async def produce_inputs(settings: Settings, n_per_topic: int) -> None:
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    try:
        for topic in (settings.topics.predictions, settings.topics.labels):
            for i in range(n_per_topic):
                await producer.send(topic, b"x", key=f"k{i % N_KEYS}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        end = await end_offsets(consumer, tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[bytes, bytes]] = []
        while await behind(consumer, end):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend((r.key, r.value) for r in records)
        return out
    finally:
        await consumer.stop()


async def behind(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    return any([await consumer.position(tp) < offset for tp, offset in end.items()])


async def count_messages(settings: Settings, topic: str) -> int:
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
        return sum((await end_offsets(consumer, tps)).values())
    finally:
        await consumer.stop()


async def until_running(task: asyncio.Task[None], done: Callable[[], bool], what: str, *,
                        detail: Callable[[], object] = lambda: "", timeout_s: float = 60.0) -> None:
    """Poll ``done`` every 50 ms while the runner's ``task`` runs; fail, naming ``what`` (and
    ``detail()``), at the deadline or as soon as the runner ends first."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert not task.done(), f"the runner stopped: {task.exception() if not task.cancelled() else ''}"
        assert time.monotonic() < deadline, f"timed out waiting for {what} {detail()}"
        await asyncio.sleep(0.05)


def make_runner(settings: Settings, producer: AIOKafkaProducer, store: CheckpointStore, group: str,
                delay_s: float = 0.0) -> StageRunner:
    return StageRunner(settings, STAGE, group, [settings.topics.predictions, settings.topics.labels],
                       CountingFactory(settings.topics.outcomes, delay_s), producer=producer,
                       checkpoints=store)


async def run_until(settings: Settings, group: str, done: asyncio.Event | None = None, *,
                    idle_s: float = 1.5, delay_s: float = 0.0, timeout_s: float = 60.0) -> StageRunner:
    """Run one runner until it has been idle (no lag, nothing new) for `idle_s`."""
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await producer.start()
    store = CheckpointStore(settings, producer)
    await store.start()
    runner = make_runner(settings, producer, store, group, delay_s)
    task = asyncio.create_task(runner.run())
    try:
        deadline = time.monotonic() + timeout_s
        last_change, last_seen = time.monotonic(), -1
        while time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.2)
            seen = sum(runner.stats.records_in.values())
            lag = runner.lag()
            if seen != last_seen or not lag or any(lag.values()):
                last_change, last_seen = time.monotonic(), seen
            elif time.monotonic() - last_change >= idle_s:
                break
        runner.stop()
        await asyncio.wait_for(task, 30)
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await store.stop()
        await producer.stop()
    return runner


def simulate(settings: Settings,
             inputs: dict[tuple[str, int], list[tuple[int, bytes]]]) -> set[tuple[bytes, bytes]]:
    """The outputs of the processor fed each shard's records in any interleaving of its partitions."""
    out: set[tuple[bytes, bytes]] = set()
    for shard in range(settings.topics.partitions):
        proc = CountingProcessor(shard, "x")
        for topic in (settings.topics.predictions, settings.topics.labels):
            recs = [RawRecord(topic, shard, off, 0, key, b"x") for off, key in inputs.get((topic, shard), [])]
            out.update((m.key or b"", m.value) for m in proc.process(recs))
    return out


async def input_log(settings: Settings) -> dict[tuple[str, int], list[tuple[int, bytes]]]:
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in (settings.topics.predictions, settings.topics.labels)
               for p in range(settings.topics.partitions)]
        end = await end_offsets(consumer, tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        log: dict[tuple[str, int], list[tuple[int, bytes]]] = {}
        while await behind(consumer, end):
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                log.setdefault((tp.topic, tp.partition), []).extend((r.offset, r.key) for r in records)
        return log
    finally:
        await consumer.stop()


@pytest.fixture
def stage_settings(settings: Settings) -> Settings:
    s = fast_settings(settings, checkpoint_interval_s=0.5, batch_max_records=500)
    ensure_topics(s)
    return s


def test_uninterrupted_run_processes_every_record_once(stage_settings: Settings) -> None:
    asyncio.run(_uninterrupted_run_processes_every_record_once(stage_settings))


async def _uninterrupted_run_processes_every_record_once(stage_settings: Settings) -> None:
    s = stage_settings
    await produce_inputs(s, 3000)
    runner = await run_until(s, f"g-{s.topics.state}")
    outputs = await read_all(s, s.topics.outcomes)
    expected = simulate(s, await input_log(s))
    assert sum(runner.stats.records_in.values()) == 6000
    assert len(outputs) == len(expected)  # exactly once: no duplicates without a failure
    assert set(outputs) == expected
    assert runner.stats.checkpoints >= 4
    assert runner.stats.created_shards == 4


def _child_main(argv: list[str]) -> None:
    """Entry point of the subprocess that the SIGKILL test kills (see _spawn)."""
    bootstrap, topics_json, group, delay = argv
    s = fast_settings(Settings(kafka={"bootstrap_servers": bootstrap}, topics=orjson.loads(topics_json)),
                      checkpoint_interval_s=0.3, batch_max_records=100)
    asyncio.run(run_until(s, group, delay_s=float(delay), idle_s=2.0, timeout_s=90))


def _spawn(s: Settings, group: str, delay_s: float) -> subprocess.Popen[bytes]:
    topics = s.topics.model_dump_json(include={"predictions", "labels", "outcomes", "state"})
    code = ("import importlib.util, sys; "
            f"spec = importlib.util.spec_from_file_location('runner_child', {str(Path(__file__))!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "m._child_main(sys.argv[1:])")
    return subprocess.Popen([sys.executable, "-c", code, s.bootstrap_servers(), topics, group, str(delay_s)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_mid_stream_then_restart_reproduces_outputs(stage_settings: Settings) -> None:
    asyncio.run(_sigkill_mid_stream_then_restart_reproduces_outputs(stage_settings))


async def _sigkill_mid_stream_then_restart_reproduces_outputs(stage_settings: Settings) -> None:
    s = stage_settings
    n = 4000
    await produce_inputs(s, n)
    group = f"g-kill-{s.topics.state}"
    children: list[subprocess.Popen[bytes]] = []
    try:
        for kill_at in (0.25, 0.6):
            child = _spawn(s, group, delay_s=0.01)
            children.append(child)
            deadline = time.monotonic() + 45
            while await count_messages(s, s.topics.outcomes) < kill_at * 2 * n:
                assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
                assert time.monotonic() < deadline, "child made no progress"
                await asyncio.sleep(0.1)
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        final = _spawn(s, group, delay_s=0.0)
        children.append(final)
        rc = await asyncio.to_thread(final.wait, 100)
        assert rc == 0, final.stderr.read().decode() if final.stderr else ""
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    outputs = await read_all(s, s.topics.outcomes)
    expected = simulate(s, await input_log(s))
    assert set(outputs) == expected  # same keys, and the totals continue exactly after restores
    assert len(outputs) >= len(expected)


def test_two_runners_in_one_group_split_copartitioned_shards(stage_settings: Settings) -> None:
    asyncio.run(_two_runners_in_one_group_split_copartitioned_shards(stage_settings))


async def _two_runners_in_one_group_split_copartitioned_shards(stage_settings: Settings) -> None:
    s = stage_settings
    await produce_inputs(s, 1000)
    group = f"g-split-{s.topics.state}"
    producer = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
    await producer.start()
    store = CheckpointStore(s, producer)
    await store.start()
    runners = [make_runner(s, producer, store, group) for _ in range(2)]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:
        deadline = time.monotonic() + 40
        while not (all(r.shards for r in runners) and sum(len(r.shards) for r in runners) == 4):
            assert time.monotonic() < deadline, [sorted(r.shards) for r in runners]
            assert not any(t.done() for t in tasks)
            await asyncio.sleep(0.2)
        owned = [set(r.shards) for r in runners]
        assert owned[0].isdisjoint(owned[1]) and owned[0] | owned[1] == {0, 1, 2, 3}
        assert all(len(o) == 2 for o in owned)
        for r in runners:
            for shard, state in r.shards.items():
                assert {tp.topic for tp in state.offsets} == {s.topics.predictions, s.topics.labels}
                assert {tp.partition for tp in state.offsets} == {shard}
        while sum(sum(r.stats.records_in.values()) for r in runners) < 2000 or any(
                any(r.lag().values()) for r in runners):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    finally:
        for r in runners:
            r.stop()
        await asyncio.wait(tasks, timeout=30)
        for t in tasks:
            t.cancel()
        await store.stop()
        await producer.stop()
    outputs = await read_all(s, s.topics.outcomes)
    assert set(outputs) == simulate(s, await input_log(s))

