"""(a) Repeated SIGKILL of the worker at seeded random points: tables equal the clean run's.

Kill points mix "after N predictions consumed by this incarnation" (mid-batch, mid-checkpoint)
with "T seconds after start" (during start-up, group join, checkpoint restore). 3 kills in CI, 10
in the soak run.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import orjson
import pytest
from harness import (
    RssSampler,
    Stream,
    Worker,
    assert_same_tables,
    dump_tables,
    kill_after_progress,
    read_topic,
    run_env,
    run_to_idle,
    start_watched,
    wait_until,
    workers,
)
from kafka import KafkaConsumer, TopicPartition

pytestmark = pytest.mark.integration


def _kill_repeatedly(
    stream: Stream, root: Path, clean: dict[str, list[list[str]]], kills: int, seed: int
) -> None:
    rng = random.Random(seed)
    run = f"kill{kills}"
    env = run_env(stream, run, root)
    log, home = root / f"{run}.log", root / run / "home"
    n = stream.counts["predictions"]
    points = []
    with workers() as started, RssSampler() as rss:
        for _ in range(kills):
            worker = start_watched(started, rss, env, log, home=home, idle=None)
            t0 = time.monotonic()
            if rng.random() < 0.3:
                at = rng.uniform(0.3, 6.0)
                points.append(f"{at:.1f}s")
                while time.monotonic() - t0 < at:
                    assert worker.alive(), worker.tail()
                    time.sleep(0.05)
            else:
                records = rng.uniform(0.02, 0.6 / kills) * n
                points.append(f"{records:.0f} predictions")
                # Fallback after 90 s: a kill at whatever point it reached is still a kill.
                while worker.predictions_in() < records and time.monotonic() - t0 < 90:
                    assert worker.alive(), worker.tail()
                    time.sleep(0.05)
            worker.kill()
        run_to_idle(env, log, started, home, rss)
    print(f"kills at {points}; {rss.check()}")
    assert_same_tables(dump_tables(root, run), clean)


def test_three_sigkills_at_random_points(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    # the multivariate tables are compared too: the clean run must have written some
    for table in ("multivariate_drift", "outlier_rate", "estimated_performance"):
        assert clean_tables[table], f"the clean run wrote no {table} rows"
    _kill_repeatedly(fault_stream, fault_root, clean_tables, kills=3, seed=101)


@pytest.mark.soak
def test_ten_sigkills_at_random_points(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    _kill_repeatedly(fault_stream, fault_root, clean_tables, kills=10, seed=202)


def test_sigkill_between_base_snapshots_restores_a_base_and_its_deltas(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    """Both stages checkpoint incrementally: killed after several deltas and no new base, the next
    incarnation restores the base plus every delta (its restore_deltas gauge says how many) and is
    killed in turn; the tables still equal the clean run's."""
    run = "delta_kill"
    # a checkpoint after (nearly) every batch of at most 300 records: a shard's ~8,000 records make
    # dozens of deltas however fast the worker reads them (at 0.3 s and 2,000-record batches, a quick
    # first worker read everything within fewer than four intervals and then made no more)
    env = run_env(fault_stream, run, fault_root,
                  DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S="0.001",
                  DRIFTLINE_WORKER_BATCH_MAX_RECORDS="300",
                  DRIFTLINE_WORKER_CHECKPOINT_DELTAS_PER_BASE="1000",
                  DRIFTLINE_WORKER_CHECKPOINT_DELTA_RATIO="1000")
    log, home = fault_root / f"{run}.log", fault_root / run / "home"
    n = fault_stream.counts["predictions"]
    shards = fault_stream.partitions
    with workers() as started, RssSampler() as rss:
        first = start_watched(started, rss, env, log, home=home, idle=None)
        wait_until(lambda: first.metric_sum("driftline_checkpoints_total", stage="shard") >= 4 * shards,
                   180, "four checkpoints per shard", alive=[first])
        # and a stage-2 delta: more links than stage-2 shards (a shard's base comes first, and its
        # delta only once the broker acknowledged that base, which takes a while on a busy machine)
        wait_until(lambda: first.metric_sum("driftline_checkpoints_total", stage="model")
                   > first.metric_sum("driftline_shards_owned", stage="model") > 0,
                   180, "a stage-2 delta", alive=[first])
        written = {(stage, kind): first.metric_sum("driftline_checkpoint_bytes_total", stage=stage, kind=kind)
                   for stage in ("shard", "model") for kind in ("base", "delta")}
        assert all(written.values()), written  # what the chains cost the broker, bases and deltas apart
        consumed = first.predictions_in()
        first.kill()
        second = start_watched(started, rss, env, log, home=home, idle=None)
        def restored() -> int:  # shards restore one after another
            return sum(1 for name, labels, value in second.metrics()
                       if name == "driftline_stage_restore_bytes" and labels["stage"] == "shard" and value)

        wait_until(lambda: restored() == shards, 180, "every stage-1 shard restored", alive=[second])
        deltas = second.metric_sum("driftline_stage_restore_deltas", stage="shard")
        assert deltas >= 3 * shards, f"restored {deltas:.0f} deltas over {shards} shards"
        # stage 2 checkpoints incrementally too: its shards restore a base and the deltas after it
        wait_until(lambda: second.metric_sum("driftline_stage_restore_deltas", stage="model") > 0, 180,
                   "a stage-2 shard restored with deltas", alive=[second])
        estimates = [value for name, labels, value in second.metrics()
                     if name == "driftline_stage_restore_estimate_seconds" and labels["stage"] == "shard"]
        assert len(estimates) == shards and all(0 < e < 60 for e in estimates), estimates  # under the target
        kill_after_progress(second, min(0.1 * n, (n - consumed) / 2))  # it re-reads at least n - consumed
        run_to_idle(env, log, started, home, rss)
    print(f"restored {deltas:.0f} deltas; {rss.check()}")
    assert_same_tables(dump_tables(fault_root, run), clean_tables)


