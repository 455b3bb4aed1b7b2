"""SIGKILL of a worker that keeps local copies of its base checkpoints (``worker.state_dir``).

The killed worker's restart finds each stage-1 shard's base in its copy, reads only the deltas
after it from the broker (the restore gauges say so), is killed in turn, and the tables still equal
the clean run's.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import (
    RssSampler,
    Stream,
    Worker,
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


def _shard_figures(worker: Worker, name: str) -> dict[str, float]:
    return {labels["shard"]: value for metric, labels, value in worker.metrics()
            if metric == f"driftline_stage_{name}" and labels["stage"] == "shard"}


def test_sigkill_restores_each_base_from_its_local_copy(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    run = "local_base_kill"
    state_dir = fault_root / run / "state"
    # One base per shard (at the first checkpoint), then deltas only: the copy stays the chain's base.
    env = run_env(fault_stream, run, fault_root,
                  DRIFTLINE_WORKER_STATE_DIR=str(state_dir),
                  DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S="0.3",
                  DRIFTLINE_WORKER_CHECKPOINT_DELTAS_PER_BASE="1000",
                  DRIFTLINE_WORKER_CHECKPOINT_DELTA_RATIO="1000",
                  DRIFTLINE_WORKER_RESTORE_TARGET_S="0")
    log, home = fault_root / f"{run}.log", fault_root / run / "home"
    n = fault_stream.counts["predictions"]
    shards = fault_stream.partitions
    with workers() as started, RssSampler() as rss:
        first = start_watched(started, rss, env, log, home=home, idle=None)
        wait_until(lambda: first.metric_sum("driftline_checkpoints_total", stage="shard") >= 4 * shards,
                   180, "four checkpoints per shard", alive=[first])
        assert len(list(state_dir.glob("*.shard-*.base"))) == shards
        consumed = first.predictions_in()
        first.kill()

        second = start_watched(started, rss, env, log, home=home, idle=None)
        wait_until(lambda: len(_shard_figures(second, "restore_local_bytes")) == shards, 180,
                   "every stage-1 shard restored", alive=[second])
        local = _shard_figures(second, "restore_local_bytes")
        broker = _shard_figures(second, "restore_broker_bytes")
        assert all(value > 0 for value in local.values()), f"bases from the broker: {local}"
        deltas = second.metric_sum("driftline_stage_restore_deltas", stage="shard")
        assert deltas >= 3 * shards, f"restored {deltas:.0f} deltas over {shards} shards"
        assert second.metric_sum("driftline_checkpoint_local_copy_failures_total") == 0
        kill_after_progress(second, min(0.1 * n, (n - consumed) / 2))
        run_to_idle(env, log, started, home, rss)
    print(f"bases read locally {local}, from the broker {broker}; {rss.check()}")
    assert_same_tables(dump_tables(fault_root, run), clean_tables)
