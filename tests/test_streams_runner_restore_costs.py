"""A restarted runner prices restores at the CPU costs its own restore measured (issue 19): the
base's unpickling and the deltas' apply timed apart (``TimedDeltas``, ``RestoreSample``), shown in
``/metrics`` (``restore_*_cpu_*``) and used by the restore bound for the next base. On the embedded
broker: a processor whose restore burns CPU on every delta makes the restarted runner write a
base at its first checkpoint, where the same chain and settings under the default costs (the
first run) wrote deltas."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.kafka.clients import aiokafka_producer_kwargs
from driftline.operators.validate import RawRecord
from driftline.pipeline.gauges import Gauge
from driftline.pipeline.stage import OutboundMessage
from driftline.pipeline.state import BaseCopy, dump_delta, dump_state, load_delta, load_state
from driftline.streams import runner
from driftline.streams.checkpoint import CheckpointStore
from driftline.streams.runner import RestoreCosts, StageRunner

pytestmark = pytest.mark.integration

STAGE = "coststage"
Producing = Callable[..., Awaitable[None]]  # conftest produce_keyed
Waiting = Callable[..., Awaitable[None]]  # conftest wait_async
N_KEYS = 40
BURN_S = 0.05  # CPU time a slow restore spends on each delta
TARGET_S = 0.005  # worker.restore_target_s: ~10x the default-priced chains of these counters, ~1/10 of BURN_S


def _burn(seconds: float) -> None:
    """Spend ``seconds`` of this thread's CPU time (a restore slower than the defaults assume)."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


class Counting:
    """Counts records per key; a delta carries the counts of the keys changed since the last link."""

    def __init__(self, shard: int, counts: Mapping[str, int] | None = None) -> None:
        self.shard = shard
        self.counts: Counter[str] = Counter(counts or {})
        self.changed: set[str] = set()

    def process(self, records: Sequence[RawRecord]) -> list[OutboundMessage]:
        for r in records:
            key = (r.key or b"").decode()
            self.counts[key] += 1
            self.changed.add(key)
        return []

    def snapshot(self) -> bytes:
        return dump_state({"shard": self.shard, "counts": dict(self.counts)})

    def gauges(self) -> list[Gauge]:
        return []

    def track_changes(self) -> None:
        self.changed = set()

    def changed_records(self) -> int:
        return len(self.changed)

    def checkpoint(self, base: bool) -> bytes:
        changed, self.changed = self.changed, set()
        if base:
            return self.snapshot()
        return dump_delta({key: self.counts[key] for key in changed}, records=len(changed))

    def base_copy(self) -> BaseCopy:
        self.changed = set()
        return BaseCopy({"shard": self.shard, "counts": dict(self.counts)}, release=lambda: None)


class CountingFactory:
    def __init__(self, burn_per_delta_s: float = 0.0) -> None:
        self.burn_per_delta_s = burn_per_delta_s

    def create(self, shard: int) -> Counting:
        return Counting(shard)

    def restore(self, shard: int, blob: bytes, deltas: Sequence[bytes] = ()) -> Counting:
        state = load_state(blob, dict, f"test shard {shard}")
        counts: Counter[str] = Counter(state["counts"])
        for delta in deltas:
            _burn(self.burn_per_delta_s)
            counts.update(load_delta(delta, "test delta"))
        return Counting(shard, counts)


