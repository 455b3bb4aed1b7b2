"""A live worker trims glibc's heap after a large delta, not only after a base (issue 19): the delta
after a base carries every record added while the base was written (tens of MB a shard at
millions pending), and what building it freed stayed resident until the next base's trim."""

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
    """An incremental processor whose deltas are ``size`` bytes (never due a base here)."""

    def __init__(self) -> None:
        self.size = 0

    def track_changes(self) -> None:
        pass

    def changed_records(self) -> int:
        return 1

    def checkpoint(self, base: bool) -> bytes:
        return bytes(self.size)

    def base_copy(self) -> BaseCopy:
        raise AssertionError("no base is due in this test")


class _Store:
    async def save_link(self, stage: str, shard: int, blob: bytes, offsets: Any, *, base: bool,
                        parent: str | None, **blocking: Any) -> str:
        assert not base
        return f"link-{len(blob)}"

    def has_local_base(self, stage: str, shard: int, checkpoint_id: str | None) -> bool:
        return False


def test_a_delta_over_the_bound_trims_the_heap_a_small_one_does_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[bool] = []
    monkeypatch.setattr(runner_module, "release_free_memory", lambda: trims.append(True) or True)
    monkeypatch.setattr(runner_module, "TRIM_AFTER_DELTA_BYTES", 1_000)
    monkeypatch.setattr(StageRunner, "_time_read", lambda self, shard, chain: None)
    runner = StageRunner(Settings(home=tmp_path), "s1", "g", ["p"], cast(StageFactory, None),
                         producer=cast(Any, None), checkpoints=cast(CheckpointStore, _Store()))
    shard = _Shard()
    runner.shards[0] = ShardState(cast(Any, shard), {}, "base", chain=ChainLength(base_bytes=10**6))

    async def delta(size: int) -> None:
        shard.size = size
        runner.shards[0].dirty = True
        await runner._checkpoint([0], beside_batches=True)
        assert runner.shards[0].checkpoint_id == f"link-{size}"  # a delta was written

    asyncio.run(delta(1_000))
    assert trims == []
    asyncio.run(delta(1_001))
    assert trims == [True]
