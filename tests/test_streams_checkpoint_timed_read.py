"""A live worker's broker read speed (issue 19): the deltas written after a shard's last base are
read back once a chain (``CheckpointStore.time_delta_read``, ``StageRunner._time_read``), so the
restore estimate stops pricing them at the default speed when the worker never restored."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaProducer

from driftline.config import Settings
from driftline.pipeline.stage import StageFactory, StageProcessor
from driftline.streams import runner as runner_module
from driftline.streams.checkpoint import CheckpointStore, chunk_count
from driftline.streams.runner import MIN_READ_BYTES, ChainLength, RestoreCosts, ShardState, StageRunner

# tests/conftest.py's run_with_producer fixture
RunWithProducer = Callable[[Settings, Callable[[AIOKafkaProducer], Awaitable[None]]], None]

CHUNK = 64 * 1024
BASE_BYTES, DELTA_BYTES = 300_000, 100_000
SLACK = chunk_count(DELTA_BYTES, CHUNK) * 1024  # the chunks' headers


@pytest.mark.integration
def test_the_store_reads_back_only_the_deltas_after_its_last_base(
        settings: Settings, run_with_producer: RunWithProducer) -> None:
    async def scenario(producer: AIOKafkaProducer) -> None:
        store = CheckpointStore(settings, producer, max_chunk_bytes=CHUNK, deliver_group_bytes=2 * CHUNK)
        await store.start()
        try:
            assert await store.time_delta_read("st", 0) is None  # no base written here
            link = await store.save_link("st", 0, os.urandom(BASE_BYTES), {("p", 0): 1}, base=True,
                                         parent=None)
            assert await store.time_delta_read("st", 0) is None  # nothing after it yet
            for i in range(3):
                link = await store.save_link("st", 0, os.urandom(DELTA_BYTES), {("p", 0): 2 + i}, base=False,
                                             parent=link)
            timed = await store.time_delta_read("st", 0)
            assert timed is not None
            read, seconds = timed
            assert 3 * DELTA_BYTES <= read <= 3 * (DELTA_BYTES + SLACK) and seconds > 0  # not the base
            link = await store.save_link("st", 0, os.urandom(BASE_BYTES), {("p", 0): 9}, base=True,
                                         parent=link)
            await store.save_link("st", 0, os.urandom(DELTA_BYTES), {("p", 0): 10}, base=False, parent=link)
            timed = await store.time_delta_read("st", 0)  # the new chain's one delta
            assert timed is not None and DELTA_BYTES <= timed[0] <= DELTA_BYTES + SLACK
            await store.load_all("st", [0])  # another process may have written since: unknown
            assert await store.time_delta_read("st", 0) is None
        finally:
            await store.stop()

    run_with_producer(settings, scenario)


class _Timer:
    def __init__(self, answer: tuple[int, float] | Exception | None) -> None:
        self.answer = answer
        self.calls: list[tuple[str, int]] = []

    async def time_delta_read(self, stage: str, shard: int) -> tuple[int, float] | None:
        self.calls.append((stage, shard))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _runner(tmp_path: Path, timer: _Timer) -> StageRunner:
    return StageRunner(Settings(home=tmp_path), "s1", "g", ["p"], cast(StageFactory, None),
                       producer=cast(Any, None), checkpoints=cast(CheckpointStore, timer))


def test_a_live_worker_times_a_chains_deltas_once_they_hold_enough(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        timer = _Timer((200_000_000, 2.0))
        runner = _runner(tmp_path, timer)
        chain = ChainLength(base_bytes=10**9, deltas=20, delta_bytes=MIN_READ_BYTES - 1)
        runner._time_read(0, chain)  # a read this small is mostly latency
        assert runner._read_timing is None and not timer.calls
        chain.delta_bytes = MIN_READ_BYTES
        runner._time_read(0, chain)
        assert runner._read_timing is not None
        await runner._read_timing
        assert runner.restore_costs.read_mb_per_s == 100.0 and timer.calls == [("s1", 0)]
        state = ShardState(cast(StageProcessor, None), {}, None)
        runner._estimate(state, chain)  # /metrics says which speed the estimate uses
        assert state.restore_figures["restore_delta_read_mb_per_s"] == 100.0
        runner._time_read(0, chain)  # once a chain
        assert runner._read_timing is None and len(timer.calls) == 1
        other = ChainLength(10**9, deltas=20, delta_bytes=MIN_READ_BYTES)
        runner._time_read(1, other)  # another shard's chain, READ_TIMING_EVERY_S after the last timing
        assert runner._read_timing is None and len(timer.calls) == 1
        monkeypatch.setattr(runner_module, "READ_TIMING_EVERY_S", 0.0)  # ... passed
        runner._time_read(1, other)
        assert runner._read_timing is not None
        await runner._read_timing
        assert timer.calls == [("s1", 0), ("s1", 1)]

    asyncio.run(scenario())


@pytest.mark.parametrize("answer", [None, OSError("broker gone")])
def test_a_failed_or_empty_timing_keeps_the_read_speed(tmp_path: Path, answer: Exception | None) -> None:
    async def scenario() -> None:
        runner = _runner(tmp_path, _Timer(answer))
        runner._time_read(0, ChainLength(10**9, deltas=20, delta_bytes=MIN_READ_BYTES))
        assert runner._read_timing is not None
        await runner._read_timing
        assert runner.restore_costs == RestoreCosts() and runner._read_timing is None

    asyncio.run(scenario())
