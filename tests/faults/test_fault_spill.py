"""SIGKILL of a worker whose joins hold pending predictions on disk (past join.memory_budget_mb).

The budget is small enough (20 KB per shard) that every shard spills pending payloads to its
pending store within seconds; the worker is killed mid-run, restarts (its stores start empty: a
base checkpoint carries every record whole) and the tables equal the clean, all-in-memory run's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import (
    RssSampler,
    Stream,
    assert_same_tables,
    dump_tables,
    kill_after_progress,
    run_env,
    run_to_idle,
    start_watched,
    wait_until,
    workers,
)

pytestmark = pytest.mark.integration


def _segments(spill_dir: Path) -> int:
    return sum(1 for _ in spill_dir.glob("driftline-join-*/*.seg"))


def test_sigkill_with_pending_predictions_spilled_to_disk(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    run = "spill_kill"
    spill_dir = fault_root / run / "spill"
    env = run_env(fault_stream, run, fault_root,
                  DRIFTLINE_JOIN_MEMORY_BUDGET_MB="0.02",
                  DRIFTLINE_JOIN_SPILL_DIR=str(spill_dir),
                  DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S="0.5")
    log, home = fault_root / f"{run}.log", fault_root / run / "home"
    n = fault_stream.counts["predictions"]
    with workers() as started, RssSampler() as rss:
        first = start_watched(started, rss, env, log, home=home, idle=None)
        wait_until(lambda: _segments(spill_dir) > 0, 300, "pending payloads in a segment file", alive=[first])
        kill_after_progress(first, 0.3 * n)
        second = start_watched(started, rss, env, log, home=home, idle=None)
        kill_after_progress(second, 0.1 * n)
        run_to_idle(env, log, started, home, rss)
    print(rss.check())
    assert_same_tables(dump_tables(fault_root, run), clean_tables)
