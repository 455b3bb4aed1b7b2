"""stop() during an outage of the checkpoints' producer while a stage-1 base is in flight (written
beside batches), on a real broker: once an attempt of it failed the base is given up at once, not
awaited for the producer's request timeout; nothing is checkpointed after it (the shard's chain
on the broker still ends at the link before it); a next owner restores exactly.

The base is held by a gate until the "checkpoints" client is cut (:class:`ClientCutProxy` of
tests/test_streams_runner_outage.py), so its attempts are the ones the cut refuses."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from harness import ProxiedBroker, load_module

from driftline.config import Settings
from driftline.kafka.admin import ensure_topics
from driftline.streams.checkpoint import CheckpointStore
from driftline.streams.runner import StageRunner

pytestmark = pytest.mark.integration

oh = load_module(Path(__file__).with_name("test_streams_runner_outage.py"), "runner_outage_harness_base")
bh = load_module(Path(__file__).with_name("test_streams_runner_base.py"), "runner_base_harness_outage")
cut_broker = oh.cut_broker  # a broker behind a proxy that cuts one Kafka client id's connections

Producing = Callable[..., Awaitable[None]]  # conftest produce_keyed
REQUEST_TIMEOUT_MS = 10_000  # each attempt at the cut producer fails after this
STOPPED_WITHIN_S = 3.0  # stop() to run()'s return once an attempt of the base failed


def test_stop_during_an_outage_gives_a_base_in_flight_up_and_the_next_owner_restores_exactly(
        cut_broker: ProxiedBroker, settings: Settings, produce_keyed: Producing) -> None:
    """A base in flight, its first attempt failed and its second under way when stop() comes:
    run() returns within STOPPED_WITHIN_S, far below the attempt's REQUEST_TIMEOUT_MS."""
    s = oh.rh.fast_settings(settings, checkpoint_interval_s=0.3, batch_max_records=50,
                            checkpoint_deltas_per_base=1)  # a base due at every other checkpoint
    s = s.model_copy(update={"kafka": s.kafka.model_copy(update={
        "bootstrap_servers": cut_broker.bootstrap_servers})})
    ensure_topics(s)
    asyncio.run(_base_given_up(s, cut_broker.proxy, produce_keyed))


async def _base_given_up(s: Settings, proxy: Any, produce: Producing) -> None:
    assert isinstance(proxy, oh.ClientCutProxy)
    clients = await oh.CutClients.start(s, REQUEST_TIMEOUT_MS)
    store = bh.GatedStore(s, clients.checkpoints)  # its bases wait while the gate is closed
    await store.start()
    retried: list[int] = []  # the shards whose base began an attempt after a failed one
    save_link = store.save_link

    async def noted_save_link(stage: str, shard: int, blob: bytes, offsets: Mapping[tuple[str, int], int],
                              *, base: bool, parent: str | None, **blocking: Any) -> str:
        if base:
            wait = blocking["wait"]

            async def retry_wait(seconds: float) -> None:
                await wait(seconds)
                retried.append(shard)

            blocking["wait"] = retry_wait
        return str(await save_link(stage, shard, blob, offsets, base=base, parent=parent, **blocking))

    store.save_link = noted_save_link
    runner = StageRunner(s, bh.STAGE, "base-outage", [s.topics.predictions, s.topics.labels],
                         bh.IncrementalCounterFactory(s.topics.outcomes), producer=clients.outputs,
                         checkpoints=store)
    task = asyncio.create_task(runner.run())
    produced = 200
    feeding = asyncio.Event()

    async def keep_producing() -> None:  # every shard keeps changing: its chain comes due for a base
        nonlocal produced
        while feeding.is_set():
            await produce(s, 40, start=produced)
            produced += 40

    def until(done: Callable[[], bool], what: str) -> Awaitable[None]:
        return oh.rh.until_running(task, done, what, detail=lambda: runner.stats)

    def in_flight() -> list[int]:
        return [shard for shard, state in runner.shards.items() if state.base_in_flight is not None]

    feeder: asyncio.Task[None] | None = None
    try:
        await produce(s, produced)
        await until(lambda: len(runner.shards) == s.topics.partitions and not in_flight()
                    and not any(runner.lag().values())
                    and all(state.chain is not None and not state.dirty for state in runner.shards.values()),
                    "every shard's first base acknowledged")
        store.gate.clear()
        feeding.set()
        feeder = asyncio.create_task(keep_producing())
        await until(lambda: bool(in_flight()), "a later base in flight")
        feeding.clear()
        await feeder
        [shard] = in_flight()  # one base in flight per runner
        before = [ckpt for sh, _, ckpt, _, _ in store.links if sh == shard][-1]  # its chain's last link
        proxy.cut_client("checkpoints")
        store.gate.set()
        await until(lambda: shard in retried, "the base's first attempt failed and a second begun")
        acknowledged, checkpoints = len(store.links), runner.stats.checkpoints
        runner.stop()
        started = time.monotonic()
        await asyncio.wait([task], timeout=REQUEST_TIMEOUT_MS / 1000 + 10)
        stopped_in = time.monotonic() - started
        assert task.done() and task.exception() is None, stopped_in
        assert stopped_in < STOPPED_WITHIN_S, stopped_in  # not the second attempt awaited to its end
        assert len(store.links) == acknowledged and runner.stats.checkpoints == checkpoints, runner.stats
        # Still cut: none of the base's chunks can land now; the chain read back ends before it.
        reader = CheckpointStore(s, clients.inputs)
        await reader.start()
        try:
            latest = await reader.load_all(bh.STAGE, [shard])
            assert latest[shard].checkpoint_id == before
            for checkpoint in latest.values():
                checkpoint.close()
        finally:
            await reader.stop()
    finally:
        proxy.restore_client("checkpoints")
        feeding.clear()
        if feeder is not None:
            await feeder
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await store.stop()
        await clients.stop()
    await produce(s, 200, start=produced)  # the next owner goes on past the restored chains
    produced += 200
    async with bh._Run(s) as run:  # another group: no wait for the stopped member's session
        await oh.rh.until_running(run.task, lambda: run.fed() == 2 * produced,
                                  "every record fed after the restart")
        run.runner.stop()
        await asyncio.wait_for(run.task, 60)
    assert bh._totals(await bh._outputs(s)) == bh._simulated_totals(s, await bh._input_keys(s))
