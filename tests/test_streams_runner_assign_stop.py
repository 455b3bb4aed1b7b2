"""Partitions assigned to a stage runner once stop() came are not adopted, whenever stop() comes.

``_Rebalance`` skipped an assignment begun after stop() (ee6f39a), but one begun before it went
on: ``on_assigned`` waiting for the lock (a batch blocked in an outage holds it) then read every
chain and rebuilt the shards, and ``_restore_rest`` rebuilt and adopted the shards still waiting,
while run() waited for those rebuilds before it could return -- time wasted (a rebuild at 10M
pending takes ~20 s), nothing written. No broker is needed: the consumer and the checkpoint
store are stand-ins that record what the runner asked of them.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiokafka import TopicPartition

from driftline.config import Settings
from driftline.streams.runner import ShardState, StageRunner

SETTINGS = Settings(kafka={"bootstrap_servers": "127.0.0.1:9"})  # type: ignore[arg-type]
TOPICS = [SETTINGS.topics.predictions, SETTINGS.topics.labels]


class Consumer:
    """What on_assigned asks of the consumer: pausing, seeking, beginning offsets."""

    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.sought: dict[TopicPartition, int] = {}

    def pause(self, *tps: TopicPartition) -> None:
        self.paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused.difference_update(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return dict.fromkeys(tps, 0)


class Store:
    """A checkpoint store noting each load, which returns ``saved`` (no checkpoints by default)."""

    bytes_read = 0

    def __init__(self) -> None:
        self.loads: list[list[int]] = []
        self.saved: dict[int, Any] = {}
        self.during_load = lambda: None

    async def load_all(self, stage: str, shards: list[int]) -> dict[int, Any]:
        self.loads.append(list(shards))
        self.during_load()
        return dict(self.saved)


class Factory:
    def __init__(self) -> None:
        self.created: list[int] = []

    def create(self, shard: int) -> object:
        self.created.append(shard)
        return object()


def _runner() -> tuple[StageRunner, Consumer, Store, Factory]:
    store, factory, consumer = Store(), Factory(), Consumer()
    runner = StageRunner(SETTINGS, "assign", "g", TOPICS, factory=factory,  # type: ignore[arg-type]
                         producer=None,  # type: ignore[arg-type]
                         checkpoints=store)  # type: ignore[arg-type]
    runner._consumer = consumer  # type: ignore[assignment]
    return runner, consumer, store, factory


def test_an_assignment_waiting_for_the_lock_when_stop_comes_adopts_nothing() -> None:
    """on_assigned waits for the lock (the loop holds it, blocked on its outputs); stop() comes,
    the loop gives its batch up and lets go: no chain is read, no shard created, the assigned
    partitions stay paused for the next owner."""
    runner, consumer, store, factory = _runner()
    assigned = {TopicPartition(t, p) for t in TOPICS for p in (0, 1)}

    async def scenario() -> None:
        await runner._lock.acquire()
        task = asyncio.create_task(runner.on_assigned(assigned))
        while not runner._lock._waiters:  # type: ignore[attr-defined]
            await asyncio.sleep(0)
        runner.stop()
        runner._lock.release()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert store.loads == [] and factory.created == [] and runner.shards == {}
    assert consumer.paused == assigned and runner.stats.rebalances == 0


class _Chain:
    offsets: dict[tuple[str, int], int] = {}
    checkpoint_id, blob, delta_bytes, local_bytes, local_read_seconds = "c", b"", 0, 0, 0.0

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_rebuild_under_way_when_stop_comes_is_dropped_and_none_starts() -> None:
    """Two shards wait to be rebuilt after the first was adopted; stop() comes while the first of
    them is rebuilt in its thread: it is not adopted (nothing fed, nothing to checkpoint), the
    other is not rebuilt and its chain is let go."""
    runner, consumer, _, _ = _runner()
    rebuilding, go = threading.Event(), threading.Event()
    rebuilt: list[int] = []
    installed: list[int] = []

    def restore(shard: int, saved: Any, offsets: Any) -> object:
        rebuilt.append(shard)
        rebuilding.set()
        assert go.wait(5)
        saved.close()
        return object()

    async def install(consumer: Any, shard: int, state: Any, fresh: bool) -> None:
        installed.append(shard)

    runner._restore_closing = restore  # type: ignore[method-assign,assignment]
    runner._install = install  # type: ignore[method-assign]
    runner._restoring = {1, 2}
    chains = [(1, _Chain()), (2, _Chain())]

    async def scenario() -> None:
        task = asyncio.create_task(runner._restore_rest(consumer, chains))  # type: ignore[arg-type]
        assert await asyncio.to_thread(rebuilding.wait, 5)
        runner.stop()
        go.set()
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())
    assert rebuilt == [1] and installed == [] and runner.shards == {}
    assert all(chain.closed for _, chain in chains) and runner._restoring == set()
    assert runner._listener_error is None and runner.stats.restored_shards == 0


def test_an_assignment_whose_chains_were_being_read_when_stop_came_adopts_nothing() -> None:
    """stop() comes while on_assigned reads the chains (seconds at 10M pending): nothing is
    rebuilt or created, the chains read are let go, the partitions stay paused."""
    runner, consumer, store, factory = _runner()
    assigned = {TopicPartition(t, p) for t in TOPICS for p in (0, 1)}
    chain = _Chain()
    store.saved = {0: chain}
    store.during_load = runner.stop

    def restore(shard: int, saved: Any, offsets: Any) -> object:
        raise AssertionError(f"shard {shard} rebuilt after stop()")

    runner._restore = restore  # type: ignore[method-assign,assignment]
    asyncio.run(runner.on_assigned(assigned))
    assert store.loads == [[0, 1]] and chain.closed and factory.created == []
    assert runner.shards == {}
    assert consumer.paused == assigned and runner._restore_task is None


def test_the_first_rebuild_under_way_in_the_assignment_when_stop_comes_is_dropped() -> None:
    """Two chains assigned: the smaller is rebuilt inside on_assigned, the other left to the
    background task. stop() comes during the first rebuild: it is not adopted when it ends, the
    second is not rebuilt, both chains are let go and both shards' partitions stay paused."""
    runner, consumer, store, _ = _runner()
    assigned = {TopicPartition(t, p) for t in TOPICS for p in (0, 1)}
    chains = {0: _Chain(), 1: _Chain()}
    chains[1].blob = b"larger"  # rebuilt second
    store.saved = chains
    rebuilding, go = threading.Event(), threading.Event()
    rebuilt: list[int] = []

    def restore(shard: int, saved: Any, offsets: Any) -> ShardState:
        rebuilt.append(shard)
        rebuilding.set()
        assert go.wait(5)
        return ShardState(object(), dict(offsets), saved.checkpoint_id)  # type: ignore[arg-type]

    runner._restore = restore  # type: ignore[method-assign,assignment]
    runner._restore_closing = lambda shard, saved, offsets: restore(shard, saved, offsets)  # type: ignore[method-assign,assignment]

    async def scenario() -> None:
        task = asyncio.create_task(runner.on_assigned(assigned))
        assert await asyncio.to_thread(rebuilding.wait, 5)
        runner.stop()
        go.set()
        await asyncio.wait_for(task, 5)
        if runner._restore_task is not None:
            await asyncio.wait_for(runner._restore_task, 5)

    asyncio.run(scenario())
    assert rebuilt == [0] and runner.shards == {} and runner.stats.restored_shards == 0
    assert chains[0].closed and chains[1].closed and consumer.paused == assigned
