"""SIGKILL of a worker whose joins hold pending predictions on disk (past join.memory_budget_mb).

The budget is small enough (20 KB per shard) that a shard spills pending payloads to its pending
store within seconds, if it reads predictions before their labels; the worker is killed mid-run,
restarts (its stores start empty: a base checkpoint carries every record whole) and the tables
equal the clean, all-in-memory run's.

Whether a first worker spills at all depends on the order aiokafka hands it the backlog: each
fetch request lists the partitions shuffled (``random.shuffle`` in its fetcher) and ``getmany``
drains them in that order, so a shard may get its whole labels partition (one fetch) before its
predictions; every prediction then joins a held label on arrival, none is ever pending and nothing
spills. That happened to all three shards of 1 in 7 first workers here, so a run whose first worker
caught up without a segment is given up (killed) and the test starts another, up to
``ATTEMPTS`` times: the kill below always has payloads on disk.
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

ATTEMPTS = 6
"""Runs tried for a first worker that spills (one in seven did not here: see above)."""


def _segments(spill_dir: Path) -> int:
    return sum(1 for _ in spill_dir.glob("driftline-join-*/*.seg"))


def _caught_up(worker: Worker, predictions: int) -> bool:
    """The worker's shard stage read every prediction and has no lag left (nothing more to join)."""
    if worker.predictions_in() < predictions:
        return False
    lags = [v for n, lab, v in worker.metrics()
            if n == "driftline_consumer_lag" and lab.get("stage") == "shard"]
    return bool(lags) and not any(lags)


def test_sigkill_with_pending_predictions_spilled_to_disk(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    n = fault_stream.counts["predictions"]
    with workers() as started, RssSampler() as rss:
        for attempt in range(ATTEMPTS):
            run = f"spill_kill{attempt}"
            spill_dir = fault_root / run / "spill"
            env = run_env(fault_stream, run, fault_root,
                          DRIFTLINE_JOIN_MEMORY_BUDGET_MB="0.02",
                          DRIFTLINE_JOIN_SPILL_DIR=str(spill_dir),
                          DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S="0.5")
            log, home = fault_root / f"{run}.log", fault_root / run / "home"
            first = start_watched(started, rss, env, log, home=home, idle=None)
            wait_until(lambda: _segments(spill_dir) > 0 or _caught_up(first, n), 300,  # noqa: B023
                       "pending payloads in a segment file, or the backlog read", alive=[first])
            if _segments(spill_dir) > 0:
                break
            first.kill()  # labels came before predictions in every shard: nothing was pending
        else:
            pytest.fail(f"no first worker of {ATTEMPTS} spilled a pending payload")
        kill_after_progress(first, 0.3 * n)
        second = start_watched(started, rss, env, log, home=home, idle=None)
        kill_after_progress(second, 0.1 * n)
        run_to_idle(env, log, started, home, rss)
    print(rss.check())
    assert_same_tables(dump_tables(fault_root, run), clean_tables)