def _any_trigger(stream: Stream, topic: str, wait_ms: int = 200) -> bool:
    """Whether a trigger is on ``topic`` yet (which the worker may not have created yet)."""
    consumer = KafkaConsumer(
        bootstrap_servers=stream.bootstrap, enable_auto_commit=False, consumer_timeout_ms=wait_ms
    )
    try:
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        return any(True for _ in consumer)
    finally:
        consumer.close()


def test_sigkill_right_after_a_trigger_still_publishes_it_once(
    fault_stream: Stream, fault_root: Path, clean_tables: dict[str, list[list[str]]]
) -> None:
    """Killed right after firing, with checkpoints too rare to have recorded it, the restarted
    worker derives the same trigger again; it must not appear twice on the trigger topic."""
    assert clean_tables["retrain_triggers"], "the recorded stream's drift should trigger a retrain"
    run = "trigger_kill"
    env = run_env(fault_stream, run, fault_root)
    log, home = fault_root / f"{run}.log", fault_root / run / "home"
    with workers() as started, RssSampler() as rss:
        rare = Worker({**env, "DRIFTLINE_WORKER_CHECKPOINT_INTERVAL_S": "60"}, log, home=home, idle=None)
        started.append(rare)
        # Kill once the trigger is on the topic (the stage's counter moves before it is produced).
        topic = env["DRIFTLINE_TOPICS_RETRAIN_TRIGGERS"]
        wait_until(
            lambda: _any_trigger(fault_stream, topic),
            180,
            "a trigger on the topic",
            alive=[rare],
        )
        rare.kill()
        run_to_idle(env, log, started, home, rss)
    assert_same_tables(dump_tables(fault_root, run), clean_tables)
    published = [orjson.loads(m.value)["trigger_id"] for m in read_topic(fault_stream.bootstrap, topic, 1)]
    assert len(published) == len(set(published)) == len(clean_tables["retrain_triggers"]), published
