"""A shard waiting for its base turn (one base in flight per runner, issue 19) that is no longer
due (its base's local copy landed, or the restore costs were measured lower since) stops saying it
waits: ``base_waiting`` back to 0, and it keeps no place ahead of shards due after it. One still due
keeps its place at a checkpoint where it has nothing to write."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from driftline.config import Settings
from driftline.pipeline.stage import StageFactory
from driftline.pipeline.state import BaseCopy
from driftline.streams import runner as runner_module
from driftline.streams.checkpoint import CheckpointStore
from driftline.streams.runner import ChainLength, ShardState, StageRunner


class _Shard:
    def track_changes(self) -> None:
        pass

    def changed_records(self) -> int:
        return 1

    def checkpoint(self, base: bool) -> bytes:
        return b"delta"

    def base_copy(self) -> BaseCopy:
        raise AssertionError("another shard's base is in flight: no base starts here")


class _Store:
    async def save_link(self, stage: str, shard: int, blob: bytes, offsets: Any, *, base: bool,
                        parent: str | None, **blocking: Any) -> str:
        assert not base
        return "delta"

    def has_local_base(self, stage: str, shard: int, checkpoint_id: str | None) -> bool:
        return False


def test_a_waiting_shard_no_longer_due_stops_waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    due = [True]
    monkeypatch.setattr(ChainLength, "base_due", lambda self, *args, **kwargs: due[0])
    monkeypatch.setattr(StageRunner, "_time_read", lambda self, shard, chain: None)
    monkeypatch.setattr(runner_module, "release_free_memory", lambda: True)
    runner = StageRunner(Settings(home=tmp_path), "s1", "g", ["p"], cast(StageFactory, None),
                         producer=cast(Any, None), checkpoints=cast(CheckpointStore, _Store()))
    runner.shards[0] = ShardState(cast(Any, _Shard()), {}, "base", chain=ChainLength(base_bytes=10**6))
    runner.shards[1] = ShardState(cast(Any, _Shard()), {}, "base", chain=ChainLength(base_bytes=10**6))

    async def checkpoint() -> None:
        runner.shards[1].base_in_flight = asyncio.get_running_loop().create_future()  # shard 1's base
        runner.shards[0].dirty = True
        await runner._checkpoint([0], beside_batches=True)
        runner.shards[1].base_in_flight = None

    asyncio.run(checkpoint())
    state = runner.shards[0]
    assert state.restore_figures["base_waiting"] == 1.0 and state.base_waiting_since is not None
    due[0] = False
    asyncio.run(checkpoint())
    assert state.restore_figures["base_waiting"] == 0.0
    assert state.base_waiting_since is None and state.base_waited_deltas == 0
    assert state.restore_figures["bases_deferred"] == 1.0  # a count since the start: kept


def test_no_base_starts_while_shards_are_being_rebuilt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart the shards rebuilt first take batches while the others are rebuilt: a base
    copy beside the rebuilds adds its groups to the restart's peak (10M pending: ~1.9 GB), so a due
    base waits (writes a delta, says it waits) until every shard is adopted, then goes first."""
    monkeypatch.setattr(ChainLength, "base_due", lambda self, *args, **kwargs: True)
    monkeypatch.setattr(StageRunner, "_time_read", lambda self, shard, chain: None)
    monkeypatch.setattr(runner_module, "release_free_memory", lambda: True)
    runner = StageRunner(Settings(home=tmp_path), "s1", "g", ["p"], cast(StageFactory, None),
                         producer=cast(Any, None), checkpoints=cast(CheckpointStore, _Store()))
    runner.shards[0] = ShardState(cast(Any, _Shard()), {}, "base", chain=ChainLength(base_bytes=10**6))
    runner._restoring = {1}  # shard 1 still being rebuilt (_restore_rest)
    runner.shards[0].dirty = True
    asyncio.run(runner._checkpoint([0], beside_batches=True))  # _Shard.base_copy raises: a delta only
    state = runner.shards[0]
    assert state.restore_figures["base_waiting"] == 1.0 and state.base_waited_deltas == 1
    assert runner._base_turn({0: 1}, [0]) is None
    runner._restoring = set()  # every shard adopted
    assert runner._base_turn({0: 1}, [0]) == 0


def test_a_sparse_shard_keeps_its_turn_without_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shard 1, sparse, is due first and waits; shard 0, with changes at every checkpoint, is due
    after it. When the base in flight ends, shard 1 has nothing to write at that checkpoint: its
    base starts still (it ends the long chain), and shard 0 writes a delta and waits. It used to
    be passed over at each checkpoint where it had no changes."""
    monkeypatch.setattr(ChainLength, "base_due", lambda self, *args, **kwargs: True)
    monkeypatch.setattr(StageRunner, "_time_read", lambda self, shard, chain: None)
    monkeypatch.setattr(runner_module, "release_free_memory", lambda: True)
    started: list[int] = []

    class _Based(_Shard):
        def __init__(self, shard: int) -> None:
            self.shard = shard

        def base_copy(self) -> BaseCopy:
            started.append(self.shard)
            return BaseCopy({}, release=lambda: None)

    async def write_base(self: StageRunner, shard: int, *args: Any) -> None:
        pass

    monkeypatch.setattr(StageRunner, "_write_base", write_base)
    runner = StageRunner(Settings(home=tmp_path), "s1", "g", ["p"], cast(StageFactory, None),
                         producer=cast(Any, None), checkpoints=cast(CheckpointStore, _Store()))
    for shard in (0, 1, 2):
        runner.shards[shard] = ShardState(cast(Any, _Based(shard)), {}, "base",
                                          chain=ChainLength(base_bytes=10**6))

    async def checkpoints() -> None:
        runner.shards[2].base_in_flight = asyncio.get_running_loop().create_future()  # shard 2's base
        for dirty in (1, 0):  # shard 1 due first (waits since then), then shard 0
            runner.shards[dirty].dirty = True
            await runner._checkpoint([0, 1, 2], beside_batches=True)
        runner.shards[2].base_in_flight = None  # acknowledged
        runner.shards[0].dirty = True  # shard 1 has nothing to write at this checkpoint
        await runner._checkpoint([0, 1, 2], beside_batches=True)

    asyncio.run(checkpoints())
    assert started == [1]
    sparse, busy = runner.shards[1], runner.shards[0]
    assert sparse.base_waiting_since is None and sparse.restore_figures["base_waiting"] == 0
    assert busy.base_waiting_since is not None and busy.base_waited_deltas == 2
