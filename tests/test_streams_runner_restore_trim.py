"""A restart trims glibc's heap after each shard's rebuild, before the next one (issue 19): what a
rebuild frees (its deltas' bytes, their unpickled records, whole groups stubbed) stayed in the
heap under every later rebuild, ~40 MB a shard at 2M pending, and made the restart's peak."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from driftline.config import Settings
from driftline.pipeline.stage import StageFactory
from driftline.streams import runner as runner_module
from driftline.streams.checkpoint import Checkpoint, CheckpointStore
from driftline.streams.runner import StageRunner


class _Factory:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def restore(self, shard: int, blob: bytes) -> object:
        self.events.append(f"restore {shard}")
        return object()


def test_each_rebuild_trims_the_heap_once_it_is_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(runner_module, "release_free_memory", lambda: events.append("trim") or True)
    runner = StageRunner(Settings(home=tmp_path), "s2", "g", ["p"], cast(StageFactory, _Factory(events)),
                         producer=cast(Any, None), checkpoints=cast(CheckpointStore, None))
    for shard in (2, 0):
        runner._restore(shard, Checkpoint(f"c{shard}", b"blob", {}), {})
    assert events == ["restore 2", "trim", "restore 0", "trim"]
