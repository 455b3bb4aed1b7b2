"""A shard looks through its open windows only once the earliest of them ends (its end kept as
windows open and close, ``ShardProcessor._first_end``): on the same logs, in the same batches and
across a restore, it emits what a shard that looks through them at every batch emits."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from harness import load_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.operators.validate import RawRecord
from driftline.pipeline.records import NO_TIME

_columnar = load_module(Path(__file__).with_name("test_shard_columnar.py"), "shard_columnar_closes")


class Looking(_columnar.Run):  # type: ignore[name-defined,misc]
    """Every shard looks through all its open windows at every batch (the earliest end forgotten)."""

    def feed(self, records: Any) -> None:
        for shard in self.pipeline.shards:
            shard._first_end = NO_TIME
        super().feed(records)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(log=_columnar.logs(), cuts=st.lists(st.integers(0, 80), max_size=6), restore=st.integers(-1, 6))
def test_windows_close_as_when_every_open_window_is_looked_at(
    log: tuple[list[RawRecord], int], cuts: list[int], restore: int
) -> None:
    records, end_ms = log
    settings_ = _columnar._settings()
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})
    batches = [records[a:b] for a, b in itertools.pairwise(bounds)]
    runs = Looking(settings_, True), _columnar.Run(settings_, True)
    _columnar.feed_runs(runs, batches, restore, end_ms)
    _columnar.assert_same(*runs)