class RecordingStore(CheckpointStore):
    """The real checkpoint store; every link written is recorded as (shard, base)."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        super().__init__(settings, producer)
        self.links: list[tuple[int, bool]] = []

    async def save_link(self, stage: str, shard: int, blob: bytes, offsets: Mapping[tuple[str, int], int],
                        *, base: bool, parent: str | None, **blocking: Any) -> str:
        checkpoint_id = await super().save_link(stage, shard, blob, offsets, base=base, parent=parent,
                                                **blocking)
        self.links.append((shard, base))
        return checkpoint_id


@pytest.fixture
def cost_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # these deltas carry a few records: any of them is a measurement here. The bases (a few hundred
    # bytes) stay under MIN_MEASURED_BASE_BYTES: a base priced at its fixed costs per MB would be
    # over the target alone, and such a base is not rewritten by the bound.
    monkeypatch.setattr(runner, "MIN_MEASURED_CHANGES", 1)
    s = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"session_timeout_ms": 3000, "heartbeat_interval_ms": 500,
                                                   "rebalance_timeout_ms": 3000}),
        "worker": settings.worker.model_copy(update={"checkpoint_interval_s": 0.3, "batch_max_records": 50,
                                                     "restore_target_s": TARGET_S}),
    })
    ensure_topics(s)
    return s


class _Run:
    """One runner with its own producer and recording store, run as a task."""

    def __init__(self, settings: Settings, factory: CountingFactory) -> None:
        self.settings, self.factory = settings, factory

    async def __aenter__(self) -> _Run:
        s = self.settings
        self.producer = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
        await self.producer.start()
        self.store = RecordingStore(s, self.producer)
        await self.store.start()
        self.runner = StageRunner(s, STAGE, f"g-{s.topics.state}", [s.topics.predictions, s.topics.labels],
                                  self.factory, producer=self.producer, checkpoints=self.store)
        self.task = asyncio.create_task(self.runner.run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.task, 30)
        await self.store.stop()
        await self.producer.stop()

    def links(self, shard: int) -> list[bool]:
        return [base for sh, base in self.store.links if sh == shard]

    async def stop(self) -> None:
        self.runner.stop()
        await asyncio.wait_for(self.task, 60)


def test_a_restart_prices_the_restore_bound_at_its_own_restores_cpu_costs(
    cost_settings: Settings, produce_keyed: Producing, wait_async: Waiting,
) -> None:
    asyncio.run(_restart_prices_at_measured_costs(cost_settings, produce_keyed, wait_async))


async def _restart_prices_at_measured_costs(s: Settings, produce: Producing, wait: Waiting) -> None:
    shards = range(s.topics.partitions)
    await produce(s, 200, start=0)
    async with _Run(s, CountingFactory()) as run:
        await wait(lambda: all(run.links(shard) for shard in shards), "a base for every shard")
        await produce(s, 200, start=200)
        await wait(lambda: all(False in run.links(shard) for shard in shards), "a delta a shard")
        await run.stop()
        # the control: at the default costs these chains are far inside the target, no base by it
        assert all(run.links(shard)[1:] == [False] * (len(run.links(shard)) - 1) for shard in shards)
        assert all(state.restore_figures["restore_delta_cpu_us_per_record"] == RestoreCosts().change_s * 1e6
                   and state.restore_figures["restore_delta_cpu_measured"] == 0.0
                   for state in run.runner.shards.values())
    async with _Run(s, CountingFactory(burn_per_delta_s=BURN_S)) as run:
        await wait(lambda: len(run.runner.shards) == len(shards) and not run.runner._restoring,
                    "every shard restored")
        costs, sample = run.runner.restore_costs, run.runner.restore_sample
        assert sample.delta_cpu_s >= BURN_S * len(shards)  # the burn is the deltas', timed apart
        assert costs.change_s == pytest.approx(sample.delta_cpu_s / sample.changed)
        assert costs.change_s > 100 * RestoreCosts().change_s
        for state in run.runner.shards.values():
            figures = state.restore_figures
            base_s = figures["restore_base_cpu_seconds"]
            assert base_s < BURN_S <= figures["restore_cpu_seconds"] - base_s
            assert figures["restore_delta_cpu_measured"] == 1.0
            assert figures["restore_base_cpu_measured"] == 0.0  # too few bytes: the default stands
            assert figures["restore_base_cpu_ms_per_mb"] == RestoreCosts().base_s_per_mb * 1e3
            assert figures["restore_delta_cpu_us_per_record"] >= 1000.0  # /metrics shows a measured figure
        assert figures["restore_delta_cpu_us_per_record"] == pytest.approx(costs.change_s * 1e6)
        written = len(run.store.links)
        await produce(s, 200, start=400)
        await wait(lambda: all(any(sh == shard for sh, _ in run.store.links[written:]) for shard in shards),
                    "a link a shard after the restart")
        first_after = {shard: next(base for sh, base in run.store.links[written:] if sh == shard)
                       for shard in shards}
        # one base in flight at a time: a shard due while another's base is out writes a delta and
        # waits for its turn (counted in bases_deferred)
        deferred = {shard: run.runner.shards[shard].restore_figures.get("bases_deferred", 0.0)
                    for shard in shards}
        due = {shard: first_after[shard] or deferred[shard] >= 1 for shard in shards}
        assert due == {shard: True for shard in shards}, "the measured costs did not make a base due"
        assert any(first_after.values())
        await run.stop()
