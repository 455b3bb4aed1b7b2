"""A stage's base checkpoint written beside batches (StageRunner + ``base_copy``), on the embedded
broker, with a checkpoint store whose base writes wait for a gate the test opens: batches go on
while a base is in flight, no other link of its shard is written until it is acknowledged, stop
waits for it, and its offsets are those of the copy."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

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
from driftline.pipeline.state import BaseCopy, dump_state, load_state
from driftline.streams import runner
from driftline.streams.checkpoint import CheckpointStore
from driftline.streams.runner import StageRunner

pytestmark = pytest.mark.integration

STAGE = "basestage"
Producing = Callable[..., Awaitable[None]]  # conftest produce_keyed
Waiting = Callable[..., Awaitable[None]]  # conftest wait_async
TOTAL_EVERY = 7
N_KEYS = 40


class IncrementalCounter:
    """Counts records per key; emits each record's echo and a running total every TOTAL_EVERY of
    a key (outputs that depend on the input log alone). Deltas carry the keys counted since the
    last checkpoint."""

    def __init__(self, shard: int, out_topic: str, counts: Mapping[str, int] | None = None) -> None:
        self.shard, self.out_topic = shard, out_topic
        self.counts: Counter[str] = Counter(counts or {})
        self.changed: set[str] | None = None

    def process(self, records: Sequence[RawRecord]) -> list[OutboundMessage]:
        out = []
        for r in records:
            echo = f"echo:{r.topic}:{r.partition}:{r.offset}".encode()
            out.append(OutboundMessage(self.out_topic, echo, b""))
            key = (r.key or b"").decode()
            self.counts[key] += 1
            if self.changed is not None:
                self.changed.add(key)
            if self.counts[key] % TOTAL_EVERY == 0:
                out.append(OutboundMessage(self.out_topic, f"total:{key}:{self.counts[key]}".encode(), b""))
        return out

    def snapshot(self) -> bytes:
        return dump_state({"shard": self.shard, "counts": dict(self.counts)})

    def gauges(self) -> list[Gauge]:
        return []

    def track_changes(self) -> None:
        self.changed = set()

    def changed_records(self) -> int:
        return len(self.changed or ())

    def checkpoint(self, base: bool) -> bytes:
        changed, self.changed = self.changed or set(), set()
        if base:
            return self.snapshot()
        return b"D" + orjson.dumps({key: self.counts[key] for key in changed})

    def base_copy(self) -> BaseCopy:
        self.changed = set()
        return BaseCopy({"shard": self.shard, "counts": dict(self.counts)}, release=lambda: None)


class IncrementalCounterFactory:
    def __init__(self, out_topic: str) -> None:
        self.out_topic = out_topic

    def create(self, shard: int) -> IncrementalCounter:
        return IncrementalCounter(shard, self.out_topic)

    def restore(self, shard: int, blob: bytes, deltas: Sequence[bytes] = ()) -> IncrementalCounter:
        state = load_state(blob, dict, f"test shard {shard}")
        assert state["shard"] == shard
        counts: Counter[str] = Counter(state["counts"])
        for delta in deltas:
            assert delta[:1] == b"D"
            counts.update({key: value - counts[key] for key, value in orjson.loads(delta[1:]).items()})
        return IncrementalCounter(shard, self.out_topic, counts)


class GatedStore(CheckpointStore):
    """The real checkpoint store; a base write waits for ``gate`` while it is closed, and each link
    written is recorded."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        super().__init__(settings, producer)
        self.gate = asyncio.Event()
        self.gate.set()
        self.started: list[tuple[int, bool]] = []  # (shard, base) of every write begun
        self.links: list[tuple[int, bool, str, str | None, dict[tuple[str, int], int]]] = []

    async def save_link(self, stage: str, shard: int, blob: bytes, offsets: Mapping[tuple[str, int], int],
                        *, base: bool, parent: str | None, **blocking: Any) -> str:
        self.started.append((shard, base))
        if base:
            await self.gate.wait()
        checkpoint_id = await super().save_link(stage, shard, blob, offsets, base=base, parent=parent,
                                                **blocking)
        self.links.append((shard, base, checkpoint_id, parent, dict(offsets)))
        return checkpoint_id


