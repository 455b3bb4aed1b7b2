"""A write given up on stop() while shards are still being rebuilt ends the rebuild quietly.

``StageRunner._restore_rest`` adopts each rebuilt shard under the lock, which feeds it the
retained broadcast records and produces their outputs; during a produce outage after stop() that
write is given up (``_Stopped``, 6791dcf). It used to be caught as any failure: "restoring shards
failed" with a traceback and a listener error the loop raises as StageRunnerError, although the
runner was only stopping as after a kill. No broker is needed: the give-up is raised where the
adoption's write would raise it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from driftline.config import Settings
from driftline.streams.checkpoint import CheckpointStore
from driftline.streams.runner import StageRunner


class _Chain:
    closed = 0
    offsets: dict[tuple[str, int], int] = {}

    def close(self) -> None:
        _Chain.closed += 1


def test_a_given_up_adoption_ends_the_rebuild_quietly(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:9"})  # type: ignore[arg-type]
    runner = StageRunner(settings, "shard", "g", [settings.topics.predictions],
                         factory=None,  # type: ignore[arg-type]
                         producer=None,  # type: ignore[arg-type]
                         checkpoints=CheckpointStore.__new__(CheckpointStore))
    runner._restore_closing = lambda shard, saved, offsets: object()  # type: ignore[method-assign]

    async def give_up(consumer: Any, shard: int, state: Any, fresh: bool) -> None:
        runner.stop()
        runner._give_up_if_stopping()

    runner._install = give_up  # type: ignore[method-assign]
    runner._restoring = {1, 2}
    _Chain.closed = 0
    with caplog.at_level(logging.WARNING, logger="driftline.streams.runner"):
        asyncio.run(runner._restore_rest(None, [(1, _Chain()), (2, _Chain())]))  # type: ignore[arg-type,list-item]
    assert runner._listener_error is None
    assert runner._given_up and runner._restoring == set()
    assert _Chain.closed == 1  # the chain not rebuilt is closed; the first went to its rebuild
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("left on stop" in r.getMessage() for r in caplog.records)