@pytest.fixture
def base_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    # These counters' states are bytes: their later bases come from the delta ratio, which now
    # applies only to chains over RATIO_FLOOR_BYTES; the bases in flight are what is tested here.
    monkeypatch.setattr(runner, "RATIO_FLOOR_BYTES", 0)
    s = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"session_timeout_ms": 3000, "heartbeat_interval_ms": 500,
                                                   "rebalance_timeout_ms": 3000}),
        "worker": settings.worker.model_copy(update={"checkpoint_interval_s": 0.3, "batch_max_records": 50,
                                                     "checkpoint_deltas_per_base": 3}),
    })
    ensure_topics(s)
    return s


async def _outputs(settings: Settings) -> list[bytes]:
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topics.outcomes, p) for p in range(settings.topics.partitions)]
        end = await end_offsets(consumer, tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[bytes] = []
        while any([await consumer.position(tp) < offset for tp, offset in end.items()]):
            for records in (await consumer.getmany(timeout_ms=500)).values():
                out.extend(r.key or b"" for r in records)
        return out
    finally:
        await consumer.stop()


class _Run:
    """One runner with its own producer and gated store, run as a task."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def __aenter__(self) -> _Run:
        s = self.settings
        self.producer = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
        await self.producer.start()
        self.store = GatedStore(s, self.producer)
        await self.store.start()
        self.runner = StageRunner(s, STAGE, f"g-{s.topics.state}", [s.topics.predictions, s.topics.labels],
                                  IncrementalCounterFactory(s.topics.outcomes), producer=self.producer,
                                  checkpoints=self.store)
        self.task = asyncio.create_task(self.runner.run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for state in list(self.runner.shards.values()):
            if state.base_in_flight is not None:
                state.base_in_flight.cancel()
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(self.task, 30)
        await self.store.stop()
        await self.producer.stop()

    def fed(self) -> int:
        return sum(sum(state.offsets.values()) for state in self.runner.shards.values())

    def in_flight(self) -> list[int]:
        return [shard for shard, state in self.runner.shards.items() if state.base_in_flight is not None]


def _totals(keys: list[bytes]) -> set[bytes]:
    return {k for k in keys if k.startswith(b"total:")}


def _simulated_totals(settings: Settings, keys_by_shard: dict[int, list[str]]) -> set[bytes]:
    out: set[bytes] = set()
    for keys in keys_by_shard.values():
        counts: Counter[str] = Counter()
        for key in keys:
            counts[key] += 1
            if counts[key] % TOTAL_EVERY == 0:
                out.add(f"total:{key}:{counts[key]}".encode())
    return out


async def _input_keys(settings: Settings) -> dict[int, list[str]]:
    consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(settings, None))
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in (settings.topics.predictions, settings.topics.labels)
               for p in range(settings.topics.partitions)]
        end = await end_offsets(consumer, tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        keys: dict[int, list[str]] = {}
        while any([await consumer.position(tp) < offset for tp, offset in end.items()]):
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                keys.setdefault(tp.partition, []).extend((r.key or b"").decode() for r in records)
        return keys
    finally:
        await consumer.stop()


def test_batches_go_on_while_a_base_is_written_and_its_shard_writes_no_link_until_it_is_acked(
    base_settings: Settings, produce_keyed: Producing, wait_async: Waiting,
) -> None:
    asyncio.run(_batches_go_on_while_a_base_is_written(base_settings, produce_keyed, wait_async))


async def _batches_go_on_while_a_base_is_written(s: Settings, produce: Producing, wait: Waiting) -> None:
    await produce(s, 400)
    async with _TurnRun(s, "restarted") as run:
        run.store.gate.clear()  # every base waits
        shards = s.topics.partitions
        await wait(lambda: len(run.in_flight()) == shards, "a base in flight for every shard")
        fed_at_copy = run.fed()
        await produce(s, 1500, start=400)
        # batches go on: records fed past the copy while no base was acknowledged
        await wait(lambda: run.fed() >= fed_at_copy + 2 * 1500, "every new record fed, bases in flight")
        assert len(run.in_flight()) == shards and run.store.links == []
        assert all(base for _, base in run.store.started), "a delta begun while its shard's base was out"
        run.store.gate.set()

        def deltas_after_bases() -> bool:
            bases = {shard: ckpt for shard, base, ckpt, _, _ in run.store.links if base}
            return all(any(sh == shard and not base and parent == bases.get(shard)
                           for sh, base, _, parent, _ in run.store.links) for shard in range(shards))

        await wait(deltas_after_bases, "a delta following each shard's base")
        first_bases = [link for link in run.store.links if link[1]][:shards]
        # each base holds the offsets of its copy, taken before the records that came after
        assert sum(sum(offsets.values()) for *_, offsets in first_bases) <= fed_at_copy < run.fed()
        # stop waits for a base in flight: the next bases are held, then stop is asked
        run.store.gate.clear()
        await produce(s, 300, start=1900)
        await wait(lambda: bool(run.in_flight()), "a later base in flight")
        # every record fed before stop is asked (its outputs are compared below with all the input):
        # on a busy box a base could go out before the last records were read
        await wait(lambda: run.fed() >= 2 * (400 + 1500 + 300), "every record fed, a base in flight")
        held = run.in_flight()
        bases = Counter(shard for shard, base, *_ in run.store.links if base)
        run.runner.stop()
        await wait(lambda: run.runner._stopping.is_set() and run.runner._lock.locked(), "stop's checkpoint")
        assert not run.task.done()
        run.store.gate.set()
        await asyncio.wait_for(run.task, 60)
        after = Counter(shard for shard, base, *_ in run.store.links if base)
        assert all(after[shard] > bases[shard] for shard in held), "stop returned before a base's ack"
        assert not run.in_flight()
    keys = await _outputs(s)
    assert len(keys) == len(set(keys)), "an output was produced twice without a failure"
    assert _totals(keys) == _simulated_totals(s, await _input_keys(s))


def test_the_restore_estimate_prices_a_base_with_a_local_copy_at_the_local_read_speed(
    base_settings: Settings, tmp_path: Any, produce_keyed: Producing, wait_async: Waiting,
) -> None:
    asyncio.run(_restore_estimate_with_a_local_copy(base_settings, tmp_path / "state", produce_keyed,
                                                    wait_async))


def _base_figures(run: _Run) -> dict[int, tuple[float, float, float]]:
    """Per shard: whether the estimate reads the base locally, at what speed, and the estimate."""
    return {shard: (f["restore_base_local"], f["restore_base_read_mb_per_s"], f["restore_estimate_seconds"])
            for shard, state in run.runner.shards.items()
            if "restore_base_local" in (f := state.restore_figures)}


async def _restore_estimate_with_a_local_copy(s: Settings, state_dir: Any, produce: Producing,
                                              wait: Waiting) -> None:
    local = s.model_copy(update={"worker": s.worker.model_copy(update={"state_dir": state_dir})})
    shards = s.topics.partitions
    await produce(s, 200)
    async with _Run(local) as run:  # every shard writes its base and keeps a copy of it
        await wait(lambda: len(_base_figures(run)) == shards, "a base acknowledged for every shard")
        costs = run.runner.restore_costs
        for shard, (is_local, speed, estimate) in _base_figures(run).items():
            chain = run.runner.shards[shard].chain
            assert chain is not None and is_local == 1.0 and speed == costs.local_read_mb_per_s
            assert chain.local_base and estimate == chain.restore_seconds(costs)
            broker = costs.seconds(chain.base_bytes, chain.delta_bytes, chain.changed)
            assert estimate < broker
        run.runner.stop()
        await asyncio.wait_for(run.task, 60)
    async with _Run(local) as run:  # a restart on the same disk: the bases come from their copies
        await wait(lambda: len(_base_figures(run)) == shards, "every shard restored")
        assert all(state.restore_figures["restore_local_bytes"] > 0 for state in run.runner.shards.values())
        assert all(is_local == 1.0 for is_local, _, _ in _base_figures(run).values())
        run.runner.stop()
        await asyncio.wait_for(run.task, 60)
    async with _Run(s) as run:  # no state_dir: read from the broker, priced at the broker's speed
        await wait(lambda: len(_base_figures(run)) == shards, "every shard restored")
        speed = run.runner.restore_costs.read_mb_per_s
        assert all(figures[:2] == (0.0, speed) for figures in _base_figures(run).values())


class TurnStore(GatedStore):
    """A gated store that, once ``watching``, records how many of the runner's shards had a base
    in flight as each base write began (the shard writing it included)."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer) -> None:
        super().__init__(settings, producer)
        self.runner: StageRunner | None = None
        self.watching = False
        self.in_flight_at_base: list[int] = []

    async def save_link(self, stage: str, shard: int, blob: bytes, offsets: Mapping[tuple[str, int], int],
                        *, base: bool, parent: str | None, **blocking: Any) -> str:
        if base and self.watching and self.runner is not None:
            self.in_flight_at_base.append(
                sum(state.base_in_flight is not None for state in self.runner.shards.values()))
        return await super().save_link(stage, shard, blob, offsets, base=base, parent=parent, **blocking)


class _TurnRun(_Run):
    """A run on a :class:`TurnStore`, in a consumer group of its own (``group``): a restart after
    a crash does not wait for the crashed member's session to time out."""

    def __init__(self, settings: Settings, group: str) -> None:
        super().__init__(settings)
        self.group = group

    async def __aenter__(self) -> _TurnRun:
        s = self.settings
        self.producer = AIOKafkaProducer(**aiokafka_producer_kwargs(s))
        await self.producer.start()
        self.store = self.turns = TurnStore(s, self.producer)
        await self.store.start()
        self.runner = StageRunner(s, STAGE, f"{self.group}-{s.topics.state}",
                                  [s.topics.predictions, s.topics.labels],
                                  IncrementalCounterFactory(s.topics.outcomes), producer=self.producer,
                                  checkpoints=self.store)
        self.turns.runner = self.runner
        self.task = asyncio.create_task(self.runner.run())
        return self


def test_shards_due_for_a_base_together_take_turns_one_base_in_flight_and_a_crash_restores_exactly(
    base_settings: Settings, produce_keyed: Producing, wait_async: Waiting,
) -> None:
    """Every shard's chain is due for a base at every other checkpoint (one delta a base): only one
    base is in flight at a time after the first bases (a shard without a chain cannot wait), the
    others write deltas and say they wait (``base_waiting``), every shard gets its base in turn,
    and a crash with bases deferred restores counts that give the same totals as the input."""
    s = base_settings.model_copy(update={
        "worker": base_settings.worker.model_copy(update={"checkpoint_deltas_per_base": 1})})
    asyncio.run(_shards_take_turns(s, produce_keyed, wait_async))


async def _shards_take_turns(s: Settings, produce: Producing, wait: Waiting) -> None:
    shards = s.topics.partitions
    produced = 200
    await produce(s, produced)
    feeding = asyncio.Event()

    async def keep_producing() -> None:  # every shard keeps changing, so each has a link to write
        nonlocal produced
        while feeding.is_set():
            await produce(s, 40, start=produced)
            produced += 40

    async with _TurnRun(s, "crashed") as run:
        await wait(lambda: len(run.runner.shards) == shards and not run.in_flight()
                   and all(state.chain is not None for state in run.runner.shards.values()),
                   "every shard's first base acknowledged")
        run.turns.watching = True
        run.store.gate.clear()  # the next base is held: every other shard comes due meanwhile
        closed_at = len(run.store.links)
        feeding.set()
        producer = asyncio.create_task(keep_producing())

        def deltas_since_closed(shard: int) -> int:
            return sum(sh == shard and not base for sh, base, *_ in run.store.links[closed_at:])

        await wait(lambda: bool(run.in_flight()) and all(
            shard in run.in_flight() or deltas_since_closed(shard) >= 2 for shard in range(shards)),
            "a base held and every other shard two checkpoints on")
        held = run.in_flight()
        assert len(held) == 1, f"bases in flight at once: shards {held}"
        figures = {shard: state.restore_figures for shard, state in run.runner.shards.items()}
        waiting = [shard for shard in range(shards) if figures[shard].get("base_waiting") == 1.0]
        assert sorted(waiting) == sorted(set(range(shards)) - set(held))
        assert all(figures[shard]["bases_deferred"] >= 1 for shard in waiting)
        bases_before = Counter(shard for shard, base, *_ in run.store.links if base)
        run.store.gate.set()
        await wait(lambda: all(sum(sh == shard and base for sh, base, *_ in run.store.links)
                               > bases_before[shard] for shard in range(shards)),
                   "a base acknowledged for every shard in turn")
        assert max(run.turns.in_flight_at_base) == 1, run.turns.in_flight_at_base
        # a crash (no checkpoint at the end) with a base held in flight and the others deferred
        run.store.gate.clear()
        closed_at = len(run.store.links)
        await wait(lambda: bool(run.in_flight()) and all(
            shard in run.in_flight() or deltas_since_closed(shard) >= 2 for shard in range(shards)),
            "a base held again and every other shard two deltas on")
        feeding.clear()
        await producer
    await produce(s, 200, start=produced)
    produced += 200
    async with _TurnRun(s, "restarted") as run:
        await wait(lambda: run.fed() == 2 * produced, "every record fed after the restart")
        restored = [state.restore_figures.get("restore_deltas", -1.0) for state in run.runner.shards.values()]
        assert min(restored) >= 1 and max(restored) >= 2, f"deltas each shard restored: {restored}"
        run.runner.stop()
        await asyncio.wait_for(run.task, 60)
    assert _totals(await _outputs(s)) == _simulated_totals(s, await _input_keys(s))
